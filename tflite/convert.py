"""Export one trained model to every phone-class TFLite target, verified, into one folder.

Each target goes through `tfmood.deploy.export.export_model` (rewrite, convert with builtin ops only,
verify against the Keras model, write only if the checks pass); the reports are collected in
`report.json`. `tfmood export` does the same for one target.

    python3 tflite/convert.py MODEL.keras --out-dir tflite/out \
        [--targets float32 float16 dynamic int8] [--audio-in] [--logits] [--calibration DIR-or-TSV]
"""

import argparse
import contextlib
import os
import sys

from tfmood.deploy.convert import TARGETS


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a trained .keras model")
    parser.add_argument("--out-dir", default=os.path.join("tflite", "out"))
    parser.add_argument("--targets", nargs="+", default=list(TARGETS), choices=TARGETS)
    parser.add_argument("--calibration", help="corpus directory or split TSV (default: synthetic)")
    parser.add_argument("--n-frames", type=int, help="input frames (default: the model's or 1400)")
    parser.add_argument("--audio-in", action="store_true", help="also export audio-in models")
    parser.add_argument("--logits", action="store_true", help="tag logits out, not scores")
    return parser.parse_args()


def main() -> int:
    from tfmood.atomic import write_json
    from tfmood.deploy.audio_model import AUDIO_IN_TARGETS
    from tfmood.deploy.export import export_model

    args = parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    stem = os.path.splitext(os.path.basename(args.model))[0]
    jobs = [(target, False) for target in args.targets]
    if args.audio_in:
        jobs += [(target, True) for target in args.targets if target in AUDIO_IN_TARGETS]
    reports = {}
    for target, audio_in in jobs:
        name = f"{stem}-{'audio-' if audio_in else ''}{target}"
        path = os.path.join(args.out_dir, f"{name}.tflite")
        print(f"{name}: converting and verifying", file=sys.stderr)
        with contextlib.redirect_stdout(sys.stderr):
            reports[name] = export_model(
                args.model, target, path, calibration=args.calibration,
                n_frames=args.n_frames, audio_in=audio_in, logits=args.logits,
            )  # fmt: skip
        status = "written" if reports[name]["written"] else "FAILED verification, not written"
        print(f"{name}: {reports[name]['bytes']:,} bytes, {status}")
    report_path = os.path.join(args.out_dir, "report.json")
    write_json(report_path, reports)
    print(f"reports: {report_path}")
    return 0 if all(report["passed"] for report in reports.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
