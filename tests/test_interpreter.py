"""tfmood.deploy.runtime: the LiteRT runtime, running float32 and int8 models, latency, delegation."""

import re
from pathlib import Path

import keras
import numpy as np
import pytest

from tfmood.deploy import runtime
from tfmood.deploy.convert import convert, representative_dataset

REPO = Path(__file__).resolve().parents[1]


def tiny_model(seed=0):
    """(batch, 6, 8) -> conv, relu, global pool, dense, sigmoid: 5 scores."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6, 8), batch_size=1)
    x = keras.layers.Reshape((6, 8, 1))(inputs)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(5, activation="sigmoid")(x)
    return keras.Model(inputs, outputs)


def batch(count, seed=1):
    return np.random.default_rng(seed).normal(0, 1, (count, 6, 8)).astype(np.float32)


@pytest.fixture(scope="module")
def models():
    model = tiny_model()
    flatbuffers = {
        "float32": convert(model, "float32", rewrite=False),
        "int8": convert(model, "int8", representative_dataset(batch(16, seed=2)), rewrite=False),
    }
    return model, flatbuffers


@pytest.mark.parametrize("kernels", runtime.KERNELS)
def test_float32_model_matches_keras_with_every_kernel_set(models, kernels):
    model, flatbuffers = models
    x = batch(4)
    outputs = runtime.run(flatbuffers["float32"], x, kernels=kernels)
    assert outputs.dtype == np.float32 and outputs.shape == (4, 5)
    np.testing.assert_allclose(outputs, model(x), atol=1e-5)


def test_int8_model_is_quantised_and_dequantised(models):
    model, flatbuffers = models
    flatbuffer = flatbuffers["int8"]
    details = runtime.io_details(flatbuffer)
    (inputs,), (outputs,) = details["inputs"], details["outputs"]
    assert inputs["dtype"] == outputs["dtype"] == "int8"
    assert inputs["shape"] == [1, 6, 8] and outputs["shape"] == [1, 5]
    assert outputs["quantization"] == {"scale": 1 / 256, "zero_point": -128}  # a sigmoid output
    x = batch(6)
    scores = runtime.run(flatbuffer, x)
    assert scores.dtype == np.float32 and scores.shape == (6, 5)
    # Dequantised int8 sigmoid scores: multiples of 1/256, within a few steps of Keras.
    np.testing.assert_allclose(scores * 256, np.round(scores * 256), atol=1e-4)
    np.testing.assert_allclose(scores, model(x), atol=4 / 256)
    # Raw mode: int8 in, int8 out; the same numbers as quantising and dequantising by hand.
    quantized = runtime.quantize(x, inputs)
    scale, zero_point = inputs["quantization"]["scale"], inputs["quantization"]["zero_point"]
    expected = np.clip(np.round(x / scale) + zero_point, -128, 127).astype(np.int8)
    np.testing.assert_array_equal(quantized, expected)
    raw = runtime.run(flatbuffer, quantized, raw=True)
    assert raw.dtype == np.int8 and raw.shape == (6, 5)
    np.testing.assert_array_equal(runtime.dequantize(raw, outputs), scores)
    np.testing.assert_allclose(runtime.dequantize(raw, outputs), (raw + 128.0) / 256)


def test_reference_kernels_run_int8_within_a_step_of_the_delegate(models):
    _, flatbuffers = models
    x = runtime.quantize(batch(6), runtime.io_details(flatbuffers["int8"])["inputs"][0])
    runs = {k: runtime.run(flatbuffers["int8"], x, kernels=k, raw=True).astype(np.int32)
            for k in runtime.KERNELS}  # fmt: skip
    assert np.abs(runs["reference"] - runs["default"]).max() <= 1
    assert np.abs(runs["reference"] - runs["builtin"]).max() <= 1


def test_quantize_and_dequantize_use_the_tensor_parameters():
    detail = {"dtype": np.int8, "quantization": (0.5, -3)}
    values = np.array([-100.0, -1.0, 0.0, 0.26, 1.0, 100.0], dtype=np.float32)
    quantized = runtime.quantize(values, detail)
    np.testing.assert_array_equal(quantized, [-128, -5, -3, -2, -1, 127])
    np.testing.assert_allclose(runtime.dequantize(quantized, detail),
                               [-62.5, -1.0, 0.0, 0.5, 1.0, 65.0])  # fmt: skip
    # io_details' form of the parameters; a float tensor is only cast.
    as_dict = {"dtype": "int8", "quantization": {"scale": 0.5, "zero_point": -3}}
    np.testing.assert_array_equal(runtime.quantize(values, as_dict), quantized)
    floats = runtime.quantize(values, {"dtype": np.float32, "quantization": (0.0, 0)})
    np.testing.assert_array_equal(floats, values)


def test_unknown_kernels_are_refused(models):
    with pytest.raises(ValueError, match="default, builtin, reference"):
        runtime.make_interpreter(models[1]["float32"], kernels="gpu")


def test_latency_reports_both_clocks(models):
    latency = runtime.measure_latency(models[1]["float32"], runs=3, warmup=1)
    assert latency["runs"] == 3
    assert 0 < latency["cpu_ms"]["min"] <= latency["cpu_ms"]["median"]
    assert 0 < latency["wall_ms"]["min"] <= latency["wall_ms"]["median"]


def test_interleaved_timing_gives_every_model_every_round(models):
    times = runtime.time_invokes(models[1], rounds=4)
    assert set(times) == {"float32", "int8"}
    for entry in times.values():
        assert entry["cpu"].shape == entry["wall"].shape == (4,)
        assert (entry["wall"] > 0).all() and (entry["cpu"] >= 0).all()


def test_op_details_list_the_ops_with_their_tensors(models):
    ops = runtime.op_details(models[1]["float32"])
    names = [op["op_name"] for op in ops]
    assert "CONV_2D" in names and "FULLY_CONNECTED" in names and "LOGISTIC" in names
    (conv,) = [op for op in ops if op["op_name"] == "CONV_2D"]
    assert list(conv["outputs"][0]["shape"]) == [1, 6, 8, 4]


def _single_op_model(function, target):
    inputs = keras.Input((4, 8, 16), batch_size=1)
    model = keras.Model(inputs, keras.layers.Lambda(function)(inputs))
    calibration = np.random.default_rng(0).normal(size=(4, 4, 8, 16)).astype(np.float32)
    return convert(model, target, representative_dataset(calibration), rewrite=False)


def test_what_the_default_delegate_takes():
    """LiteRT 2.3's XNNPACK: float EXP is delegated (it was not in TF 2.17, hence the ELU form
    of the float attention), int8 EXP and int8 MAXIMUM are not (hence the attention's int8
    form: EXP on the builtin kernel, max as SUB+RELU, ADD)."""
    exp, maximum = keras.ops.exp, lambda x: keras.ops.maximum(x, 0.5 * x)
    assert runtime.delegated_ops(_single_op_model(exp, "float32")) == [("EXP", True)]
    assert runtime.delegated_ops(_single_op_model(exp, "int8")) == [("EXP", False)]
    assert runtime.undelegated_ops(_single_op_model(maximum, "int8")) == {"MAXIMUM": 1}
    assert runtime.undelegated_ops(_single_op_model(maximum, "float32")) == {}
    elu = _single_op_model(keras.activations.elu, "float32")
    assert runtime.delegated_ops(elu) == [("ELU", True)]
    assert runtime.delegate_partitions(elu) == 1
    # The builtin and reference kernel sets apply no delegate. (The reference set has no ELU
    # kernel, in TF 2.17 as in LiteRT 2.3.)
    nodes = runtime.make_interpreter(elu, kernels="builtin")._get_ops_details()
    assert [node["op_name"] for node in nodes] == ["ELU"]
    with pytest.raises(ValueError, match="ELU"):
        runtime.make_interpreter(elu, kernels="reference")
    exp_float = _single_op_model(exp, "float32")
    nodes = runtime.make_interpreter(exp_float, kernels="reference")._get_ops_details()
    assert [node["op_name"] for node in nodes] == ["EXP"]


def test_no_other_module_makes_an_interpreter():
    """Every interpreter in tfmood/, tflite/ and bench/ comes from tfmood.deploy.runtime."""
    pattern = re.compile(
        r"(from|import) +(ai_edge_litert|tflite_runtime)|lite\.Interpreter *\(|OpResolverType\."
    )
    offenders = []
    for folder in ("tfmood", "tflite", "bench"):
        for path in sorted((REPO / folder).rglob("*.py")):
            if path == REPO / "tfmood" / "deploy" / "runtime.py":
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if pattern.search(line):
                    offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert offenders == []


def test_outputs_logits_tells_a_logits_export_from_a_scores_export():
    import keras

    from tfmood.deploy.convert import convert
    from tfmood.deploy.runtime import outputs_logits

    inputs = keras.Input((4,))
    logits = keras.layers.Dense(3)(inputs)
    scores = keras.layers.Activation("sigmoid")(logits)
    assert not outputs_logits(convert(keras.Model(inputs, scores), "float32"))
    assert outputs_logits(convert(keras.Model(inputs, logits), "float32"))
