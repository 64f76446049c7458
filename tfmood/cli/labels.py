"""`tfmood labels`: the boolean (tracks x 56) mood/theme matrix of a split TSV, plus its track ids."""


def register(subparsers):
    parser = subparsers.add_parser(
        "labels", help="write the (tracks x 56) mood/theme label matrix of a split TSV"
    )
    parser.add_argument("--tsv", required=True, help="an MTG-Jamendo split file")
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        help="the .npy to write; the track ids go beside it in <name>.track_ids.txt",
    )
    parser.set_defaults(func=run)


def run(args) -> int:
    import numpy as np

    from tfmood.data.metadata import write_labels

    labels_path, ids_path = write_labels(args.tsv, args.output)
    labels = np.load(labels_path, allow_pickle=False)
    print(
        f"{labels_path}: {labels.shape[0]} tracks x {labels.shape[1]} tags, "
        f"{int(labels.sum())} positives; track ids in {ids_path}"
    )
    return 0
