"""`tfmood export`: a verified TFLite model (phone targets) or a microcontroller build of one.

    tfmood export MODEL.keras --target float32|float16|dynamic|int8 -o OUT.tflite
        [--calibration DIR-or-TSV-or-MUSIC-FOLDER] [--test ...] [--hop FRAMES] [--audio-in]
        [--logits] [--json]

The model is rewritten for inference (`tfmood.deploy.fold`), converted with builtin ops only, checked
against the Keras model on the test split and written only when every check passes; otherwise
the command prints the failed checks and exits with status 1. `--target micro` hands over to
`tfmood.deploy.tflm.export_micro` (TensorFlow Lite Micro: int8 model and C array).
"""

import argparse
import contextlib
import json
import sys

from tfmood.deploy.convert import MICRO_TARGET
from tfmood.deploy.convert import TARGETS as PHONE_TARGETS

TARGETS = PHONE_TARGETS + (MICRO_TARGET,)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "export",
        help="convert a .keras model to TFLite (float32, float16, dynamic, int8, micro), verified",
        description=(
            "Convert a trained model to TensorFlow Lite with builtin ops only, verify it against "
            "the Keras model (float32: max |diff| <= 1e-4, float16: <= 1e-2, dynamic and int8: "
            "macro ROC-AUC within 0.01 on a labelled corpus, or on a music folder mean |dp| <= "
            "0.01, per-tag Spearman median >= 0.98, top-5 agreement >= 0.9) and write it only "
            "if it passes."
        ),
    )
    parser.add_argument("model", help="a saved .keras model")
    parser.add_argument("--target", required=True, choices=TARGETS, help="what to build")
    parser.add_argument("-o", "--output", required=True, help="the .tflite file to write")
    parser.add_argument(
        "--calibration",
        help="corpus directory (its validation split calibrates int8, its test split verifies) "
        "or a split TSV (its -test.tsv sibling verifies); default: a synthetic corpus made once. "
        "Or a folder of unlabelled music (WAV/MP3/FLAC/OGG, no split TSVs): its tracks are cut "
        "into windows, alternate tracks (sorted by name) calibrate and verify, and the export "
        "is judged against the Keras model without labels (mean/max |dp|, per-tag Spearman "
        "median, top-5 agreement)",
    )
    parser.add_argument(
        "--test",
        help="split TSV to verify on (default: see --calibration); with a music-folder "
        "--calibration, a music folder whose windows all verify",
    )
    parser.add_argument(
        "--hop",
        type=int,
        help="window step in mel frames for music folders (default n_frames // 8: 175)",
    )
    parser.add_argument("--root", help="audio root of the splits (default: <TSV folder>/audio)")
    parser.add_argument(
        "--n-frames",
        type=int,
        help="input frames (default: the model's, 1400 for a model of any length)",
    )
    parser.add_argument(
        "--audio-in",
        action="store_true",
        help="export the audio-in model: 12 kHz mono waveform of (n_frames - 1) * 256 samples "
        "in, LogMel inside (float32 and float16 targets)",
    )
    parser.add_argument(
        "--logits",
        action="store_true",
        help="output tag logits instead of sigmoid scores (the app applies the sigmoid); for "
        "int8 they get their own scale instead of the sigmoid's fixed 1/256 steps",
    )
    parser.add_argument("--limit", type=int, default=200, help="most examples per split")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be positive, got {args.limit}")
    if args.target == "micro":
        return _run_micro(args)
    from tfmood.deploy.export import export_model

    # The converter prints its SavedModel notes to stdout; stdout is kept for the report.
    with contextlib.redirect_stdout(sys.stderr):
        report = export_model(
            args.model,
            args.target,
            args.output,
            calibration=args.calibration,
            n_frames=args.n_frames,
            audio_in=args.audio_in,
            test=args.test,
            root=args.root,
            limit=args.limit,
            logits=args.logits,
            hop_frames=args.hop,
        )
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0 if report["passed"] else 1


def _run_micro(args: argparse.Namespace) -> int:
    """Hand over to `tfmood.deploy.tflm.export_micro` (same data options)."""
    import importlib.util

    if importlib.util.find_spec("tflite_micro") is None:
        raise ValueError(
            "--target micro runs the model in TensorFlow Lite Micro, which is not installed "
            '(pip install tflite-micro, or pip install -e ".[dev]")'
        )
    if args.audio_in or args.logits:
        raise ValueError(
            "--audio-in and --logits are phone-class options; --target micro takes mel input "
            "and gives scores"
        )
    from tfmood.deploy.tflm import export_micro

    with contextlib.redirect_stdout(sys.stderr):
        report = export_micro(
            args.model,
            args.output,
            calibration=args.calibration,
            n_frames=args.n_frames,
            test=args.test,
            root=args.root,
            limit=args.limit,
        )
    print(json.dumps(report, indent=2, default=str))
    return 0 if report["passed"] else 1


def format_report(report: dict) -> str:
    """A few human-readable lines: what was built, its tensors, ops and checks."""
    status = "written" if report["written"] else "NOT written (a check failed)"
    size = f"{report['bytes']:,} bytes"
    output = report.get("output", "scores")
    lines = [f"{report['target']} TFLite model ({output} out), {size}: {report['path']} {status}"]
    for kind in ("inputs", "outputs"):
        for tensor in report[kind]:
            quant = tensor["quantization"]
            quant_text = (
                f", scale {quant['scale']:.6g}, zero point {quant['zero_point']}" if quant else ""
            )
            lines.append(
                f"  {kind[:-1]} {tensor['name']}: {tensor['dtype']} {tensor['shape']}{quant_text}"
            )
    lines.append(f"  ops: {', '.join(report['ops'])}")
    for check in report["checks"]:
        mark = "ok  " if check["passed"] else "FAIL"
        value = check["value"]
        value_text = f"{value:.3g}" if isinstance(value, float) else str(value)
        limit = "" if check["limit"] is None else f" (limit {check['limit']})"
        detail = f"  {check['detail']}" if check["detail"] else ""
        lines.append(f"  {mark} {check['metric']}: {value_text}{limit}{detail}")
    if not report["passed"]:
        print("tfmood export: verification failed; nothing written", file=sys.stderr)
        if _only_the_output_grid_failed(report):
            print(
                "tfmood export: the int8 graph itself ranks as the Keras scores on its output "
                "grid do; the 1/256 sigmoid steps lose the ranking. Try --logits.",
                file=sys.stderr,
            )
    return "\n".join(lines)


def _only_the_output_grid_failed(report: dict) -> bool:
    """An int8 scores export that failed its ROC-AUC check only through the output grid."""
    checks = {check["metric"]: check for check in report["checks"]}
    grid = checks.get("roc_auc_abs_diff_output_grid")
    failed = [check["metric"] for check in report["checks"] if not check["passed"]]
    return (
        report.get("output") == "scores"
        and failed == ["roc_auc_abs_diff"]
        and grid is not None
        and grid["value"] <= checks["roc_auc_abs_diff"]["limit"]
    )
