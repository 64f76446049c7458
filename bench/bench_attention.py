"""Training speed of LocalSelfAttention on CPU: the stacked-softmax formulation against the current.

"stacked" is the layer's previous formulation, kept here as the baseline: the k*k shifted keys
and values stacked into 5-D tensors, `softmax` over the neighbour axis, automatic
differentiation. "current" is `tfmood.layers.LocalSelfAttention` (running-max softmax over the
shifted slices, hand-written backward pass). Both run with the same weights in the same process,
alternating repetitions so that load on a shared machine hits both alike; the table gives the
median milliseconds, and the largest difference of outputs and gradients between the two.

Timed, with XLA off (the default of `tfmood train`):
- the layer alone (filters 64), forward + backward in a `tf.function`, gradients of the input
  and the five weights, on each `--shapes` input;
- one training step as `fit` runs it (Adam, binary cross-entropy; see bench_training.py's
  `training_step`) of the sa3 model
  `build_model("sa3", n_frames=None, width=(0.25, 0.25, 0.5, 1, 1), dropout=0.1)` on a
  `--batch-size` x 96 x `--n-frames` batch.

    python3 bench/bench_attention.py [--repeats 10] [--heads N] [--batch-size 16]
                                     [--n-frames 320] [--no-model]
"""

import argparse
import contextlib
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf
from bench_training import training_step  # noqa: E402  (beside this script)
from keras import ops

from tfmood.layers import LocalSelfAttention
from tfmood.models import vggish

SHAPES = ("16x24x20x64", "16x24x80x32")
FILTERS = 64
SEED = 0


class StackedLocalSelfAttention(LocalSelfAttention):
    """The previous formulation: 5-D stacks of neighbours and a softmax over their axis."""

    def call(self, inputs):
        k, pad = self.kernel_size, self.kernel_size // 2
        padding = [[0, 0], [pad, pad], [pad, pad], [0, 0]]
        last = k - 1

        def neighbours(padded):
            return [
                padded[:, row : (row - last) or None, col : (col - last) or None, :]
                for row in range(k)
                for col in range(k)
            ]

        query = ops.conv(inputs, self.query_kernel)
        keys = neighbours(ops.pad(ops.conv(inputs, self.key_kernel), padding))
        values = neighbours(ops.pad(ops.conv(inputs, self.value_kernel), padding))
        relative = [
            ops.concatenate([self.rel_h[:, row], self.rel_w[:, col]], axis=0)
            for row in range(k)
            for col in range(k)
        ]
        logits = [query * (key + rel) for key, rel in zip(keys, relative)]
        if self.heads is not None:
            size = self.filters // self.heads
            channel_head = ops.arange(self.filters) // size
            groups = ops.cast(
                ops.equal(channel_head[:, None], ops.arange(self.heads)[None, :]), "float32"
            )
            logits = [ops.matmul(logit, groups) for logit in logits]
        weights = ops.softmax(ops.stack(logits, axis=-1), axis=-1)
        if self.heads is not None:
            weights = ops.einsum("bhwnk,cn->bhwck", weights, groups)
        return ops.sum(weights * ops.stack(values, axis=-1), axis=-1)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES),
                        help="layer inputs as BxHxWxC")  # fmt: skip
    parser.add_argument("--heads", type=int, default=None,
                        help="attention heads (default: one per channel)")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=10, help="timed repetitions of each case")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--n-frames", type=int, default=320)
    parser.add_argument("--no-model", action="store_true", help="skip the whole-model step")
    return parser.parse_args()


def parse_shape(text: str) -> tuple:
    try:
        shape = tuple(int(part) for part in text.lower().split("x"))
    except ValueError:
        shape = ()
    if len(shape) != 4 or min(shape) < 1:
        raise SystemExit(f"--shapes: expected BxHxWxC with positive sizes, got {text!r}")
    return shape


