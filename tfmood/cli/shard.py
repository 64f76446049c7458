"""`tfmood shard`: write the melspecs of a split as TFRecord shards (resumable), with an index."""


def register(subparsers):
    parser = subparsers.add_parser(
        "shard", help="write the melspecs of a split file as TFRecord shards with an index"
    )
    parser.add_argument("--tsv", required=True, help="an MTG-Jamendo split file")
    parser.add_argument(
        "--root", required=True, help="melspec root (--source npy) or audio root (--source audio)"
    )
    parser.add_argument("--out", required=True, help="shard directory (local or gs://)")
    parser.add_argument("--source", choices=("npy", "audio"), default="npy")
    parser.add_argument("--shard-size", type=int, default=256, help="tracks per shard")
    parser.add_argument(
        "--max-frames",
        type=int,
        default=None,
        help="keep only the first N frames of each track (default: all)",
    )
    parser.add_argument("--n-mels", type=int, default=96)
    parser.add_argument(
        "--skip-bad",
        action="store_true",
        help="leave bad files out and list them in OUT/skipped.tsv instead of failing",
    )
    parser.add_argument("--threads", type=int, default=8, help="files loaded in parallel")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args) -> int:
    from tfmood.data.shards import write_shards

    index = write_shards(
        args.tsv,
        args.root,
        args.out,
        source=args.source,
        shard_size=args.shard_size,
        max_frames=args.max_frames,
        n_mels=args.n_mels,
        skip_bad=args.skip_bad,
        io_threads=args.threads,
        progress=not args.no_progress,
    )
    skipped = len(index["skipped"])
    print(
        f"{args.out}: {index['total']} tracks in {len(index['shards'])} shards"
        + (f", {skipped} skipped (list in skipped.tsv)" if args.skip_bad else "")
    )
    return 0
