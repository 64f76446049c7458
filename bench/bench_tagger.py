"""Throughput of `tfmood predict` on a folder of real music, against the data set's own pipeline.

For a Keras and a TFLite model, whole tracks and `--first-window`: tracks/s, audio hours tagged
per hour, peak RSS (each configuration in its own process). With `--essentia-python`, the same
files through `bench_essentia_baseline.py` (essentia MonoLoader + essentia melspec + PyTorch
baseline on the first 1400 frames), run with that interpreter (an environment with essentia and
torch, never a tfmood dependency), and the goals checked: first-window >= 3x its speed, whole
tracks no slower, peak RSS < 1 GB. Tracks that fail to decode are counted in the table, not
in tracks/s. Prints a Markdown table with the machine (CPU model, cores,
AVX2/AVX-512), date and load.

    python bench/bench_tagger.py --keras /tmp/mtg.keras --tflite /tmp/mtg.tflite \\
        --essentia-python /tmp/venv_ess/bin/python \\
        --weights ../shared/reference/mtg_baseline/best_model.pth
"""

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_FOLDER = "/usr/share/hyperrogue/music"


def run_one(model: str, folder: str, first_window: bool, batch_size: int) -> dict:
    """Tag a folder in this process; the numbers (model loading and warm-up excluded)."""
    import numpy as np

    from tfmood import tagger

    paths = tagger.find_audio([folder])
    runner = tagger.load_runner(model)
    runner(np.zeros((1, 96, runner.n_frames), np.float32))  # warm-up (tracing, allocation)
    start = time.perf_counter()
    results = list(tagger.tag_tracks(runner, paths, n_frames=runner.n_frames,
                                     first_window=first_window, batch_size=batch_size))
    elapsed = time.perf_counter() - start
    ok = [r for r in results if r.ok]
    return {
        "tracks": len(ok), "failed": len(results) - len(ok), "seconds": elapsed,
        "windows": sum(r.windows for r in ok),
        "audio_hours": tagger.audio_hours([r.path for r in ok]),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "scores": {os.path.abspath(r.path): r.scores.tolist() for r in ok},
    }


def _subprocess_json(argv) -> dict:
    output = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def machine() -> dict:
    model, flags = platform.processor(), set()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name") and not model.strip():
                    model = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "avx2": "avx2" in flags,
            "avx512": "avx512f" in flags, "load": os.getloadavg(),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", default=DEFAULT_FOLDER)
    parser.add_argument("--keras", help="a .keras model (default: the shipped one)")
    parser.add_argument("--tflite", help="a mel-in .tflite model (default: none)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--essentia-python", help="a Python with essentia and torch")
    parser.add_argument("--weights", help="the PyTorch baseline's best_model.pth")
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        model, mode = args.one
        print(json.dumps(run_one(model, args.folder, mode == "first", args.batch_size)))
        return 0

    from tfmood import tagger

    info = machine()
    models = [("Keras", args.keras or str(tagger.DEFAULT_MODEL))]
    if args.tflite:
        models.append(("TFLite", args.tflite))
    rows = []
    if args.essentia_python:
        if not args.weights:
            parser.error("--essentia-python needs --weights best_model.pth")
        reference = _subprocess_json([args.essentia_python,
                                      os.path.join(HERE, "bench_essentia_baseline.py"),
                                      args.folder, "--weights", args.weights])
        reference["scores"] = {os.path.abspath(k): v for k, v in reference["scores"].items()}
        rows.append(("essentia + PyTorch baseline (data set pipeline)", "first 30 s", reference))
    else:
        reference = None
    for name, path in models:
        for mode in ("first", "whole"):
            result = _subprocess_json([sys.executable, os.path.abspath(__file__), args.folder,
                                       "--batch-size", str(args.batch_size), "--one", path, mode])
            rows.append((f"tfmood {name}", "first window" if mode == "first" else "whole tracks",
                         result))

    import numpy as np

    print(f"Machine: {info['cpu']}, {info['cores']} cores, AVX2 {'yes' if info['avx2'] else 'no'}"
          f", AVX-512 {'yes' if info['avx512'] else 'no'}; {info['date']}; load average before "
          f"{info['load'][0]:.2f} {info['load'][1]:.2f} {info['load'][2]:.2f}")
    first = rows[0][2]
    print(f"Folder: {args.folder} ({first['tracks']} tracks, {first['audio_hours'] * 60:.1f} min "
          "of audio)\n")
    print("| pipeline | mode | tracks/s | audio h / h | tracks ok / failed | windows | peak RSS (MB) "
          "| speed vs data set pipeline | max abs diff vs PyTorch (first window) |")
    print("|---|---|---|---|---|---|---|---|---|")
    verdicts = []
    for name, mode, result in rows:
        if isinstance(result.get("failed"), list):  # the essentia bench lists the paths
            result["failed"] = len(result["failed"])
        rate = result["tracks"] / result["seconds"]
        hours = result["audio_hours"] / (result["seconds"] / 3600)
        speed = diff = ""
        if reference is not None and result is not reference:
            factor = reference["seconds"] / result["seconds"]
            speed = f"{factor:.2f}x"
            goal = 3.0 if mode == "first window" else 1.0
            verdicts.append(f"{name} {mode}: {factor:.2f}x (goal >= {goal:g}x): "
                            f"{'met' if factor >= goal else 'NOT met'}; peak RSS "
                            f"{result['peak_rss_mb']:.0f} MB (goal < 1024): "
                            f"{'met' if result['peak_rss_mb'] < 1024 else 'NOT met'}")
            if mode == "first window":
                diff = "{:.2g}".format(max(
                    float(np.abs(np.array(result["scores"][p]) - np.array(s)).max())
                    for p, s in reference["scores"].items() if p in result["scores"]))
        print(f"| {name} | {mode} | {rate:.2f} | {hours:.0f} | "
              f"{result['tracks']} / {result.get('failed', 0)} | {result.get('windows', '')} | "
              f"{result['peak_rss_mb']:.0f} | {speed} | {diff} |")
    if verdicts:
        print("\nGoals:\n" + "\n".join(f"- {v}" for v in verdicts))
    failed = [f"{name} {mode}: {result['failed']}" for name, mode, result in rows
              if result.get("failed")]
    if failed:
        print("\nFailed tracks (tracks/s counts tracks tagged; the time includes decoding the "
              "failed ones): " + "; ".join(failed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
