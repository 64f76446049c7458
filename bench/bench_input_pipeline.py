"""Input pipeline throughput against what training consumes, on synthetic and whole-track data.

Two tables, both for the training pipeline (batch 16, 1400 frames, shuffled, not cached, so every
batch is read again):

1. Official layout (`--official-tracks`, default 256): whole-track melspecs as MTG-Jamendo ships
   them, `ROOT/NN/ID.npy`, (96, T) float32 with T drawn around 10,400 frames (221 s, ~4 MB), and
   a split TSV. The partial read of `tfmood.data.pipeline` (the first 1400 frames of each file, in
   the pre-pass and in the dataset) against the former full read (the whole file loaded and
   checked in the pre-pass, `tf.io.read_file` of the whole file in the dataset, then cropped).
   Each is run in its own process, so its peak RSS is its own: the pre-pass, one epoch with the
   files dropped from the page cache first (`POSIX_FADV_DONTNEED`, "cold-ish": the disk's own
   cache may still hold them; the epoch's time includes filling the shuffle buffer), then the
   steady rate over four more epochs with the files cached (warm).
2. Synthetic corpus (`--tracks`, `tfmood.data.synth`, 30 s tracks): .npy melspecs, WAV audio
   (decode + resample + LogMel) and TFRecord shards, plus the .npy pipeline served from its memory
   cache.

The training consumption is the float32 baseline step of `tfmood train` at batch 16 on this CPU
(measured as `bench/bench_training.py` does, in the same run), and an estimate for a GPU-class
step: `--gpu-tflops` (assumed 10 TFLOP/s sustained in float32, half an A100's peak) divided by
the training FLOPs of one example (3 x the forward GFLOPs of `tfmood.models.complexity`), an
estimate, not a measurement. Prints Markdown tables.

    python3 bench/bench_input_pipeline.py [--official-tracks 256] [--tracks 64] [--steps 3]
"""

import argparse
import datetime
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

