"""Training and inference throughput of the model presets, with XLA off and on.

For each preset, the model `tfmood.train.fit.build_and_compile` makes for `tfmood train` (Adam,
binary cross-entropy) runs the compiled training step of `fit` on random in-memory tensors (batch
16 of 96 x 1400 log-mel frames, so the input pipeline plays no part): a few warm-up steps (the
first one traces and, with XLA, compiles), then timed steps, reported as the median in samples
per second. (`train_on_batch` is not used: Keras 3.6 retraces its step on every call, about a
second each here, which would be timed as training.) The
same model's `predict_on_batch` at batch 16 gives the inference throughput. With `--blocks`, a
second table times each block of the network alone (spatial layer, BatchNorm, ELU, pool; forward
and backward in training mode at the input shape it sees in the network): where a training step
spends its time, and the 3x3 convolution against the local self-attention that replaces it.

Prints Markdown tables with the CPU model, the date and the load average before and after (the
machine may be shared: compare numbers taken under the same load).

    python3 bench/bench_training.py [--presets baseline sa3] [--steps 3] [--warmup 1]
                                    [--n-frames 1400] [--batch-size 16] [--blocks]
"""

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable

import numpy as np
from tqdm import tqdm

PRESETS = ("baseline", "sa3", "sa4", "sa5", "arelu", "sa3-arelu")
SEED = 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=PRESETS)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before them")
    parser.add_argument("--n-frames", type=int, default=1400, help="frames per example")
    parser.add_argument("--batch-size", type=int, default=16, help="examples per step")
    parser.add_argument("--blocks", action="store_true", help="also time each block alone")
    return parser.parse_args()


def machine() -> str:
    """CPU model, logical CPUs and library versions, for the table's caption."""
    import keras
    import tensorflow as tf

    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    fields = dict(line.split(":", 1) for line in lscpu.splitlines() if ":" in line)
    cpu = fields.get("Model name", platform.processor() or "unknown CPU").strip()
    return (
        f"{cpu}, {os.cpu_count()} logical CPUs; TensorFlow {tf.__version__}, "
        f"Keras {keras.__version__}"
    )


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def median_seconds(step: Callable[[], object], warmup: int, steps: int) -> float:
    """Median wall time of `steps` calls of `step` after `warmup` untimed ones.

    Args:
        step: one synchronous step (returns only when its work is done).
        warmup: untimed calls first (tracing, XLA compilation, caches).
        steps: timed calls.
    """
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def training_step(model, mel: np.ndarray, labels: np.ndarray) -> Callable[[], float]:
    """One training step as `fit` runs it, callable again and again without retracing.

    One `fit` step builds the optimizer and the compiled step function; the returned callable
    runs that function on a persistent iterator over the batch and returns the loss (reading
    it waits for the step to finish).
    """
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensors((mel, labels)).repeat()
    model.fit(dataset, steps_per_epoch=1, epochs=1, verbose=0)
    iterator = iter(dataset)
    return lambda: float(model.train_function(iterator)["loss"])


def random_batch(batch_size: int, n_frames: int) -> tuple:
    """Log-mel-like inputs (dB) and multi-hot labels (about 5% positives)."""
    rng = np.random.default_rng(SEED)
    mel = (rng.normal(-40.0, 20.0, (batch_size, 96, n_frames))).astype(np.float32)
    labels = (rng.random((batch_size, 56)) < 0.05).astype(np.float32)
    return mel, labels


def preset_throughput(preset: str, jit_compile: bool, batch: tuple, args) -> dict:
    """Training and inference samples per second of one preset, compiled as for training."""
    import keras

    from tfmood.train.fit import TrainConfig, build_and_compile

    keras.utils.set_random_seed(SEED)
    config = TrainConfig(preset=preset, batch_size=args.batch_size, n_frames=args.n_frames,
                         jit_compile=jit_compile)  # fmt: skip
    model = build_and_compile(config)
    mel, labels = batch
    train = median_seconds(training_step(model, mel, labels), args.warmup, args.steps)
    predict = median_seconds(lambda: model.predict_on_batch(mel), args.warmup, args.steps)
    keras.backend.clear_session()
    return {"train": args.batch_size / train, "predict": args.batch_size / predict}


def block_input_shapes(n_frames: int) -> list[tuple]:
    """(height, width, channels) that each block of the network sees."""
    from tfmood.models.vggish import BLOCK_FILTERS, BLOCK_POOLS

    height, width, channels, shapes = 96, n_frames, 1, []
    for filters, (pool_h, pool_w) in zip(BLOCK_FILTERS, BLOCK_POOLS):
        shapes.append((height, width, channels))
        height, width, channels = height // pool_h, width // pool_w, filters
    return shapes


