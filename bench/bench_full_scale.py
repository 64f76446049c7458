"""A full-scale rehearsal of the MTG-Jamendo path, end to end through the `tfmood` command line.

Lays out a stand-in of split 0 of the mood/theme task without its 70 GB: the official folder
structure `ROOT/NN/ID.npy` for every track of the three splits (9,949 / 3,802 / 4,231 tracks at
`--scale 1`), each a hard link to one of a pool of `--pool` generated whole-track melspecs (96 x T
float32, T drawn around 10,400 frames: 221 s, ~4 MB), and the three split TSVs in the official
format (tags of `tfmood.data.tags`, about 1.7 per track, skewed frequencies, every tag in every
split). Because the tracks share the pool's files, reads come from the page cache: this rehearses
scale (file counts, split sizes, memory, the validation pass) rather than disk speed, which
`bench/bench_input_pipeline.py` measures.

Then it runs, each stage a `tfmood` subprocess whose wall time and peak RSS (its `wait4` rusage)
are measured:

    labels (3 splits) -> train A (a few steps per epoch, a full validation pass every epoch)
    -> train B, killed (SIGKILL) once its first epoch is backed up -> train B again (resumes)
    -> test A, test B (every test track) -> fuse A + B -> evaluate the fusion

and checks what must hold: every stage succeeds, B resumes after its first epoch instead of
starting again, the test predictions follow the split's order, and `tfmood test` stays under
`--test-memory-mb` (2 GB). Prints a Markdown table; exits with status 1 if a check fails.

    python3 bench/bench_full_scale.py [--scale 1] [--workdir DIR] [--epochs 2] [--steps-per-epoch 4]
"""

import argparse
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

SEED = 0
SPLITS = {"train": 9_949, "validation": 3_802, "test": 4_231}  # split 0, mood/theme
MIN_TRACKS = 64  # per split, so that each of the 56 tags has positives and negatives
MEAN_FRAMES = 10_400
HOP_SECONDS = 256 / 12_000
HEADER = "TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of split 0's tracks")
    parser.add_argument("--workdir", help="where everything goes (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep --workdir's contents")
    parser.add_argument("--pool", type=int, default=50, help="distinct whole-track files")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of each training")
    parser.add_argument("--steps-per-epoch", type=int, default=4, help="training steps per epoch")
    parser.add_argument("--width", default="0.125", help="model width (tfmood train --width)")
    parser.add_argument("--n-frames", type=int, default=1400, help="frames per example")
    parser.add_argument("--test-memory-mb", type=float, default=2048.0, help="test's RSS bound")
    return parser.parse_args(argv)


# --------------------------------------------------------------------------------------------
# The stand-in data set


def split_sizes(scale: float) -> dict:
    return {name: max(MIN_TRACKS, round(count * scale)) for name, count in SPLITS.items()}


def write_pool(folder: str, count: int, rng: np.random.Generator) -> list[str]:
    """`count` whole-track melspecs with lengths around MEAN_FRAMES; their paths."""
    os.makedirs(folder, exist_ok=True)
    paths = []
    for k in tqdm(range(count), desc="melspec pool", leave=False):
        frames = int(np.clip(rng.normal(MEAN_FRAMES, 2500), 1500, 30_000))
        mel = rng.normal(-40.0, 15.0, (96, frames)).astype(np.float32)
        path = os.path.join(folder, f"pool_{k:03d}.npy")
        np.save(path, mel)
        paths.append(path)
    return paths


def track_tags(n_tracks: int, rng: np.random.Generator) -> list[list[str]]:
    """Tags per track: 1 + Poisson(0.7) of them, frequencies falling with the tag's rank; the
    first 56 tracks take one tag each so that every tag has a positive in every split."""
    from tfmood.data.tags import MOODTHEME_TAGS

    tags = np.array(MOODTHEME_TAGS)
    weights = 1.0 / (np.arange(len(tags)) + 8.0)
    weights = rng.permutation(weights / weights.sum())
    rows = []
    for number in range(n_tracks):
        if number < len(tags):
            rows.append([str(tags[number])])
            continue
        count = min(1 + rng.poisson(0.7), 8)
        rows.append(sorted(rng.choice(tags, size=count, replace=False, p=weights).tolist()))
    return rows


