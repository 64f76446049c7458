"""TFLite cost of block 3: the attention that replaces the conv, alone and inside the model.

Two comparisons, each timed in interleaved rounds on one thread (LiteRT's interpreter through
`tfmood.deploy.runtime`, default XNNPACK delegate), thread CPU time in ms:

- alone: a 3x3 conv + (2, 4) max pool against `tfmood.deploy.fold.ExportLocalSelfAttention` with the
  pool fused, on the paper's block-3 input (24 x 87 x 128), and the attention's parts: its q/k/v
  projection alone, and the attention cut after the max of the 9 logits and after the 9 softmax
  weights (cumulative: each includes the parts before it);
- in the model: the rewritten baseline and sa3 (96 x 1400 input, random weights) cut after
  block 2 and after block 3, so the difference of the cuts is the block's cost with real
  neighbours (quantisation scales calibrated through the whole front of the model).

For each model: median / min, and the median over rounds of its time minus the first model's
in the same round. Then, per target, the attention's TFLite ops by type: how many, and the
values they write in passes over the 24 x 87 x 128 map. Prints Markdown.

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


def attention_up_to(stage: str):
    """`ExportLocalSelfAttention` cut after a stage of its strips: "max" (the 9 logits and their
    maximum) or "exp" (also the 9 softmax weights and their sum); the last tensor of the stage,
    max-pooled like the output, is what the model returns."""
    from tfmood.deploy.fold import ExportLocalSelfAttention

    class AttentionUpTo(ExportLocalSelfAttention):
        def _strip(self, qkv, top, rows, width):
            logits, _ = self._neighbours(qkv, top, rows, width)
            top_logit = self._max(logits)
            if stage == "max":
                return top_logit
            weights = self._weights(logits, top_logit)
            total = weights[0]
            for weight in weights[1:]:
                total = total + weight
            return total

    return AttentionUpTo


def block_models(target: str) -> dict:
    """Block 3 alone: conv, projection, attention up to each stage (random weights)."""
    import keras

    from tfmood.deploy.convert import convert
    from tfmood.deploy.fold import ExportLocalSelfAttention

    rng = np.random.default_rng(SEED)
    mode = "int8" if target == "int8" else "float"
    inputs = keras.Input((HEIGHT, WIDTH, CHANNELS), batch_size=1)
    full = ExportLocalSelfAttention(CHANNELS, mode=mode, pool_size=(2, 4))
    full.build(inputs.shape)
    full.set_weights([rng.normal(0, 0.1, w.shape).astype("float32") for w in full.weights])

    def attention(layer_class):
        layer = layer_class(CHANNELS, mode=mode, pool_size=(2, 4))
        layer.build(inputs.shape)
        layer.set_weights(full.get_weights())
        return keras.Model(inputs, layer(inputs))

    projection = keras.layers.Conv2D(3 * CHANNELS, 1, use_bias=False)
    projected = projection(inputs)
    projection.set_weights([np.asarray(full.qkv_kernel)])
    conv = keras.layers.Conv2D(CHANNELS, 3, padding="same")(inputs)
    models = {
        "conv 3x3 + pool": keras.Model(inputs, keras.layers.MaxPooling2D((2, 4))(conv)),
        "attention + pool": attention(ExportLocalSelfAttention),
        "attention's q/k/v projection": keras.Model(inputs, projected),
        "attention up to max(logits)": attention(attention_up_to("max")),
        "attention up to sum(exp)": attention(attention_up_to("exp")),
    }
    calibration = rng.normal(size=(4, 1, HEIGHT, WIDTH, CHANNELS)).astype("float32")
    representative = lambda: ([example] for example in calibration)  # noqa: E731
    return {name: convert(model, target, representative, rewrite=False)
            for name, model in models.items()}  # fmt: skip


def model_cuts(target: str) -> dict:
    """The rewritten baseline and sa3, cut after block 2 and after block 3."""
    import keras

    from tfmood.deploy.convert import convert, representative_dataset
    from tfmood.deploy.fold import inference_model
    from tfmood.models.vggish import build_model

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


def census(flatbuffer: bytes) -> list:
    """[(op type, count, values written / map size)] of a TFLite model, most written first."""
    import collections

    from tfmood.deploy.runtime import op_details

    counts, volumes = collections.Counter(), collections.Counter()
    for op in op_details(flatbuffer):
        counts[op["op_name"]] += 1
        volumes[op["op_name"]] += sum(int(np.prod(tensor["shape"])) for tensor in op["outputs"])
    size = HEIGHT * WIDTH * CHANNELS
    return sorted(((name, counts[name], volumes[name] / size) for name in counts),
                  key=lambda row: -row[2])  # fmt: skip


def main() -> None:
    args = parse_args()
    load = os.getloadavg()[0]
    print("| target | model | median ms | min ms | minus the first, per round (median) |")
    print("|---|---|---|---|---|")
    censuses = {}
    for target in args.targets:
        blocks = block_models(target)
        censuses[target] = census(blocks["attention + pool"])
        for flatbuffers in (blocks, model_cuts(target)):
            for name, median, minimum, paired in time_paired(flatbuffers, args.rounds):
                print(f"| {target} | {name} | {median:.2f} | {minimum:.2f} | {paired:+.2f} |")
    for target, rows in censuses.items():
        print(f"\n{target} attention's ops:\n\n| op | count | map passes written |\n|---|---|---|")
        for name, count, passes in rows:
            print(f"| {name} | {count} | {passes:.1f} |")
    print(f"\n{args.rounds} interleaved rounds; load average {load:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after")  # fmt: skip


if __name__ == "__main__":
    main()
