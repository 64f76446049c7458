"""`tfmood synth`: write the synthetic mood corpus (audio + MTG-Jamendo split TSVs + synth.json)."""

import os


def register(subparsers):
    parser = subparsers.add_parser(
        "synth",
        help="write the synthetic mood corpus in the MTG-Jamendo layout (the default data set)",
    )
    parser.add_argument("--out", required=True, help="corpus root directory (created if missing)")
    parser.add_argument("--tracks", type=int, default=600, help="number of tracks (default 600)")
    parser.add_argument(
        "--seconds", type=float, default=30.0, help="duration of every track (default 30)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--sample-rate", type=int, default=12000, help="WAV sample rate in Hz (default 12000)"
    )
    parser.add_argument(
        "--label-noise",
        type=float,
        default=0.05,
        help="probability that a rule tag is replaced by a random tag (default 0.05)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="processes rendering audio; the output does not depend on it (default: up to 2)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args) -> int:
    from tfmood.data.synth import generate_corpus

    if args.sample_rate < 1000:
        raise ValueError(f"--sample-rate must be at least 1000 Hz, got {args.sample_rate}")
    if args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}")
    info = generate_corpus(
        args.out,
        n_tracks=args.tracks,
        seconds=args.seconds,
        seed=args.seed,
        sample_rate=args.sample_rate,
        progress=not args.quiet,
        label_noise=args.label_noise,
        workers=args.workers,
    )
    counts = ", ".join(f"{split} {count}" for split, count in info.split_counts.items())
    print(f"{info.out_dir}: {info.n_tracks} tracks ({counts}), {len(info.tags)} tags in use")
    for split, path in info.split_paths.items():
        print(f"  {split}: {path}")
    print(f"  audio: {info.audio_dir}")
    print(f"  parameters and tags: {info.metadata_path}")
    if info.removed_tags:
        print(f"  tags without a positive in every split, removed: {', '.join(info.removed_tags)}")
    if info.redrawn_tracks:
        print(f"  tracks redrawn to carry a tag in use: {info.redrawn_tracks}")
    return 0
