"""`tfmood test`: predictions of a model on a split, in TSV order, and their evaluation."""


def register(subparsers):
    parser = subparsers.add_parser(
        "test", help="predict a test split and evaluate it (MediaEval metrics)"
    )
    parser.add_argument("--model", required=True, help="a saved .keras model")
    parser.add_argument("--tsv", required=True, help="the split file (MTG-Jamendo format)")
    parser.add_argument("--root", required=True,
                        help="melspec root (npy), audio root (audio) or shard dir (tfrecord)")
    parser.add_argument("--source", default="npy", choices=("npy", "audio", "tfrecord"))
    parser.add_argument("-o", "--out", required=True, help="output folder")
    parser.add_argument("--n-frames", type=int, default=1400)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--skip-bad", action="store_true", help="skip (and list) bad files")
    parser.add_argument("--all-tags", action="store_true",
                        help="fail on tags without positives instead of leaving them out")
    parser.set_defaults(func=run)


def run(args) -> int:
    from tfmood.inference import test_model
    from tfmood.metrics import format_summary

    result = test_model(args.model, args.tsv, args.root, args.out, source=args.source,
                        n_frames=args.n_frames, batch_size=args.batch_size,
                        skip_bad=args.skip_bad, all_tags=args.all_tags)
    print(format_summary(result, per_tag=False))
    print(f"predictions, ground truth and report written to {args.out}")
    return 0
