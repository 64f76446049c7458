"""Rebuild the shipped MTG-Jamendo baseline artifacts from the PyTorch checkpoint.

    python saved_models/build.py [--checkpoint best_model.pth] [--reference io.npz]
        [--music tests/data/music] [--verify-music /usr/share/hyperrogue/music]
        [--out saved_models] [--latency]

Steps (deterministic: the same checkpoint and excerpts give the same files):

1. `tfmood.models.torch_import.import_torch(..., preset="baseline")` -> mtg-jamendo-baseline.keras,
   checked against the PyTorch outputs in io.npz (max |diff| <= 1e-4).
2. The audio-in float32 TFLite model (12 kHz waveform in, LogMel inside): `export_model(...,
   "float32", audio_in=True)`, verified on the committed excerpts (max |dp| <= 1e-4).
   float16 was measured and fails its own floor on real music (max |dp| 0.036 > 1e-2), so the
   shipped audio-in model is float32 (README.md).
3. The full-int8 mel-input model with logits out: `export_model(..., "int8", logits=True)`,
   calibrated on the even-placed excerpts and verified on the odd-placed ones (mean |dp| <= 0.01,
   per-tag Spearman median >= 0.98, top-5 agreement >= 0.9). The sigmoid-output variant fails
   the Spearman floor (its 1/256 output steps tie most windows of a tag), so logits it is.
4. With --verify-music, each TFLite model is also checked on every window of that folder
   (`verify_on_music`) and the numbers go into its report under "extra_verification".

Each artifact gets a report `<artifact>.json`. The reports hold no timings (they vary); with
--latency the one-thread latencies are measured and printed (for README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_CHECKPOINT = REPO.parent / "shared" / "reference" / "mtg_baseline" / "best_model.pth"
DEFAULT_MUSIC = REPO / "tests" / "data" / "music"

KERAS_NAME = "mtg-jamendo-baseline.keras"
AUDIO_NAME = "mtg-jamendo-baseline-audio-float32.tflite"
INT8_NAME = "mtg-jamendo-baseline-int8.tflite"
PARITY_TOLERANCE = 1e-4
# (file, target, audio_in, logits)
EXPORTS = (
    (AUDIO_NAME, "float32", True, False),
    (INT8_NAME, "int8", False, True),
)


def _relative(path) -> str:
    """A path as the reports record it: relative to the repository when inside it or beside it
    (../shared/...), so a rebuild in another clone writes the same report; else absolute."""
    path = Path(path).resolve()
    for base, prefix in ((REPO, ""), (REPO.parent, "../")):
        try:
            return prefix + str(path.relative_to(base))
        except ValueError:
            continue
    return str(path)


def parity(model, reference_npz) -> dict:
    """Max |Keras - PyTorch| on the reference inputs."""
    with np.load(reference_npz, allow_pickle=False) as reference:
        x, y = reference["x"], reference["y"]
    scores = np.asarray(model.predict(x, verbose=0))
    diff = float(np.abs(scores - y).max())
    return {"reference": _relative(reference_npz), "examples": int(len(x)),
            "max_abs_diff": diff, "limit": PARITY_TOLERANCE,
            "passed": diff <= PARITY_TOLERANCE}  # fmt: skip


def _clean(report: dict) -> dict:
    """Paths relative to the repository, so a rebuild elsewhere writes the same report."""
    report = dict(report)
    report["path"] = os.path.basename(report["path"]) if report.get("path") else None
    for part in report.get("data", {}).values():
        if isinstance(part, dict) and "folder" in part:
            part["folder"] = _relative(part["folder"])
    return report


def build(out_dir, checkpoint=DEFAULT_CHECKPOINT, reference=None, music=DEFAULT_MUSIC,
          verify_music=None, progress=False) -> dict:
    """Write the artifacts and their reports into `out_dir`; returns {file: report}.

    Raises:
        RuntimeError: a parity or export check failed (nothing more is written).
    """
    from tfmood import atomic
    from tfmood.deploy.export import export_model, verify_on_music
    from tfmood.models.torch_import import import_torch

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = Path(checkpoint)
    reference = Path(reference) if reference else checkpoint.parent / "io.npz"

    model = import_torch(checkpoint, preset="baseline")
    keras_path = out_dir / KERAS_NAME
    atomic.save_model(model, keras_path)
    from tfmood.models.vggish import load_model

    model = load_model(str(keras_path))  # verify what was written, as users load it
    keras_report = {"artifact": KERAS_NAME, "source": checkpoint.name, "preset": "baseline",
                    "parameters": int(model.count_params()),
                    "bytes": keras_path.stat().st_size,
                    "parity_with_pytorch": parity(model, reference)}  # fmt: skip
    reports = {KERAS_NAME: keras_report}
    atomic.write_text(str(out_dir / f"{KERAS_NAME}.json"),
                      json.dumps(keras_report, indent=2) + "\n")
    if not keras_report["parity_with_pytorch"]["passed"]:
        raise RuntimeError(f"parity with PyTorch failed: {keras_report['parity_with_pytorch']}")

    for name, target, audio_in, logits in EXPORTS:
        report = export_model(model, target, str(out_dir / name), calibration=str(music),
                              audio_in=audio_in, logits=logits, limit=None,
                              progress=progress)  # fmt: skip
        report = {"artifact": name, "keras_model": KERAS_NAME, **_clean(report)}
        if verify_music and report["written"]:
            extra = verify_on_music(model, (out_dir / name).read_bytes(), target,
                                    str(verify_music), audio_in=audio_in, logits=logits)
            extra["data"]["folder"] = _relative(extra["data"]["folder"])
            report["extra_verification"] = extra
        reports[name] = report
        atomic.write_text(str(out_dir / f"{name}.json"), json.dumps(report, indent=2) + "\n")
        if not report["passed"]:
            failed = [c for c in report["checks"] if not c["passed"]]
            raise RuntimeError(f"{name}: export checks failed: {failed}")
        if "extra_verification" in report and not report["extra_verification"]["passed"]:
            raise RuntimeError(f"{name}: fails its floors on {verify_music}")
    return reports


def latencies(out_dir, runs: int = 20) -> dict:
    """One-thread latency (ms, XNNPACK) of each TFLite artifact."""
    from tfmood.deploy.runtime import measure_latency

    return {name: measure_latency((Path(out_dir) / name).read_bytes(), runs=runs, num_threads=1)
            for name, *_ in EXPORTS}  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    parser.add_argument("--reference", help="io.npz with PyTorch inputs x and outputs y "
                        "(default: beside the checkpoint)")
    parser.add_argument("--music", default=str(DEFAULT_MUSIC),
                        help="calibration/verification excerpts (default tests/data/music)")
    parser.add_argument("--verify-music", help="a larger music folder to verify on as well")
    parser.add_argument("--out", default=str(HERE))
    parser.add_argument("--latency", action="store_true", help="measure one-thread latency")
    args = parser.parse_args(argv)
    import contextlib

    with contextlib.redirect_stdout(sys.stderr):  # the converter's notes
        reports = build(args.out, args.checkpoint, args.reference, args.music,
                        args.verify_music, progress=True)  # fmt: skip
    summary = {}
    for name, report in reports.items():
        summary[name] = {"bytes": report["bytes"], **({"fidelity": report["fidelity"]}
                         if "fidelity" in report else {})}  # fmt: skip
        if "extra_verification" in report:
            summary[name]["extra_fidelity"] = report["extra_verification"]["fidelity"]
    if args.latency:
        for name, latency in latencies(args.out).items():
            summary[name]["latency_1_thread"] = latency
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