SEED = 0
BATCH_SIZE = 16
N_FRAMES = 1400
MEAN_FRAMES = 10_400  # MTG-Jamendo's mean track length: 221 s at 12 kHz, hop 256
READERS = ("partial", "full")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official-tracks", type=int, default=256, help="whole-track files")
    parser.add_argument("--tracks", type=int, default=64, help="tracks in the synthetic corpus")
    parser.add_argument("--seconds", type=float, default=30.0, help="synthetic track duration")
    parser.add_argument("--batches", type=int, default=40, help="batches timed per source")
    parser.add_argument("--audio-batches", type=int, default=6, help="batches timed from audio")
    parser.add_argument("--steps", type=int, default=3, help="training steps timed")
    parser.add_argument(
        "--gpu-tflops",
        type=float,
        default=10.0,
        help="assumed sustained float32 TFLOP/s of a GPU-class training step (an estimate)",
    )
    parser.add_argument("--no-synthetic", action="store_true", help="skip the synthetic table")
    parser.add_argument("--workdir", help="keep the data here (default: a temporary directory)")
    parser.add_argument("--child", choices=READERS, help=argparse.SUPPRESS)
    parser.add_argument("--tsv", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    return parser.parse_args()


def cpu_model() -> str:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    fields = dict(line.split(":", 1) for line in lscpu.splitlines() if ":" in line)
    name = fields.get("Model name", "unknown CPU").strip()
    flags = fields.get("Flags", "").split()
    vector = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    vector += " VNNI" if "avx512_vnni" in flags else ""
    return f"{name}, {os.cpu_count()} logical CPUs, {vector}"


# --------------------------------------------------------------------------------------------
# Official layout: whole-track files


def write_official_layout(workdir: str, n_tracks: int) -> tuple[str, str]:
    """`n_tracks` distinct whole-track melspecs at ROOT/NN/ID.npy and their TSV; (tsv, root)."""
    from tfmood.data.tags import MOODTHEME_TAGS

    rng = np.random.default_rng(SEED)
    root = os.path.join(workdir, "melspecs")
    lines = ["TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS"]
    for number in tqdm(range(n_tracks), desc="whole-track melspecs"):
        frames = int(np.clip(rng.normal(MEAN_FRAMES, 2500), 2000, 30000))
        relative = f"{number % 100:02d}/{number}"
        path = os.path.join(root, relative + ".npy")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        np.save(path, rng.normal(-40.0, 15.0, (96, frames)).astype(np.float32))
        tag = MOODTHEME_TAGS[number % len(MOODTHEME_TAGS)]
        lines.append(
            f"track_{number:07d}\tartist_{number:06d}\talbum_{number:06d}\t{relative}.mp3"
            f"\t{frames * 256 / 12000:.1f}\tmood/theme---{tag}"
        )
    tsv = os.path.join(workdir, "official.tsv")
    with open(tsv, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    return tsv, root


def drop_from_page_cache(root: str) -> None:
    """Ask the kernel to forget the cached pages of every file under `root`."""
    for folder, _, names in os.walk(root):
        for name in names:
            descriptor = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(descriptor)


def full_read_dataset(tsv: str, root: str):
    """The former reader: whole files checked in the pre-pass and read whole by the dataset."""
    import tensorflow as tf

    from tfmood.data.config import DataConfig
    from tfmood.data.metadata import label_matrix, read_split
    from tfmood.data.pipeline import finish_dataset
    from tfmood.data.validation import check_mel, file_path

    config = DataConfig(batch_size=BATCH_SIZE, n_frames=N_FRAMES, seed=SEED, cache=False)
    tracks = read_split(tsv)
    paths = [file_path(track, root, "npy") for track in tracks]
    offsets = []
    for path in tqdm(paths, desc="checking npy (whole files)"):
        with open(path, "rb") as handle:
            data = handle.read()
        mel = np.load(path, allow_pickle=False)
        check_mel(mel)
        offsets.append(len(data) - mel.nbytes)

    def load(path, offset, labels, track_id):
        body = tf.strings.substr(tf.io.read_file(path), tf.cast(offset, tf.int32), tf.int32.max)
        mel = tf.reshape(tf.io.decode_raw(body, tf.float32), [96, -1])
        return mel, labels, track_id

    table = tf.data.Dataset.from_tensor_slices(
        (paths, np.array(offsets), label_matrix(tracks).astype(np.float32),
         [t.track_id for t in tracks])
    )  # fmt: skip
    examples = table.map(load, num_parallel_calls=tf.data.AUTOTUNE)
    return finish_dataset(examples, config, training=True)


def partial_read_dataset(tsv: str, root: str):
    from tfmood.data.pipeline import make_dataset

    return make_dataset(
        tsv, root, training=True, batch_size=BATCH_SIZE, n_frames=N_FRAMES, seed=SEED,
        cache=False, progress=False,
    )  # fmt: skip


def epoch_examples_per_second(dataset) -> float:
    started, examples = time.perf_counter(), 0
    for mel, _ in dataset:
        examples += int(mel.shape[0])
    return examples / (time.perf_counter() - started)


def run_child(args) -> None:
    """One reader in this process: pre-pass, cold-ish epoch, warm epoch, peak RSS (JSON out)."""
    import tensorflow as tf

    tf.constant(0.0)  # start TensorFlow's runtime before timing
    drop_from_page_cache(args.root)
    started = time.perf_counter()
    build = partial_read_dataset if args.child == "partial" else full_read_dataset
    dataset = build(args.tsv, args.root)
    prepass = time.perf_counter() - started
    drop_from_page_cache(args.root)
    cold = epoch_examples_per_second(dataset)
    warm = clips_per_second(dataset, n_batches=4 * args.official_tracks // BATCH_SIZE, warmup=8)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"prepass_s": prepass, "cold": cold, "warm": warm, "peak_mb": peak}))


def measure_official(tsv: str, root: str, n_tracks: int) -> dict:
    results = {}
    for reader in READERS:
        command = [sys.executable, __file__, "--child", reader, "--tsv", tsv, "--root", root]
        command += ["--official-tracks", str(n_tracks)]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        results[reader] = json.loads(done.stdout.strip().splitlines()[-1])
    return results


# --------------------------------------------------------------------------------------------
# Synthetic corpus: every source


def build_corpus(workdir: str, n_tracks: int, seconds: float) -> tuple:
    """Synthetic WAVs, their .npy melspecs and TFRecord shards; returns (tsv, roots by source)."""
    from tfmood.data.metadata import read_split
    from tfmood.data.shards import write_shards
    from tfmood.data.synth import generate_corpus
    from tfmood.data.validation import audio_mel

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


def measure_synthetic(tsv: str, roots: dict, args) -> list:
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


# --------------------------------------------------------------------------------------------
# Training consumption and the report


def training_examples_per_second(n_steps: int) -> float:
    """Examples per second of the float32 baseline step of `tfmood train` (batch 16, 96 x 1400)."""
    import keras
    from bench_training import median_seconds, random_batch, training_step

    from tfmood.train.fit import TrainConfig, build_and_compile

    keras.utils.set_random_seed(SEED)
    model = build_and_compile(TrainConfig(preset="baseline", batch_size=BATCH_SIZE))
    mel, labels = random_batch(BATCH_SIZE, N_FRAMES)
    seconds = median_seconds(training_step(model, mel, labels), warmup=1, steps=n_steps)
    return BATCH_SIZE / seconds


def gpu_examples_per_second(tflops: float) -> float:
    """Examples per second of a training step at `tflops` sustained: 3 x the forward FLOPs each."""
    from tfmood.models.complexity import preset_complexity

    return tflops * 1e12 / (3 * preset_complexity("baseline", N_FRAMES).gflops * 1e9)


def print_official(results: dict, n_tracks: int, cpu_rate: float, gpu_rate: float) -> None:
    print(
        f"\nOfficial layout: {n_tracks} whole-track melspecs (96 x ~{MEAN_FRAMES:,} float32, "
        f"~4 MB each), training pipeline, batch {BATCH_SIZE}, first {N_FRAMES} frames\n"
    )
    print(
        "| reader | pre-pass s | examples/s cold-ish | examples/s warm | x CPU step | "
        "x GPU step (est.) | peak RSS MB |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for reader in READERS:
        result = results[reader]
        name = "partial (first 1400 frames)" if reader == "partial" else "full read (former)"
        print(
            f"| {name} | {result['prepass_s']:.2f} | {result['cold']:,.0f} | "
            f"{result['warm']:,.0f} | {result['warm'] / cpu_rate:,.0f}x | "
            f"{result['warm'] / gpu_rate:.1f}x | {result['peak_mb']:,.0f} |"
        )


def main() -> None:
    args = parse_args()
    if args.child:
        run_child(args)
        return
    command = " ".join(["python3", *sys.argv])
    with tempfile.TemporaryDirectory(prefix="tfmood-bench-") as temp:
        workdir = args.workdir or temp
        tsv, root = write_official_layout(os.path.join(workdir, "official"), args.official_tracks)
        official = measure_official(tsv, root, args.official_tracks)
        synthetic = None
        if not args.no_synthetic:
            corpus = build_corpus(os.path.join(workdir, "synthetic"), args.tracks, args.seconds)
            synthetic = measure_synthetic(*corpus, args)
    cpu_rate = training_examples_per_second(args.steps)
    gpu_rate = gpu_examples_per_second(args.gpu_tflops)
    print(f"\nCPU: {cpu_model()}; {datetime.date.today()}; `{command}`")
    print(
        f"training step: float32 baseline, batch {BATCH_SIZE}: {cpu_rate:.2f} examples/s on "
        f"this CPU; GPU-class step estimated at {gpu_rate:,.0f} examples/s "
        f"({args.gpu_tflops:g} TFLOP/s assumed)"
    )
    print_official(official, args.official_tracks, cpu_rate, gpu_rate)
    if synthetic:
        print(f"\nSynthetic corpus: {args.tracks} tracks of {args.seconds:g} s (train split)\n")
        print("| source | clips/s | x CPU step | x GPU step (est.) |")
        print("|---|---:|---:|---:|")
        for name, rate in synthetic:
            print(f"| {name} | {rate:,.1f} | {rate / cpu_rate:,.0f}x | {rate / gpu_rate:.1f}x |")


if __name__ == "__main__":
    main()
