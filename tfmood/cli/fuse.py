"""`tfmood fuse`: late fusion of several models' score matrices by their (weighted) mean."""

import argparse
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "fuse",
        help="late fusion: (weighted) mean of several prediction matrices",
        description="Average several models' score matrices (NPY, tracks x tags) into one.",
    )
    parser.add_argument("predictions", nargs="+", type=Path, help="NPY score matrices")
    parser.add_argument("-o", "--output", required=True, type=Path, help="fused NPY file")
    parser.add_argument(
        "--weights",
        nargs="+",
        type=float,
        metavar="W",
        help="one non-negative weight per input (normalised to sum 1; default: equal)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tfmood import metrics

    matrices = [metrics.load_matrix(path) for path in args.predictions]
    fused = metrics.fuse_scores(
        matrices, weights=args.weights, names=[str(path) for path in args.predictions]
    )
    metrics.save_matrix(args.output, fused)
    print(f"fused {len(matrices)} score matrices {fused.shape} -> {args.output}")
    return 0
