"""TFLite cost of block 3: the attention that replaces the conv, alone and inside the model.

Two comparisons, each timed in interleaved rounds on one thread (`tf.lite.Interpreter(
num_threads=1)`, default XNNPACK delegate), thread CPU time in ms:

- alone: a 3x3 conv + (2, 4) max pool against `tfmood.fold.ExportLocalSelfAttention` with the
  pool fused, and its q/k/v projection alone, on the paper's block-3 input (24 x 87 x 128);
- in the model: the rewritten baseline and sa3 (96 x 1400 input, random weights) cut after
  block 2 and after block 3, so the difference of the cuts is the block's cost with real
  neighbours (quantisation scales calibrated through the whole front of the model).

For each model: median / min, and the median over rounds of its time minus the first model's
in the same round. Prints Markdown.

    python3 bench/bench_tflite_block.py [--rounds 150] [--targets float32 int8]
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

HEIGHT, WIDTH, CHANNELS = 24, 87, 128  # block 3 of the paper's 96 x 1400 input
SEED = 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=150)
    parser.add_argument("--targets", nargs="+", default=["float32", "int8"])
    return parser.parse_args()


def block_models(target: str) -> dict:
    """Block 3 alone: conv, attention, projection only (random weights)."""
    import keras

    from tfmood.export import convert
    from tfmood.fold import ExportLocalSelfAttention

    rng = np.random.default_rng(SEED)
    mode = "int8" if target == "int8" else "float"

    def attention(projection_only: bool):
        inputs = keras.Input((HEIGHT, WIDTH, CHANNELS), batch_size=1)
        layer = ExportLocalSelfAttention(CHANNELS, mode=mode, pool_size=(2, 4))
        layer.build(inputs.shape)
        layer.set_weights([rng.normal(0, 0.1, w.shape).astype("float32") for w in layer.weights])
        if not projection_only:
            return keras.Model(inputs, layer(inputs))
        projection = keras.layers.Conv2D(3 * CHANNELS, 1, use_bias=False)
        outputs = projection(inputs)
        projection.set_weights([np.asarray(layer.qkv_kernel)])
        return keras.Model(inputs, outputs)

    inputs = keras.Input((HEIGHT, WIDTH, CHANNELS), batch_size=1)
    conv = keras.layers.Conv2D(CHANNELS, 3, padding="same")(inputs)
    models = {
        "conv 3x3 + pool": keras.Model(inputs, keras.layers.MaxPooling2D((2, 4))(conv)),
        "attention + pool": attention(False),
        "attention's q/k/v projection": attention(True),
    }
    calibration = rng.normal(size=(4, 1, HEIGHT, WIDTH, CHANNELS)).astype("float32")
    representative = lambda: ([example] for example in calibration)  # noqa: E731
    return {name: convert(model, target, representative, rewrite=False)
            for name, model in models.items()}  # fmt: skip


def model_cuts(target: str) -> dict:
    """The rewritten baseline and sa3, cut after block 2 and after block 3."""
    import keras

    from tfmood.export import convert, representative_dataset
    from tfmood.fold import inference_model
    from tfmood.models import build_model

    rng = np.random.default_rng(SEED)
    calibration = rng.normal(-40.0, 20.0, (4, 96, 1400)).astype(np.float32)
    mode = "int8" if target == "int8" else "float"
    flatbuffers = {}
    for preset, cut in (("baseline", "act_2"), ("baseline", "act_3"), ("sa3", "act_3")):
        keras.utils.set_random_seed(SEED)
        graph = inference_model(build_model(preset, n_frames=1400), mode, 1400)
        graph = keras.Model(graph.inputs, graph.get_layer(cut).output)
        flatbuffers[f"{preset} up to {cut}"] = convert(
            graph, target, representative_dataset(calibration), rewrite=False
        )
    return flatbuffers


def time_paired(flatbuffers: dict, rounds: int) -> list:
    """[(name, median, min, median paired difference to the first)] in ms."""
    from bench_tflite_latency import time_interleaved  # same folder: shared timing loop

    times = {name: entry["cpu"] for name, entry in time_interleaved(flatbuffers, rounds).items()}
    first = next(iter(times.values()))
    return [(name, np.median(t), np.min(t), np.median(t - first)) for name, t in times.items()]


def main() -> None:
    args = parse_args()
    load = os.getloadavg()[0]
    print("| target | model | median ms | min ms | minus the first, per round (median) |")
    print("|---|---|---|---|---|")
    for target in args.targets:
        for flatbuffers in (block_models(target), model_cuts(target)):
            for name, median, minimum, paired in time_paired(flatbuffers, args.rounds):
                print(f"| {target} | {name} | {median:.2f} | {minimum:.2f} | {paired:+.2f} |")
    print(f"\n{args.rounds} interleaved rounds; load average {load:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after")  # fmt: skip


if __name__ == "__main__":
    main()
