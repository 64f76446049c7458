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

`--precisions float32 mixed_bfloat16` times each preset under each `TrainConfig.precision`
(mixed_bfloat16 is fast only on CPUs with AVX-512 BF16 or AMX); `--jit off` skips the XLA runs.

`--against-torch PYTHON` also times the paper's PyTorch training step (`bench_torch_step.py`, run
by PYTHON, an interpreter with torch) on the same batch shape and thread count, in rounds that
alternate with the Keras step of the baseline (float32, or the first of `--precisions`), and
prints both and their ratio per round: the two are compared in the same run, under the same load.

Prints Markdown tables with the CPU model, the date and the load average before and after (the
machine may be shared: compare numbers taken under the same load).

    python3 bench/bench_training.py [--presets baseline sa3] [--steps 3] [--warmup 1]
                                    [--n-frames 1400] [--batch-size 16] [--blocks]
                                    [--precisions float32 mixed_bfloat16] [--jit both|off|on]
                                    [--threads N] [--against-torch PYTHON --rounds 5]
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np
from tqdm import tqdm

PRESETS = ("baseline", "sa3", "sa4", "sa5", "arelu", "sa3-arelu")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
JIT_MODES = {"both": (False, True), "off": (False,), "on": (True,)}
TORCH_STEP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench_torch_step.py")
SEED = 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=PRESETS)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before them")
    parser.add_argument("--n-frames", type=int, default=1400, help="frames per example")
    parser.add_argument("--batch-size", type=int, default=16, help="examples per step")
    parser.add_argument("--blocks", action="store_true", help="also time each block alone")
    parser.add_argument("--precisions", nargs="+", default=["float32"], choices=PRECISIONS,
                        help="TrainConfig.precision values to time")  # fmt: skip
    parser.add_argument("--jit", default="both", choices=sorted(JIT_MODES),
                        help="time the step without XLA, with it, or both")  # fmt: skip
    parser.add_argument("--threads", type=int, default=None,
                        help="intra-op threads of TensorFlow and torch (default: TF's own)")  # fmt: skip
    parser.add_argument("--against-torch", metavar="PYTHON",
                        help="interpreter with torch that runs bench_torch_step.py")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds with torch")
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


def compiled_model(preset: str, jit_compile: bool, precision: str, args):
    """The model `tfmood train` builds for a preset, seeded."""
    import keras

    from tfmood.train.fit import TrainConfig, build_and_compile

    keras.utils.set_random_seed(SEED)
    config = TrainConfig(preset=preset, batch_size=args.batch_size, n_frames=args.n_frames,
                         jit_compile=jit_compile, precision=precision)  # fmt: skip
    return build_and_compile(config)


def preset_throughput(preset: str, jit_compile: bool, precision: str, batch: tuple, args) -> dict:
    """Training and inference samples per second of one preset, compiled as for training."""
    import keras

    model = compiled_model(preset, jit_compile, precision, args)
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

    from tfmood.layers import SyncBatchNormalization
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
        SyncBatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM),
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


def torch_step_server(python: str, args) -> subprocess.Popen:
    """`bench_torch_step.py --serve` under `python`, warmed up (it has printed "ready")."""
    command = [python, TORCH_STEP, "--serve", "--batch-size", str(args.batch_size),
               "--n-frames", str(args.n_frames), "--warmup", str(args.warmup)]  # fmt: skip
    if args.threads:
        command += ["--threads", str(args.threads)]
    server = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = server.stdout.readline().strip()
    if line != "ready":
        server.kill()
        sys.exit(f"{TORCH_STEP} under {python} did not start (said {line!r})")
    return server


def torch_step_seconds(server: subprocess.Popen, steps: int) -> list:
    """Wall seconds of `steps` PyTorch training steps, run by the server."""
    server.stdin.write(f"STEPS {steps}\n")
    server.stdin.flush()
    answer = json.loads(server.stdout.readline())
    if isinstance(answer, dict):
        sys.exit(f"{TORCH_STEP}: {answer['error']}")
    return answer


