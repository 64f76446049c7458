"""`tfmood evaluate`: MediaEval 2020 metrics of a prediction matrix against a ground truth."""

import argparse
import json
import sys
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="MediaEval metrics (ROC-AUC, PR-AUC, thresholds, P/R/F) of a prediction matrix",
        description=(
            "Compute the MediaEval 2020 Emotion and Theme metrics: ROC-AUC and PR-AUC (macro, "
            "micro, per tag), per-tag thresholds that maximise the F-score, and the precision, "
            "recall and F-score of the decisions they give."
        ),
    )
    parser.add_argument(
        "--groundtruth", required=True, type=Path, help="NPY file, binary (tracks x tags)"
    )
    parser.add_argument(
        "--predictions", required=True, type=Path, help="NPY file, scores in [0, 1] (tracks x tags)"
    )
    parser.add_argument(
        "--tags",
        type=Path,
        help="text file, one tag per line (prefix 'mood/theme---' optional); default: the 56 "
        "mood/theme tags for 56 columns, else tag_0, tag_1, ...",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the summary metrics as one JSON object"
    )
    parser.add_argument(
        "-o",
        "--output-dir",
        type=Path,
        help="write a report here: metrics.json, results.tsv, per_tag.tsv, thresholds.tsv, "
        "decisions.npy, per_tag_auc.png, curves.png",
    )
    parser.add_argument(
        "--strict-decisions",
        action="store_true",
        help="decide score > threshold, as MediaEval's calculate_decisions.py does "
        "(default: score >= threshold, the point at which the threshold was chosen)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tfmood import metrics

    groundtruth = metrics.load_matrix(args.groundtruth)
    predictions = metrics.load_matrix(args.predictions)
    tags = _tag_names(args, groundtruth)
    groundtruth, predictions = metrics.validate_inputs(
        groundtruth,
        predictions,
        groundtruth_name=str(args.groundtruth),
        predictions_name=str(args.predictions),
        tags=tags,
    )
    metrics.check_tags_defined(groundtruth, tags, groundtruth_name=str(args.groundtruth))
    result = metrics.evaluate(
        groundtruth, predictions, tags=tags, strict_decisions=args.strict_decisions
    )
    print(json.dumps(result.summary) if args.json else metrics.format_summary(result))
    if args.output_dir is not None:
        metrics.write_report(result, args.output_dir)
        metrics.plot_curves(groundtruth, predictions, args.output_dir / "curves.png", tags=tags)
        # stderr, so that --json output stays one JSON object on stdout
        print(f"report written to {args.output_dir}", file=sys.stderr)
    return 0


def _tag_names(args: argparse.Namespace, groundtruth) -> list:
    """Names from --tags, else the defaults for the ground truth's column count."""
    from tfmood import metrics

    n_columns = groundtruth.shape[1] if groundtruth.ndim == 2 else None
    if args.tags is None:
        return metrics.default_tags(n_columns) if n_columns is not None else None
    tags = metrics.load_tags(args.tags)
    if n_columns is not None and len(tags) != n_columns:
        raise ValueError(
            f"{args.tags}: {len(tags)} tags, but {args.groundtruth} has {n_columns} columns"
        )
    return tags