def alternating_medians(steps: dict, repeats: int) -> dict:
    """Median seconds of each step, timed in turn (one untimed call of each first)."""
    for step in steps.values():
        step()
    times = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            started = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def layer_case(shape: tuple, heads, repeats: int) -> tuple:
    """(medians, largest output/gradient difference) of both layers on one input shape."""
    rng = np.random.default_rng(SEED)
    x = tf.constant(rng.normal(size=shape).astype("float32"))
    upstream = tf.constant(rng.normal(size=shape[:3] + (FILTERS,)).astype("float32"))
    current = LocalSelfAttention(FILTERS, heads=heads)
    stacked = StackedLocalSelfAttention(FILTERS, heads=heads)
    current.build(shape)
    stacked.build(shape)
    stacked.set_weights(current.get_weights())

    def forward_backward_of(layer):
        @tf.function
        def forward_backward(inputs, output_gradient):
            with tf.GradientTape() as tape:
                tape.watch(inputs)
                outputs = layer(inputs)
                loss = tf.reduce_sum(outputs * output_gradient)
            return [outputs, *tape.gradient(loss, [inputs, *layer.trainable_variables])]

        return lambda: [t.numpy() for t in forward_backward(x, upstream)]

    steps = {"stacked": forward_backward_of(stacked), "current": forward_backward_of(current)}
    difference = max(
        float(np.max(np.abs(a - b)) / max(1.0, float(np.max(np.abs(a)))))
        for a, b in zip(steps["stacked"](), steps["current"]())
    )
    return alternating_medians(steps, repeats), difference


@contextlib.contextmanager
def stacked_attention_blocks():
    """`vggish.build_model` builds its attention blocks with the stacked layer meanwhile."""
    factory = vggish.BLOCK_LAYERS["attention"]
    vggish.BLOCK_LAYERS["attention"] = lambda filters, config, name: StackedLocalSelfAttention(
        filters, kernel_size=3, heads=config.heads, name=name
    )
    try:
        yield
    finally:
        vggish.BLOCK_LAYERS["attention"] = factory


def model_case(args) -> dict:
    """Medians of one training step of the sa3 model, with each attention formulation."""
    settings = {"n_frames": None, "width": (0.25, 0.25, 0.5, 1, 1), "heads": args.heads,
                "dropout": 0.1}  # fmt: skip
    keras.utils.set_random_seed(SEED)
    current = vggish.build_model("sa3", **settings)
    with stacked_attention_blocks():
        stacked = vggish.build_model("sa3", **settings)
    stacked.set_weights(current.get_weights())
    rng = np.random.default_rng(SEED)
    mel = rng.normal(-40.0, 20.0, (args.batch_size, 96, args.n_frames)).astype("float32")
    labels = (rng.random((args.batch_size, 56)) < 0.05).astype("float32")
    steps = {}
    for name, model in (("stacked", stacked), ("current", current)):
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy",
                      jit_compile=False)  # fmt: skip
        steps[name] = training_step(model, mel, labels)
    return alternating_medians(steps, args.repeats)


def row(case: str, medians: dict, difference: str) -> str:
    stacked, current = medians["stacked"], medians["current"]
    return (
        f"| {case} | {1000 * stacked:.1f} | {1000 * current:.1f} | {stacked / current:.2f}x "
        f"| {difference} |"
    )


def main() -> None:
    args = parse_args()
    shapes = [parse_shape(text) for text in args.shapes]
    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} logical CPUs, XLA off, "
          f"heads={args.heads}, {args.repeats} repeats, load average "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}")  # fmt: skip
    print()
    print("| case | stacked (ms) | current (ms) | speed-up | max rel. difference |")
    print("|---|---:|---:|---:|---:|")
    for shape in shapes:
        medians, difference = layer_case(shape, args.heads, args.repeats)
        case = f"layer fwd+bwd {'x'.join(map(str, shape))} -> {FILTERS}"
        print(row(case, medians, f"{difference:.1e}"), flush=True)
    if not args.no_model:
        case = f"sa3 train step {args.batch_size}x96x{args.n_frames}"
        print(row(case, model_case(args), "-"), flush=True)
    print()
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