def against_torch(batch: tuple, args) -> list:
    """(Keras seconds, torch seconds) of the baseline's training step, one pair per round.

    Each round times `args.steps` Keras steps, then as many PyTorch steps; both models stay
    built and warm across rounds, and neither runs while the other is timed.
    """
    server = torch_step_server(args.against_torch, args)
    try:
        model = compiled_model("baseline", args.jit == "on", args.precisions[0], args)
        step = training_step(model, *batch)
        for _ in range(args.warmup):
            step()
        rounds = []
        for _ in tqdm(range(args.rounds), desc="rounds against torch"):
            keras_seconds = [median_seconds(step, 0, 1) for _ in range(args.steps)]
            rounds.append((keras_seconds, torch_step_seconds(server, args.steps)))
    finally:
        if server.poll() is None:
            server.stdin.write("QUIT\n")
            server.stdin.close()
            server.wait(timeout=60)
    return rounds


def torch_versions(python: str) -> str:
    code = "import torch; print(torch.__version__, torch.get_num_threads())"
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout
    version, threads = out.split()
    return f"torch {version} ({threads} threads by default)"


def print_torch_table(rounds: list, args) -> None:
    xla = "XLA" if args.jit == "on" else "no XLA"
    print(f"\nbaseline training step, Keras ({args.precisions[0]}, {xla}) against PyTorch "
          f"(Adam 1e-4, BCE), {args.steps} steps of each per round; "
          f"{torch_versions(args.against_torch)}:\n")  # fmt: skip
    print("| round | Keras step, s (median) | PyTorch step, s (median) | Keras / PyTorch |")
    print("|---|---:|---:|---:|")
    for number, (keras_seconds, torch_seconds) in enumerate(rounds, start=1):
        mine, theirs = statistics.median(keras_seconds), statistics.median(torch_seconds)
        print(f"| {number} | {mine:.2f} | {theirs:.2f} | {mine / theirs:.2f}x |")
    mine = statistics.median([t for keras_seconds, _ in rounds for t in keras_seconds])
    theirs = statistics.median([t for _, torch_seconds in rounds for t in torch_seconds])
    ratios = [statistics.median(k) / statistics.median(t) for k, t in rounds]
    print(f"| all | {mine:.2f} | {theirs:.2f} | {mine / theirs:.2f}x "
          f"(per-round median {statistics.median(ratios):.2f}x) |")  # fmt: skip


def print_throughput_table(results: dict, args) -> None:
    print("| preset | precision | train, samples/s | train, XLA | XLA gain | predict, samples/s "
          "| predict, XLA |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|")

    def cell(result, key):
        return f"{result[key]:.2f}" if result else "-"

    for preset in args.presets:
        for precision in args.precisions:
            plain = results.get((preset, precision, False))
            xla = results.get((preset, precision, True))
            gain = f"{xla['train'] / plain['train']:.2f}x" if plain and xla else "-"
            print(f"| {preset} | {precision} | {cell(plain, 'train')} | {cell(xla, 'train')} "
                  f"| {gain} | {cell(plain, 'predict')} | {cell(xla, 'predict')} |")  # fmt: skip


def main() -> None:
    args = parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    started = datetime.datetime.now().astimezone()
    load_before = load_average()
    batch = random_batch(args.batch_size, args.n_frames)
    results = {}
    if args.against_torch:
        rounds = against_torch(batch, args)
    else:
        jobs = [(preset, precision, jit) for preset in args.presets
                for precision in args.precisions for jit in JIT_MODES[args.jit]]  # fmt: skip
        for preset, precision, jit in tqdm(jobs, desc="presets"):
            results[preset, precision, jit] = preset_throughput(preset, jit, precision, batch,
                                                                args)  # fmt: skip
    blocks = block_rows(args) if args.blocks else []

    print(f"\n{machine()}")
    print(
        f"{started:%Y-%m-%d %H:%M %Z}; load average (1, 5, 15 min) {load_before} before, "
        f"{load_average()} after; batch {args.batch_size} of 96 x {args.n_frames}; "
        f"median of {args.steps} steps after {args.warmup} warm-up; "
        f"{args.threads or 'default'} intra-op threads\n"
    )
    if args.against_torch:
        print_torch_table(rounds, args)
    else:
        print_throughput_table(results, args)
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
