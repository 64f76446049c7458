"""Input pipeline throughput against what training consumes.

Generates a synthetic corpus (tfmood.data.synth) in a temporary directory, turns it into .npy melspecs
and TFRecord shards, and measures clips per second of the training pipeline (batch 16, 1400 frames,
shuffled, not cached, so every batch is read and decoded again) from .npy files, from WAV audio
(decode + resample + LogMel) and from shards, plus the .npy pipeline served from its memory cache
(every epoch after the first). The training consumption is the clips per second of
`train_on_batch` of the baseline model at batch 16 on this machine. Prints a Markdown table.

    python3 bench/bench_input_pipeline.py [--tracks 64] [--seconds 30] [--batches 40]
"""

import argparse
import os
import subprocess
import tempfile
import time

import numpy as np
from tqdm import tqdm

SEED = 0
BATCH_SIZE = 16
N_FRAMES = 1400


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=64, help="tracks in the synthetic corpus")
    parser.add_argument("--seconds", type=float, default=30.0, help="duration of every track")
    parser.add_argument("--batches", type=int, default=40, help="batches timed per source")
    parser.add_argument("--audio-batches", type=int, default=6, help="batches timed from audio")
    parser.add_argument("--steps", type=int, default=3, help="training steps timed")
    parser.add_argument("--workdir", help="keep the corpus here (default: a temporary directory)")
    return parser.parse_args()


def cpu_model() -> str:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    fields = dict(line.split(":", 1) for line in lscpu.splitlines() if ":" in line)
    name = fields.get("Model name", "unknown CPU").strip()
    return f"{name}, {os.cpu_count()} logical CPUs"


def build_corpus(workdir: str, n_tracks: int, seconds: float) -> tuple:
    """Synthetic WAVs, their .npy melspecs and TFRecord shards; returns (tsv, roots by source)."""
    from tfmood.data.metadata import read_split
    from tfmood.data.pipeline import audio_mel, write_shards
    from tfmood.data.synth import generate_corpus

    info = generate_corpus(workdir, n_tracks, seconds, SEED)
    tsv = info.split_paths["train"]
    mel_root = os.path.join(workdir, "mels")
    for track in tqdm(read_split(tsv), desc="melspecs"):
        path = os.path.join(mel_root, track.npy_path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        np.save(path, audio_mel(os.path.join(info.audio_dir, track.path)))
    shard_root = os.path.join(workdir, "shards")
    write_shards(tsv, mel_root, shard_root, shard_size=16)
    return tsv, {"npy": mel_root, "audio": info.audio_dir, "tfrecord": shard_root}


def clips_per_second(dataset, n_batches: int, warmup: int = 2) -> float:
    """Steady-state clips per second of an endless pass over `dataset`."""
    batches = iter(dataset.repeat())
    for _ in range(warmup):
        next(batches)
    clips = 0
    start = time.perf_counter()
    for _ in range(n_batches):
        mel, _ = next(batches)
        clips += int(mel.shape[0])
    return clips / (time.perf_counter() - start)


def training_clips_per_second(n_steps: int) -> float:
    """Clips per second that `train_on_batch` of the baseline consumes at batch 16."""
    import keras

    from tfmood.models.vggish import build_model

    model = build_model("baseline")
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="binary_crossentropy")
    rng = np.random.default_rng(SEED)
    mel = rng.normal(-40.0, 20.0, (BATCH_SIZE, 96, N_FRAMES)).astype(np.float32)
    labels = (rng.random((BATCH_SIZE, 56)) < 0.05).astype(np.float32)
    model.train_on_batch(mel, labels)  # compile and warm up
    start = time.perf_counter()
    for _ in range(n_steps):
        model.train_on_batch(mel, labels)
    return BATCH_SIZE * n_steps / (time.perf_counter() - start)


def measure(tsv: str, roots: dict, args) -> list:
    from tfmood.data.pipeline import make_dataset

    common = {"training": True, "batch_size": BATCH_SIZE, "n_frames": N_FRAMES, "seed": SEED}
    rows = []
    for source, cache, n_batches in (
        ("npy", False, args.batches),
        ("tfrecord", False, args.batches),
        ("audio", False, args.audio_batches),
        ("npy", True, args.batches),
    ):
        tsv_or_none = None if source == "tfrecord" else tsv
        dataset = make_dataset(tsv_or_none, roots[source], source=source, cache=cache, **common)
        name = f"{source} (memory cache)" if cache else source
        rows.append((name, clips_per_second(dataset, n_batches)))
    return rows


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="tfmood-bench-") as temp:
        workdir = args.workdir or temp
        tsv, roots = build_corpus(workdir, args.tracks, args.seconds)
        rows = measure(tsv, roots, args)
    training = training_clips_per_second(args.steps)
    print(f"\nCPU: {cpu_model()}")
    print(
        f"batch {BATCH_SIZE}, {N_FRAMES} frames, {args.tracks} synthetic tracks of "
        f"{args.seconds:g} s\n"
    )
    print("| source | clips/s | ratio to training consumption |")
    print("|---|---:|---:|")
    for name, rate in rows:
        print(f"| {name} | {rate:,.1f} | {rate / training:,.1f}x |")
    print(f"| training step (baseline, train_on_batch) | {training:,.2f} | 1.0x |")


if __name__ == "__main__":
    main()
