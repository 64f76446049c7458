"""Validation ROC-AUC of float32 against mixed-precision training, after a short training run.

Generates a synthetic corpus (the demo's kind, smaller), writes its log-mel shards, then trains
each preset once per precision with `tfmood.train.fit.train` from the same seed and settings (the
demo's narrow widths and 320-frame inputs), and prints the validation macro ROC-AUC and PR-AUC of
the best epoch and the training time of each run. The runs go under `--out` and a finished one is
not trained again (`train` resumes), so an interrupted benchmark continues where it stopped.

Step throughput at the paper's input size is `bench_training.py --precisions float32
mixed_bfloat16`; this script measures what bf16 rounding does to what the models learn.

    python3 bench/bench_mixed_precision.py [--presets baseline sa3] [--tracks 600]
        [--seconds 8] [--epochs 6] [--precisions float32 mixed_bfloat16] [--out DIR]
"""

import argparse
import datetime
import os
import warnings

from bench_training import load_average, machine

DEMO_WIDTH = (0.25, 0.25, 0.5, 1.0, 1.0)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["baseline", "sa3"])
    parser.add_argument("--precisions", nargs="+", default=["float32", "mixed_bfloat16"])
    parser.add_argument("--tracks", type=int, default=600, help="synthetic tracks (70/15/15)")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of every track")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--n-frames", type=int, default=320)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0, help="seed of weights and shuffling")
    parser.add_argument("--corpus-seed", type=int, default=0, help="seed of the corpus")
    parser.add_argument("--out", default="/tmp/tfmood-bench-mixed-precision")
    return parser.parse_args()


def corpus(args) -> dict:
    """The split TSVs and shard directories of the synthetic corpus (made once under --out)."""
    from tfmood.data.shards import write_shards
    from tfmood.data.synth import generate_corpus

    name = f"corpus-{args.tracks}x{args.seconds:g}s-seed{args.corpus_seed}"
    root = os.path.join(args.out, name)
    info = generate_corpus(os.path.join(root, "synth"), args.tracks, args.seconds,
                           args.corpus_seed)  # fmt: skip
    shards = {}
    for split, tsv in info.split_paths.items():
        shards[split] = os.path.join(root, "shards", split)
        write_shards(tsv, info.audio_dir, shards[split], source="audio")  # resumes, or skips
    return {"tsv": info.split_paths, "shards": shards}


def run(preset: str, precision: str, data: dict, args):
    """One training run (or its finished result)."""
    from tfmood.train.fit import TrainConfig, train

    config = TrainConfig(
        preset=preset,
        train_tsv=data["tsv"]["train"],
        validation_tsv=data["tsv"]["validation"],
        train_root=data["shards"]["train"],
        validation_root=data["shards"]["validation"],
        source="tfrecord",
        out_dir=os.path.join(
            args.out,
            f"{preset}-{precision}-{args.epochs}ep-seed{args.seed}-corpus{args.corpus_seed}",
        ),
        epochs=args.epochs,
        n_frames=args.n_frames,
        batch_size=args.batch_size,
        width=DEMO_WIDTH,
        seed=args.seed,
        precision=precision,
        tensorboard=False,
        verbose=2,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # emulated bf16: slow, still measured
        return train(config)


def main() -> None:
    args = parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    started = datetime.datetime.now().astimezone()
    load_before = load_average()
    data = corpus(args)
    results = {(preset, precision): run(preset, precision, data, args)
               for preset in args.presets for precision in args.precisions}  # fmt: skip

    print(f"\n{machine()}")
    print(
        f"{started:%Y-%m-%d %H:%M %Z}; load average (1, 5, 15 min) {load_before} before, "
        f"{load_average()} after; {args.tracks} synthetic tracks x {args.seconds:g} s "
        f"(70/15/15), {args.epochs} epochs, batch {args.batch_size} of 96 x {args.n_frames}, "
        f"width {','.join(f'{w:g}' for w in DEMO_WIDTH)}, seed {args.seed}, "
        f"corpus seed {args.corpus_seed}\n"
    )
    print("| preset | precision | val ROC-AUC | val PR-AUC | best epoch | training, s |")
    print("|---|---|---:|---:|---:|---:|")
    for (preset, precision), result in results.items():
        print(f"| {preset} | {precision} | {result.val_roc_auc:.4f} | {result.val_pr_auc:.4f} "
              f"| {result.best_epoch} | {result.train_seconds:.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
