"""TFLite latency per 30 s clip (96 x 1400 log-mel) on one thread, per preset and target.

For every preset, the model is converted twice: straight (`convert(..., rewrite=False)`: the Keras
graph as it is, any batch size) and through the export rewrite (`tfmood.deploy.fold`: static shapes,
folded BatchNorm/AReLU, activation after pooling, fast attention). Every interpreter is LiteRT's
(`tfmood.deploy.runtime`, `ai_edge_litert`) with one thread and its default delegate: XNNPACK, which
takes the float ops (float EXP too, since LiteRT 2.3 / TF 2.21) and also the int8 (QS8) ops it
supports; int8 ops it lacks (EXP, MAXIMUM) run on the builtin kernels. The models are timed in
interleaved rounds (one invoke of each per round, `tfmood.deploy.runtime.time_invokes`), so a change
in machine load hits all of them alike; the table gives the median over the rounds of the CPU time
of the invoking thread (single-threaded, it excludes time lost to other processes) and the
wall-time median beside it, and each model's time over the baseline's (of the medians, of the
minima, and the median of the per-round ratios). Weights are random: float latency does not depend
on them, int8 latency only through the quantisation scales (XNNPACK refuses int8 ADD/SUB/MUL whose
scale ratios are out of its range; the export keeps the attention's ops within it). int8
calibration uses 8 random log-mel-like inputs. Prints Markdown.

    python3 bench/bench_tflite_latency.py [--presets baseline sa3 arelu] [--rounds 30]

A preset may carry integer config overrides: `sa3:heads=8` is sa3 with 8 attention heads.
"""

import argparse
import os
import subprocess

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

SEED = 0
N_MELS, N_FRAMES = 96, 1400
TARGETS = ("float32", "int8")
VARIANTS = ("straight", "rewritten")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["baseline", "sa3", "arelu"])
    parser.add_argument("--targets", nargs="+", default=list(TARGETS))
    parser.add_argument("--rounds", type=int, default=30, help="timed invokes per model")
    parser.add_argument("--no-straight", action="store_true", help="time rewritten models only")
    return parser.parse_args()


def cpu_model() -> str:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    fields = dict(line.split(":", 1) for line in lscpu.splitlines() if ":" in line)
    name = fields.get("Model name", "unknown CPU").strip()
    return f"{name}, {os.cpu_count()} logical CPUs"


def calibration_inputs(count: int = 8) -> np.ndarray:
    rng = np.random.default_rng(SEED)
    return rng.normal(-40.0, 20.0, (count, N_MELS, N_FRAMES)).astype(np.float32)


def build_preset(spec: str):
    """The model of a preset name with optional integer overrides, `name[:key=value,...]`."""
    from tfmood.models.vggish import build_model

    name, _, overrides = spec.partition(":")
    pairs = (item.split("=", 1) for item in overrides.split(",") if item)
    return build_model(name, n_frames=N_FRAMES, **{key: int(value) for key, value in pairs})


def convert_all(presets, targets, variants) -> dict:
    """{(preset, target, variant): flatbuffer} for every combination."""
    import keras

    from tfmood.deploy.convert import convert, representative_dataset

    representative = representative_dataset(calibration_inputs())
    models = {}
    jobs = [(p, t, v) for p in presets for t in targets for v in variants]
    for preset, target, variant in tqdm(jobs, desc="converting"):
        keras.utils.set_random_seed(SEED)
        model = build_preset(preset)
        models[preset, target, variant] = convert(
            model, target, representative, rewrite=variant == "rewritten"
        )
    return models


def time_interleaved(models: dict, rounds: int) -> dict:
    """{key: {"cpu": ms per round, "wall": ms per round}} over `rounds` interleaved invokes."""
    from tfmood.deploy.runtime import time_invokes

    return time_invokes(models, rounds, warmup=1, num_threads=1, progress=True)


def ratios(own: dict, base: dict) -> str:
    """Own time over the baseline's: of the medians, of the minima, and the median of the
    per-round ratios (the two ran back to back in every round, so load changes cancel)."""
    median = np.median(own["cpu"]) / np.median(base["cpu"])
    minimum = np.min(own["cpu"]) / np.min(base["cpu"])
    paired = np.median(own["cpu"] / base["cpu"])
    return f"{median:.2f}x / {minimum:.2f}x / {paired:.2f}x"


def markdown(times: dict, presets, targets, variants) -> str:
    header = "| preset | " + " | ".join(f"{t} {v} ms" for t in targets for v in variants)
    header += " | " + " | ".join(f"{t} vs baseline" for t in targets) + " |"
    lines = [header, "|" + "---|" * (1 + len(targets) * len(variants) + len(targets))]
    for preset in presets:
        cells = []
        for target in targets:
            for variant in variants:
                entry = times[preset, target, variant]
                cpu, wall = entry["cpu"], entry["wall"]
                cells.append(f"{np.median(cpu):.1f} / {cpu.min():.1f} ({np.median(wall):.1f})")
        for target in targets:
            base = times.get(("baseline", target, "rewritten"))
            own = times[preset, target, variants[-1]]
            cells.append(ratios(own, base) if base else "-")
        lines.append(f"| {preset} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    variants = ("rewritten",) if args.no_straight else VARIANTS
    load = os.getloadavg()
    models = convert_all(args.presets, args.targets, variants)
    times = time_interleaved(models, args.rounds)
    after = os.getloadavg()[0]
    print(f"\nCPU: {cpu_model()}; load average before: {load[0]:.2f}, after: {after:.2f}")
    print(f"input 1 x {N_MELS} x {N_FRAMES}, LiteRT Interpreter(num_threads=1), default XNNPACK")
    print(f"{args.rounds} interleaved rounds: thread CPU median / min ms (wall median ms)\n")
    print(markdown(times, args.presets, args.targets, variants))
    print("\nratios: rewritten model over rewritten baseline, CPU time: of the medians / of the "
          "minima / median of the per-round ratios")


if __name__ == "__main__":
    main()
