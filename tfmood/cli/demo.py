"""`tfmood demo`: the paper's experiment end to end on the synthetic corpus (resumable)."""


def register(subparsers):
    from tfmood.demo import DemoConfig
    from tfmood.models.vggish import parse_width

    defaults = DemoConfig()
    parser = subparsers.add_parser(
        "demo", help="generate a synthetic corpus, train the six presets, evaluate, fuse, export"
    )
    parser.add_argument("--out", default=defaults.out_dir, help="output folder (resumes there)")
    parser.add_argument("--tracks", type=int, default=defaults.tracks)
    parser.add_argument("--seconds", type=float, default=defaults.seconds)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--presets", nargs="+", default=list(defaults.presets))
    parser.add_argument("--n-frames", type=int, default=defaults.n_frames)
    parser.add_argument("--width", type=parse_width, default=defaults.width,
                        help="channel multiplier: one number or one per block (a,b,c,d,e)")
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--patience", type=int, default=defaults.patience)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument("--lr-schedule", choices=("constant", "cosine"),
                        default=defaults.lr_schedule)
    parser.add_argument("--no-export", action="store_true", help="skip the TFLite export")
    parser.set_defaults(func=run)


def run(args) -> int:
    from tfmood.demo import DemoConfig, run_demo

    config = DemoConfig(
        out_dir=args.out, tracks=args.tracks, seconds=args.seconds, seed=args.seed,
        presets=tuple(args.presets), n_frames=args.n_frames, width=args.width,
        epochs=args.epochs, patience=args.patience, batch_size=args.batch_size,
        learning_rate=args.learning_rate, lr_schedule=args.lr_schedule, export=not args.no_export,
    )
    run_demo(config)
    return 0