def make_block(block: int, layer: str):
    """Block `block` of the network as in `tfmood.models.vggish`: spatial layer, BatchNorm, ELU, pool."""
    import keras

    from tfmood.models.vggish import (
        BLOCK_FILTERS,
        BLOCK_LAYERS,
        BLOCK_POOLS,
        BN_EPSILON,
        BN_MOMENTUM,
        VGGishConfig,
    )

    pool = BLOCK_POOLS[block - 1]
    return keras.Sequential([
        BLOCK_LAYERS[layer](BLOCK_FILTERS[block - 1], VGGishConfig(), f"{layer}_{block}"),
        keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM),
        keras.layers.ELU(),
        keras.layers.MaxPooling2D(pool) if block < 5 else keras.layers.GlobalMaxPooling2D(),
    ])  # fmt: skip


def block_seconds(block, shape: tuple, jit_compile: bool, args) -> float:
    """Median seconds of one training-mode forward + backward pass of `block`."""
    import tensorflow as tf

    x = tf.random.stateless_normal((args.batch_size, *shape), seed=(SEED, 1))
    block.build(x.shape)
    # A random upstream gradient as an argument: with a constant one (the gradient of a plain
    # sum) XLA spends its compile time constant-folding the convolution's backward pass.
    upstream = tf.random.stateless_normal(block.compute_output_shape(x.shape), seed=(SEED, 2))

    @tf.function(jit_compile=jit_compile)
    def forward_backward(inputs, output_gradient):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            loss = tf.reduce_sum(block(inputs, training=True) * output_gradient)
        return tape.gradient(loss, [inputs, *block.trainable_variables])

    def step():
        return [gradient.numpy() for gradient in forward_backward(x, upstream)]

    return median_seconds(step, args.warmup, args.steps)


def block_rows(args) -> list[str]:
    """Each block with its convolution, and blocks 3 to 5 with attention, XLA off and on."""
    rows = []
    shapes = block_input_shapes(args.n_frames)
    jobs = [(block, layer) for block in range(1, 6) for layer in ("conv", "attention")]
    times = {}
    for block, layer in tqdm(jobs, desc="blocks"):
        if layer == "attention" and block < 3:
            continue  # 9 shifted copies of a 96 x 1400 x 64 map: gigabytes, never used
        for jit in (False, True):
            times[block, layer, jit] = block_seconds(
                make_block(block, layer), shapes[block - 1], jit, args
            )
    conv_total = sum(times[block, "conv", False] for block in range(1, 6))

    def cell(block, layer, jit):
        return f"{1000 * times[block, layer, jit]:.0f}" if (block, layer, jit) in times else "-"

    for block in range(1, 6):
        shape = shapes[block - 1]
        ratio = (
            f"{times[block, 'attention', False] / times[block, 'conv', False]:.1f}x"
            if (block, "attention", False) in times
            else "-"
        )
        rows.append(
            f"| {block} | {shape[0]} x {shape[1]} x {shape[2]} "
            f"| {cell(block, 'conv', False)} | {cell(block, 'conv', True)} "
            f"| {100 * times[block, 'conv', False] / conv_total:.0f}% "
            f"| {cell(block, 'attention', False)} | {cell(block, 'attention', True)} | {ratio} |"
        )
    return rows


def main() -> None:
    args = parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    started = datetime.datetime.now().astimezone()
    load_before = load_average()
    batch = random_batch(args.batch_size, args.n_frames)
    results = {}
    jobs = [(preset, jit) for preset in args.presets for jit in (False, True)]
    for preset, jit in tqdm(jobs, desc="presets"):
        results[preset, jit] = preset_throughput(preset, jit, batch, args)
    blocks = block_rows(args) if args.blocks else []

    print(f"\n{machine()}")
    print(
        f"{started:%Y-%m-%d %H:%M %Z}; load average (1, 5, 15 min) {load_before} before, "
        f"{load_average()} after; batch {args.batch_size} of 96 x {args.n_frames}; "
        f"median of {args.steps} steps after {args.warmup} warm-up\n"
    )
    print("| preset | train, samples/s | train, XLA | XLA gain | predict, samples/s "
          "| predict, XLA |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|")
    for preset in args.presets:
        plain, xla = results[preset, False], results[preset, True]
        print(
            f"| {preset} | {plain['train']:.2f} | {xla['train']:.2f} "
            f"| {xla['train'] / plain['train']:.2f}x | {plain['predict']:.2f} "
            f"| {xla['predict']:.2f} |"
        )
    if blocks:
        caption = (
            "\nOne block (spatial layer, BatchNorm, ELU, pool), training-mode forward and "
            "backward, ms per batch;\nshare: of the five convolution blocks together:\n"
        )
        print(caption)
        print("| block | input | conv | conv, XLA | share | attention | attention, XLA "
              "| attention / conv |")  # fmt: skip
        print("|---|---|---:|---:|---:|---:|---:|---:|")
        print("\n".join(blocks))


if __name__ == "__main__":
    main()