def write_layout(workdir: str, scale: float, pool_size: int) -> dict:
    """The pool, the hard-linked melspec tree and the TSVs; returns the paths and counts."""
    rng = np.random.default_rng(SEED)
    pool = write_pool(os.path.join(workdir, "pool"), pool_size, rng)
    frames = [int(np.load(path, mmap_mode="r").shape[1]) for path in pool]
    root = os.path.join(workdir, "melspecs")
    sizes = split_sizes(scale)
    ids = rng.choice(np.arange(1, 1_400_000), size=sum(sizes.values()), replace=False)
    tsvs, start = {}, 0
    for split, size in sizes.items():
        lines = [HEADER]
        for number, tags in zip(ids[start : start + size], track_tags(size, rng)):
            which = int(number) % pool_size
            relative = f"{int(number) % 100:02d}/{int(number)}"
            target = os.path.join(root, relative + ".npy")
            os.makedirs(os.path.dirname(target), exist_ok=True)
            if not os.path.exists(target):
                os.link(pool[which], target)
            cells = "\t".join(f"mood/theme---{tag}" for tag in tags)
            lines.append(
                f"track_{int(number):07d}\tartist_{int(number) // 7:06d}\t"
                f"album_{int(number) // 3:06d}\t{relative}.mp3\t"
                f"{frames[which] * HOP_SECONDS:.1f}\t{cells}"
            )
        start += size
        tsvs[split] = os.path.join(workdir, f"autotagging_moodtheme-{split}.tsv")
        with open(tsvs[split], "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
    return {"root": root, "tsvs": tsvs, "sizes": sizes, "mean_frames": float(np.mean(frames))}


# --------------------------------------------------------------------------------------------
# Stages


@dataclass
class Stage:
    """One `tfmood` run: what it did, how long, its peak memory and exit status."""

    name: str
    tracks: int
    seconds: float
    peak_mb: float
    status: int
    log: str


def start(arguments: list[str], log: str) -> subprocess.Popen:
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    with open(log, "w") as handle:
        return subprocess.Popen(
            [sys.executable, "-m", "tfmood", *arguments],
            stdout=handle, stderr=subprocess.STDOUT, env=environment,
        )  # fmt: skip


def finish(process: subprocess.Popen, started: float) -> tuple[float, float, int]:
    """(seconds, peak RSS in MB, exit status) of a started process, waited for with wait4."""
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - started, usage.ru_maxrss / 1024, process.returncode


def run_stage(name: str, tracks: int, arguments: list[str], logs: str) -> Stage:
    log = os.path.join(logs, name.replace(" ", "_") + ".log")
    started = time.perf_counter()
    seconds, peak, status = finish(start(arguments, log), started)
    return Stage(name, tracks, seconds, peak, status, log)


def run_until_backup(name: str, tracks: int, arguments: list[str], logs: str, out: str) -> Stage:
    """Start a training and SIGKILL it as soon as its first epoch is backed up."""
    log = os.path.join(logs, name.replace(" ", "_") + ".log")
    marker = os.path.join(out, "backup", "training_metadata.json")
    started = time.perf_counter()
    process = start(arguments, log)
    while process.poll() is None and not os.path.exists(marker):
        time.sleep(0.2)
    if process.returncode is None:
        process.send_signal(signal.SIGKILL)
    seconds, peak, status = finish(process, started)
    return Stage(name, tracks, seconds, peak, status, log)


def train_arguments(layout: dict, out: str, seed: int, args) -> list[str]:
    tsvs = layout["tsvs"]
    return [
        "train", "--train-tsv", tsvs["train"], "--validation-tsv", tsvs["validation"],
        "--train-root", layout["root"], "--preset", "baseline", "--width", args.width,
        "--n-frames", str(args.n_frames), "--epochs", str(args.epochs),
        "--steps-per-epoch", str(args.steps_per_epoch), "--seed", str(seed),
        "--out-dir", out, "--tensorboard", "false", "--verbose", "2",
    ]  # fmt: skip


def rehearse(workdir: str, layout: dict, args) -> tuple[list[Stage], list[str]]:
    """Run every stage; returns the stages and the failed checks."""
    logs = os.path.join(workdir, "logs")
    os.makedirs(logs, exist_ok=True)
    sizes, tsvs, root = layout["sizes"], layout["tsvs"], layout["root"]
    labels = {split: os.path.join(workdir, "labels", f"{split}.npy") for split in tsvs}
    runs = {name: os.path.join(workdir, "runs", name) for name in "ab"}
    tests = {name: os.path.join(workdir, "test", name) for name in "ab"}
    fused = os.path.join(workdir, "fused.npy")
    stages, failures = [], []
    plan = [
        *[(f"labels {s}", sizes[s], ["labels", "--tsv", tsvs[s], "-o", labels[s]]) for s in tsvs],
        ("train A", sizes["train"], train_arguments(layout, runs["a"], 0, args)),
        ("train B (killed after epoch 1)", sizes["train"], None),
        ("train B (resumed)", sizes["train"], train_arguments(layout, runs["b"], 1, args)),
        *[
            (f"test {name.upper()}", sizes["test"],
             ["test", "--model", os.path.join(runs[name], "best.keras"), "--tsv", tsvs["test"],
              "--root", root, "-o", tests[name], "--n-frames", str(args.n_frames)])
            for name in "ab"
        ],
        ("fuse A + B", sizes["test"],
         ["fuse", os.path.join(tests["a"], "predictions.npy"),
          os.path.join(tests["b"], "predictions.npy"), "-o", fused]),
        ("evaluate fusion", sizes["test"],
         ["evaluate", "--groundtruth", labels["test"], "--predictions", fused, "--json",
          "-o", os.path.join(workdir, "report")]),
    ]  # fmt: skip
    for name, tracks, arguments in tqdm(plan, desc="stages"):
        if arguments is None:
            killed_args = train_arguments(layout, runs["b"], 1, args)
            stages.append(run_until_backup(name, tracks, killed_args, logs, runs["b"]))
            continue
        stage = run_stage(name, tracks, arguments, logs)
        stages.append(stage)
        if stage.status != 0:
            failures.append(f"{name} exited with status {stage.status} (log: {stage.log})")
            break
    if not failures:
        failures += check_outputs(workdir, stages, layout, args)
    return stages, failures


def check_outputs(workdir: str, stages: list[Stage], layout: dict, args) -> list[str]:
    """The checks of the rehearsal's outputs; returns what failed."""
    failures = []
    killed = next(stage for stage in stages if stage.name.startswith("train B (killed"))
    if killed.status != -signal.SIGKILL:
        failures.append(f"train B ended ({killed.status}) before it could be killed")
    with open(next(s.log for s in stages if s.name == "train B (resumed)")) as handle:
        resumed_log = handle.read()
    if f"Epoch 1/{args.epochs}" in resumed_log or f"Epoch 2/{args.epochs}" not in resumed_log:
        failures.append("train B did not resume after its first epoch")
    history = os.path.join(workdir, "runs", "b", "history.csv")
    with open(history) as handle:
        epochs = [line.split(",")[0] for line in handle.read().splitlines()[1:]]
    if epochs != [str(epoch) for epoch in range(args.epochs)]:
        failures.append(f"{history}: epochs {epochs}, expected 0..{args.epochs - 1} once each")
    with open(os.path.join(workdir, "test", "a", "track_ids.txt")) as handle:
        predicted = handle.read().split()
    with open(os.path.join(workdir, "labels", "test.track_ids.txt")) as handle:
        expected = handle.read().split()
    if predicted != expected:
        failures.append("the test predictions do not follow the test split's order")
    for stage in stages:
        if stage.name.startswith("test") and stage.peak_mb > args.test_memory_mb:
            failures.append(f"{stage.name}: peak RSS {stage.peak_mb:,.0f} MB over the bound")
    return failures


# --------------------------------------------------------------------------------------------
# The report


def machine() -> str:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    fields = dict(line.split(":", 1) for line in lscpu.splitlines() if ":" in line)
    flags = fields.get("Flags", "").split()
    vector = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    vector += " VNNI" if "avx512_vnni" in flags else ""
    cpu = fields.get("Model name", "unknown CPU").strip()
    return f"{cpu}, {os.cpu_count()} logical CPUs, {vector}"


def table(stages: list[Stage]) -> str:
    rows = ["| stage | tracks | wall s | peak RSS MB | exit |", "|---|---:|---:|---:|---:|"]
    for stage in stages:
        rows.append(
            f"| {stage.name} | {stage.tracks:,} | {stage.seconds:,.1f} | "
            f"{stage.peak_mb:,.0f} | {stage.status} |"
        )
    total = sum(stage.seconds for stage in stages)
    rows.append(f"| all stages | | {total:,.1f} | {max(s.peak_mb for s in stages):,.0f} | |")
    return "\n".join(rows)


def report(stages: list[Stage], layout: dict, args, command: str, setup_seconds: float) -> str:
    sizes = layout["sizes"]
    lines = [
        f"CPU: {machine()}; {datetime.date.today()}; `{command}`",
        (
            f"scale {args.scale:g}: {sizes['train']:,} / {sizes['validation']:,} / "
            f"{sizes['test']:,} tracks (train / validation / test), hard links to {args.pool} "
            f"whole-track melspecs of {layout['mean_frames']:,.0f} frames on average "
            f"(layout written in {setup_seconds:.1f} s); training: baseline at width {args.width}, "
            f"{args.epochs} epochs of {args.steps_per_epoch} steps of 16 x {args.n_frames} frames, "
            f"a full validation pass every epoch"
        ),
        "",
        table(stages),
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    command = " ".join(["python3", "bench/bench_full_scale.py", *(argv or sys.argv[1:])])
    temporary = None if args.workdir else tempfile.mkdtemp(prefix="tfmood-full-scale-")
    workdir = args.workdir or temporary
    try:
        started = time.perf_counter()
        layout = write_layout(workdir, args.scale, args.pool)
        setup = time.perf_counter() - started
        stages, failures = rehearse(workdir, layout, args)
        print(report(stages, layout, args, command, setup))
        with open(os.path.join(workdir, "report.json"), "w") as handle:
            json.dump([stage.__dict__ for stage in stages], handle, indent=1)
    finally:
        if temporary and not args.keep:
            shutil.rmtree(temporary, ignore_errors=True)
    for failure in failures:
        print(f"FAILED: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
