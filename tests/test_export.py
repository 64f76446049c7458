"""TFLite export: converters per target, export-time rewrites, audio-in model, verification."""

import importlib.util
import json
import os

import keras
import numpy as np
import pytest

from tfmood.deploy import audio_model, calibration, convert, export, runtime, verify
from tfmood.deploy.fold import (
    ExportLocalSelfAttention,
    arelu_gain_and_slope,
    chain_layers,
    inference_model,
)
from tfmood.layers import AReLU, LocalSelfAttention
from tfmood.models.vggish import build_model

N_FRAMES = 320  # the shortest input the five pools accept
WIDTH = 0.25
SEED = 0


def randomise_statistics(model, seed=SEED):
    """Non-trivial BatchNorm statistics and AReLU parameters, as a trained model has."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(0, 0.3, n),
                               rng.normal(0, 0.3, n), rng.uniform(0.5, 2.0, n)])  # fmt: skip
        if isinstance(layer, AReLU):
            layer.set_weights([np.float32(rng.uniform(-0.2, 1.2)), np.float32(rng.normal())])
    return model


def small_model(preset, n_frames=N_FRAMES, **overrides):
    keras.utils.set_random_seed(SEED)
    model = build_model(preset, n_frames=n_frames, width=WIDTH, **overrides)
    return randomise_statistics(model)


def mel_batch(count, n_frames=N_FRAMES, seed=1):
    return np.random.default_rng(seed).normal(-40, 20, (count, 96, n_frames)).astype("float32")


def representative(count=4):
    return convert.representative_dataset(mel_batch(count, seed=2))


# ---------------------------------------------------------------------------------------------
# Independent numpy references


def numpy_arelu(x, alpha, beta):
    alpha = np.clip(alpha, 0.01, 0.99)
    gain = 1.0 + 1.0 / (1.0 + np.exp(-beta))
    return gain * np.maximum(x, 0) - alpha * np.maximum(-x, 0)


def numpy_attention(x, wq, wk, wv, rel_h, rel_w, heads=None):
    """Local self-attention straight from the formula (NHWC): one head per channel, or the
    channels split into `heads` contiguous groups whose logits are summed."""
    height, width = x.shape[1:3]
    q = x @ wq
    k = np.pad(x @ wk, ((0, 0), (1, 1), (1, 1), (0, 0)))
    v = np.pad(x @ wv, ((0, 0), (1, 1), (1, 1), (0, 0)))
    half = wq.shape[1] // 2
    logits, values = [], []
    for r in range(3):
        for c in range(3):
            rel = np.concatenate([rel_h[:, r], rel_w[:, c]])
            logits.append(q * (k[:, r:r + height, c:c + width] + rel))
            values.append(v[:, r:r + height, c:c + width])
    logits, values = np.stack(logits, -1), np.stack(values, -1)
    if heads is not None:
        grouped = logits.reshape(*logits.shape[:3], heads, -1, logits.shape[-1])
        logits = np.repeat(grouped.sum(-2), wq.shape[1] // heads, axis=-2)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    assert half * 2 == wq.shape[1]
    return (weights * values).sum(-1)


# ---------------------------------------------------------------------------------------------
# Rewrites (Keras to Keras, no conversion)


def test_arelu_is_a_scaled_leaky_relu():
    x = np.linspace(-4, 4, 41).astype("float32")
    for alpha, beta in [(0.9, 2.0), (1.7, -3.0), (-0.5, 0.3)]:
        layer = AReLU(alpha_initializer=alpha, beta_initializer=beta)
        layer(x[None])
        gain, slope = arelu_gain_and_slope(layer)
        assert gain == pytest.approx(1 + 1 / (1 + np.exp(-beta)))
        leaky = np.where(x > 0, x, slope * x)
        np.testing.assert_allclose(gain * leaky, numpy_arelu(x, alpha, beta), rtol=1e-6)


def test_conv_bn_arelu_pool_block_folds_to_conv_pool_leaky_relu():
    inputs = keras.Input((12, 16, 3))
    x = keras.layers.Conv2D(6, 3, padding="same")(inputs)
    x = keras.layers.BatchNormalization(epsilon=1e-5)(x)
    x = AReLU()(x)
    outputs = keras.layers.MaxPooling2D((2, 4))(x)
    model = randomise_statistics(keras.Model(inputs, outputs), seed=3)
    folded = inference_model(model, batch_size=None)
    kinds = [type(layer).__name__ for layer in folded.layers[1:]]
    assert kinds == ["Conv2D", "MaxPooling2D", "LeakyReLU"]
    x = np.random.default_rng(4).normal(size=(2, 12, 16, 3)).astype("float32")
    np.testing.assert_allclose(folded(x), model(x, training=False), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "preset, heads",
    [("baseline", None), ("arelu", None), ("sa3", None), ("sa3-arelu", None), ("sa5", None),
     ("sa3", 4)],
)  # fmt: skip
@pytest.mark.parametrize("mode", ["float", "int8"])
def test_inference_model_equals_keras_model(preset, heads, mode):
    model = small_model(preset, n_frames=None, heads=heads)
    folded = inference_model(model, mode=mode, n_frames=N_FRAMES, batch_size=None)
    assert not any(isinstance(layer, (AReLU, LocalSelfAttention, keras.layers.Dropout))
                   for layer in folded.layers)  # fmt: skip
    x = mel_batch(3)
    # Compare the logits (before the sigmoid), where differences are not squashed.
    logits = [keras.Model(m.inputs, m.layers[-1].input) for m in (model, folded)]
    reference = np.asarray(logits[0](x, training=False))
    np.testing.assert_allclose(logits[1](x), reference, atol=1e-4 * np.abs(reference).max())
    np.testing.assert_allclose(folded(x), model(x, training=False), atol=1e-5)


def numpy_max_pool(x, rows, cols):
    """Valid, non-overlapping max pooling of (batch, H, W, C): partial windows are dropped."""
    batch, height, width, channels = x.shape
    x = x[:, : height // rows * rows, : width // cols * cols]
    return x.reshape(batch, height // rows, rows, width // cols, cols, channels).max((2, 4))


@pytest.mark.parametrize("mode", ["float", "int8"])
@pytest.mark.parametrize("strip_rows", [None, 1, 2, 4])
@pytest.mark.parametrize("pool_size", [None, (2, 2), (3, 4)])
@pytest.mark.parametrize("heads", [None, 1, 3])
def test_export_attention_matches_numpy_formula(mode, strip_rows, pool_size, heads):
    rng = np.random.default_rng(5)
    height, width, in_channels, channels = 7, 5, 3, 6
    wq, wk, wv = (rng.normal(size=(in_channels, channels)).astype("float32") for _ in range(3))
    rel_h, rel_w = (rng.normal(size=(channels // 2, 3)).astype("float32") for _ in range(2))
    scale, shift = rng.uniform(-2, 2, channels), rng.normal(size=channels)
    trained = LocalSelfAttention(channels, heads=heads)
    trained.build((None, height, width, in_channels))
    trained.set_weights([w.reshape(1, 1, in_channels, channels) for w in (wq, wk, wv)]
                        + [rel_h, rel_w])  # fmt: skip
    from tfmood.deploy.fold import fold_attention

    layer = ExportLocalSelfAttention(channels, strip_rows=strip_rows, mode=mode,
                                     pool_size=pool_size, heads=heads)  # fmt: skip
    layer.build((1, height, width, in_channels))
    layer.set_weights(fold_attention(trained, scale, shift))
    x = rng.normal(size=(1, height, width, in_channels)).astype("float32") * 2
    expected = scale * numpy_attention(x, wq, wk, wv, rel_h, rel_w, heads) + shift
    np.testing.assert_allclose(trained(x) * scale + shift,
                               scale * numpy_attention(x, wq, wk, wv, rel_h, rel_w, heads) + shift,
                               rtol=1e-4, atol=1e-4)  # fmt: skip
    if pool_size is not None:
        expected = numpy_max_pool(expected, *pool_size)
    outputs = layer(x)
    assert tuple(outputs.shape) == layer.compute_output_shape(x.shape) == expected.shape
    np.testing.assert_allclose(outputs, expected, rtol=1e-4, atol=1e-4)


def test_chain_layers_inlines_nested_models_and_refuses_branches():
    inner = build_model("baseline", n_frames=N_FRAMES, width=WIDTH)
    outer = audio_model.audio_in_model(inner, audio_model.audio_samples_for(N_FRAMES))
    names = [layer.name for layer in chain_layers(outer)]
    assert names[0] == "log_mel" and names[1:] == [layer.name for layer in chain_layers(inner)]
    inputs = keras.Input((4,))
    branched = keras.Model(inputs, keras.layers.Add()([inputs, keras.layers.Dense(4)(inputs)]))
    with pytest.raises(ValueError, match="chain"):
        chain_layers(branched)


# ---------------------------------------------------------------------------------------------
# Conversion


@pytest.fixture(scope="module")
def sa3_arelu():
    """Attention and AReLU in one small model, with its Keras scores on held-out inputs."""
    model = small_model("sa3-arelu")
    x = mel_batch(3, seed=7)
    return model, x, np.asarray(model(x, training=False))


@pytest.mark.parametrize("target", convert.TARGETS)
def test_convert_each_target(sa3_arelu, target):
    model, x, reference = sa3_arelu
    flatbuffer = convert.convert(model, target, representative())
    ops = convert.ops_used(flatbuffer)
    assert not any(op.startswith("CUSTOM") for op in ops)
    # The folded graph: AReLU is one LEAKY_RELU, attention has no 5-D pack or softmax.
    assert "LEAKY_RELU" in ops and "PACK" not in ops and "SOFTMAX" not in ops
    assert "RELU" not in ops and "NEG" not in ops
    details = runtime.io_details(flatbuffer)
    (inputs,), (outputs,) = details["inputs"], details["outputs"]
    assert inputs["shape"] == [1, 96, N_FRAMES] and outputs["shape"] == [1, 56]
    checks = verify.check_io(flatbuffer, target)
    assert all(check.passed for check in checks), checks
    scores = runtime.run(flatbuffer, x)
    diff = np.abs(scores - reference).max()
    # int8 accuracy is checked by ROC-AUC on a trained model (the slow test): the logits of
    # this random model are far outside what 4 calibration examples cover.
    if target == "int8":
        assert inputs["dtype"] == outputs["dtype"] == "int8"
        assert inputs["quantization"]["scale"] > 0
        assert -128 <= inputs["quantization"]["zero_point"] <= 127
        assert outputs["quantization"] == {"scale": 1 / 256, "zero_point": -128}
        np.testing.assert_allclose(scores * 256, np.round(scores * 256), atol=1e-4)
    else:
        assert inputs["dtype"] == outputs["dtype"] == "float32"
        assert inputs["quantization"] is None and outputs["quantization"] is None
        assert diff <= {"float32": 1e-4, "float16": 1e-2, "dynamic": 1.0}[target]
        assert np.abs(scores - reference).mean() < 0.05


def xnnpack_int8_scale_violations(flatbuffer):
    """int8 ADD/SUB/MUL ops whose scales XNNPACK's delegate refuses (they then run on the slow
    builtin kernels and split the delegated graph): an input-to-output scale ratio outside
    [2^-10, 2^8) for ADD and SUB, an input-product-to-output ratio outside [2^-16, 2^8) for MUL."""
    from tfmood.deploy.runtime import op_details

    violations = []
    for op in op_details(flatbuffer):
        if op["op_name"] not in ("ADD", "SUB", "MUL"):
            continue
        output = op["outputs"][0]
        if output["dtype"] != np.int8:
            continue
        scales = [tensor["quantization"][0] for tensor in op["inputs"]]
        ratios = ([scales[0] * scales[1] / output["quantization"][0]] if op["op_name"] == "MUL"
                  else [scale / output["quantization"][0] for scale in scales])  # fmt: skip
        low = 2.0**-16 if op["op_name"] == "MUL" else 2.0**-10
        if not all(low <= ratio < 2.0**8 for ratio in ratios):
            violations.append((op["op_name"], ratios))
    return violations


def test_int8_attention_stays_within_the_delegates_scale_ranges(monkeypatch):
    from tfmood.deploy.fold import ExportLocalSelfAttention

    # Untrained relative embeddings (stddev 0.05) are tiny next to the keys' range.
    model = small_model("sa3")
    flatbuffer = convert.convert(model, "int8", representative())
    assert xnnpack_int8_scale_violations(flatbuffer) == []
    assert "DEPTHWISE_CONV_2D" in convert.ops_used(flatbuffer)
    # The plain ADD of the embedding is what the delegate refuses: the check can fail.
    monkeypatch.setattr(ExportLocalSelfAttention, "_add_relative",
                        lambda self, keys, index: keys + self.relative[index])  # fmt: skip
    plain = convert.convert(model, "int8", representative())
    assert [name for name, _ in xnnpack_int8_scale_violations(plain)] == ["ADD"] * 9


@pytest.mark.parametrize("target", ["float32", "int8"])
def test_grouped_head_attention_converts_to_a_static_graph(target):
    model = small_model("sa3", heads=4)
    x = mel_batch(2, seed=9)
    flatbuffer = convert.convert(model, target, representative())
    ops = convert.ops_used(flatbuffer)
    # The rewrite, not the training graph: no run-time shapes, no 5-D head split.
    assert not {"SHAPE", "PACK", "SUM", "REDUCE_MAX", "CUSTOM"} & set(ops), ops
    scores = runtime.run(flatbuffer, x)
    if target == "float32":
        np.testing.assert_allclose(scores, model(x, training=False), atol=1e-4)
    else:
        np.testing.assert_allclose(scores * 256, np.round(scores * 256), atol=1e-4)


@pytest.mark.parametrize("preset", ["baseline", "arelu"])
def test_float32_conversion_within_tolerance(preset):
    model = small_model(preset)
    x = mel_batch(2, seed=8)
    flatbuffer = convert.convert(model, "float32")
    checks = verify.check_outputs("float32", np.asarray(model(x)), runtime.run(flatbuffer, x))
    assert checks[0].metric == "max_abs_diff" and checks[0].passed, checks


def test_unknown_target_lists_valid_ones():
    with pytest.raises(ValueError, match="float32, float16, dynamic, int8"):
        convert.convert(small_model("baseline"), "int4")


def test_int8_needs_calibration_data():
    with pytest.raises(ValueError, match="representative_data"):
        convert.convert(small_model("baseline"), "int8")


def test_custom_op_is_refused_by_name():
    import tensorflow as tf

    class IncompleteGamma(keras.layers.Layer):
        def call(self, x):
            return tf.math.igamma(x, x)

    inputs = keras.Input((4,), batch_size=1)
    model = keras.Model(inputs, IncompleteGamma()(inputs))
    with pytest.raises(ValueError, match="unsupported TFLite op Igamma"):
        convert.convert(model, "float32", rewrite=False)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.allow_custom_ops = True
    flatbuffer = converter.convert()
    assert "CUSTOM:Igamma" in convert.ops_used(flatbuffer)
    with pytest.raises(ValueError, match="unsupported TFLite op Igamma"):
        convert.check_builtin_ops(flatbuffer)


def test_audio_in_model_matches_mel_model():
    from tfmood.layers.log_mel import LogMel

    model = small_model("baseline")
    n_samples = audio_model.audio_samples_for(N_FRAMES)
    graph = audio_model.audio_in_model(inference_model(model, n_frames=N_FRAMES), n_samples)
    flatbuffer = convert.convert(graph, "float32", rewrite=False)
    ops = convert.ops_used(flatbuffer)
    assert "LOG" in ops and not any(op.startswith("CUSTOM") for op in ops)
    assert runtime.io_details(flatbuffer)["inputs"][0]["shape"] == [1, n_samples]
    rng = np.random.default_rng(9)
    t = np.arange(n_samples) / 12000.0
    audio = np.stack([0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.normal(size=n_samples),
                      0.1 * rng.normal(size=n_samples)]).astype("float32")  # fmt: skip
    mel = np.asarray(LogMel()(audio))
    assert mel.shape == (2, 96, N_FRAMES)
    expected = np.asarray(model(mel))
    np.testing.assert_allclose(runtime.run(flatbuffer, audio), expected, atol=1e-4)


def test_latency_measurement_reports_both_clocks():
    flatbuffer = convert.convert(small_model("baseline"), "float32")
    latency = runtime.measure_latency(flatbuffer, runs=3, warmup=1)  # from tfmood.deploy.runtime
    assert latency["runs"] == 3
    assert 0 < latency["cpu_ms"]["min"] <= latency["cpu_ms"]["median"]
    assert 0 < latency["wall_ms"]["min"] <= latency["wall_ms"]["median"]


# ---------------------------------------------------------------------------------------------
# The whole export, on a tiny synthetic corpus


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    from tfmood.data.synth import generate_corpus

    out = tmp_path_factory.mktemp("corpus")
    return generate_corpus(str(out), 24, 3.0, SEED, progress=False).out_dir


def test_export_writes_a_verified_model_and_json_report(tiny_corpus, tmp_path, capsys):
    from tfmood.cli import main

    model_path = str(tmp_path / "model.keras")
    small_model("arelu", n_frames=None).save(model_path)
    out = tmp_path / "model.tflite"
    arguments = ["export", model_path, "--target", "float32", "-o", str(out),
                 "--calibration", tiny_corpus, "--n-frames", str(N_FRAMES), "--json"]  # fmt: skip
    status = main(arguments)
    report = json.loads(capsys.readouterr().out)
    assert status == 0 and report["passed"] and report["written"] and out.is_file()
    assert report["bytes"] == out.stat().st_size and report["target"] == "float32"
    assert "LEAKY_RELU" in report["ops"]
    assert report["inputs"][0]["dtype"] == "float32" and report["outputs"][0]["shape"] == [1, 56]
    (check,) = [c for c in report["checks"] if c["metric"] == "max_abs_diff"]
    assert check["limit"] == 1e-4 and check["value"] <= 1e-4 and check["passed"]
    assert report["data"]["test"]["tsv"].endswith("autotagging_moodtheme-test.tsv")


def test_int8_logits_export_outputs_logits_at_their_own_scale(tiny_corpus, tmp_path, capsys):
    from tfmood.cli import main

    model = small_model("sa3", n_frames=None)
    model_path = str(tmp_path / "model.keras")
    model.save(model_path)
    out = tmp_path / "logits.tflite"
    arguments = ["export", model_path, "--target", "int8", "-o", str(out), "--logits",
                 "--calibration", tiny_corpus, "--n-frames", str(N_FRAMES), "--json"]  # fmt: skip
    main(arguments)
    report = json.loads(capsys.readouterr().out)
    assert report["output"] == "logits" and report["outputs"][0]["dtype"] == "int8"
    quantization = report["outputs"][0]["quantization"]
    assert quantization["scale"] != pytest.approx(1 / 256)
    # The output is checked as an int8 tensor of its own scale, not as a sigmoid's.
    (output_check,) = [c for c in report["checks"]
                       if c["metric"].startswith("output") and c["metric"].endswith("quantization")]  # fmt: skip
    assert output_check["passed"] and "sigmoid" not in output_check["limit"]
    assert report["written"] == report["passed"] == out.is_file()


def test_logits_model_is_the_model_before_its_sigmoid():
    from tfmood.deploy.fold import logits_model

    model = small_model("arelu")
    x = mel_batch(2, seed=12)
    logits = np.asarray(logits_model(model)(x, training=False), dtype=np.float64)
    np.testing.assert_allclose(1 / (1 + np.exp(-logits)), model(x, training=False), atol=1e-6)
    assert np.abs(logits).max() > 0.1  # logits, not scores passed through
    inputs = keras.Input((4,))
    with pytest.raises(ValueError, match="does not end in a sigmoid"):
        logits_model(keras.Model(inputs, keras.layers.Dense(3, activation="relu")(inputs)))


def test_logits_are_checked_on_their_sigmoid():
    reference, outputs = np.array([[10.0, -3.0]]), np.array([[11.0, -3.0]])
    (check,) = verify.check_outputs("float32", reference, outputs, logits=True)
    # sigmoid(11) - sigmoid(10) = 2.9e-5: within 1e-4, though the logits differ by 1.
    assert check.value == pytest.approx(1 / (1 + np.exp(-11)) - 1 / (1 + np.exp(-10)), rel=1e-2)
    assert check.passed
    (check,) = verify.check_outputs("float32", reference, outputs)
    assert check.value == pytest.approx(1.0) and not check.passed


def test_failed_int8_export_suggests_logits_only_when_the_output_grid_is_the_cause():
    from tfmood.cli.export import _only_the_output_grid_failed

    def report(delta, grid_delta, output="scores"):
        return {"output": output, "checks": [
            {"metric": "roc_auc_abs_diff", "value": delta, "limit": 0.01,
             "passed": delta <= 0.01},
            {"metric": "roc_auc_abs_diff_output_grid", "value": grid_delta, "limit": None,
             "passed": True}]}  # fmt: skip

    assert _only_the_output_grid_failed(report(0.04, 0.001))
    assert not _only_the_output_grid_failed(report(0.04, 0.03))  # the graph itself is off
    assert not _only_the_output_grid_failed(report(0.004, 0.001))  # nothing failed
    assert not _only_the_output_grid_failed(report(0.04, 0.001, output="logits"))


def test_export_failing_its_check_is_not_written(tiny_corpus, tmp_path, monkeypatch, capsys):
    from tfmood.cli import main

    monkeypatch.setitem(verify.MAX_ABS_DIFF, "float32", -1.0)  # no model can pass this
    model_path = str(tmp_path / "model.keras")
    small_model("baseline", n_frames=None).save(model_path)
    out = tmp_path / "model.tflite"
    status = main(["export", model_path, "--target", "float32", "-o", str(out),
                   "--calibration", tiny_corpus, "--n-frames", str(N_FRAMES)])  # fmt: skip
    assert status == 1 and not out.exists()
    assert "FAIL max_abs_diff" in capsys.readouterr().out
    assert os.listdir(tmp_path) == ["model.keras"]  # no temporary file left either


def test_audio_in_refuses_8_bit_targets(tiny_corpus):
    with pytest.raises(ValueError, match="audio-in model is exported as float32 or float16"):
        export.export_model(small_model("baseline"), "int8", None, calibration=tiny_corpus,
                            audio_in=True)  # fmt: skip


def test_calibration_paths_are_resolved_or_named(tiny_corpus, tmp_path):
    splits = calibration.resolve_splits(tiny_corpus)
    assert splits["calibration"].endswith("-validation.tsv")
    assert splits["test"].endswith("-test.tsv")
    assert calibration.resolve_splits(splits["calibration"]) == splits
    with pytest.raises(FileNotFoundError, match="no-such-dir"):
        calibration.resolve_splits(str(tmp_path / "no-such-dir"))


def test_default_corpus_is_generated_once_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(calibration, "DEFAULT_CORPUS", {"n_tracks": 24, "seconds": 1.0, "seed": 0})
    path = calibration.default_corpus(str(tmp_path))
    assert os.path.isfile(os.path.join(path, "autotagging_moodtheme-test.tsv"))
    stamp = os.path.getmtime(os.path.join(path, "synth.json"))
    assert calibration.default_corpus(str(tmp_path)) == path
    assert os.path.getmtime(os.path.join(path, "synth.json")) == stamp
    assert os.listdir(tmp_path) == [os.path.basename(path)]  # no staging folder left


def test_micro_target_dispatches_to_the_tflm_export(monkeypatch, tmp_path, capsys):
    from tfmood.cli import main
    from tfmood.deploy import tflm

    calls = []
    fake = lambda *args, **kwargs: calls.append((args, kwargs)) or {"passed": True}  # noqa: E731
    monkeypatch.setattr(tflm, "export_micro", fake)
    out = str(tmp_path / "m.tflite")
    assert main(["export", "m.keras", "--target", "micro", "-o", out, "--n-frames", "320"]) == 0
    (args, kwargs), = calls
    assert args == ("m.keras", out) and kwargs["n_frames"] == 320
    assert json.loads(capsys.readouterr().out) == {"passed": True}


def test_micro_target_without_tflite_micro_says_what_to_install(monkeypatch, tmp_path, capsys):
    from tfmood.cli import main

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tflite_micro" else find_spec(name, *a))
    out = str(tmp_path / "m.tflite")
    assert main(["export", "m.keras", "--target", "micro", "-o", out]) == 2
    assert "pip install tflite-micro" in capsys.readouterr().err


@pytest.mark.parametrize("option", ["--logits", "--audio-in"])
def test_micro_target_refuses_phone_only_options(option, tmp_path, capsys):
    from tfmood.cli import main

    out = str(tmp_path / "m.tflite")
    assert main(["export", "m.keras", "--target", "micro", "-o", out, option]) == 2
    assert "phone-class options" in capsys.readouterr().err


@pytest.mark.slow
def test_int8_export_of_a_trained_model_keeps_the_ranking_its_outputs_can_hold(tmp_path):
    """Train a small model for a few epochs and export it as int8.

    The int8 graph must rank tracks as the Keras scores rounded to its own output grid do
    (ROC-AUC within 0.01): that is the graph's error. Against the float Keras scores, a model
    this weakly trained loses more to the 1/256 output steps alone (ties among scores bunched
    near the base rates), so the report's verdict must simply follow its 0.01 limit, and a
    failing export must not be written. (The demo's well-trained model passes: 0.003.)
    """
    from tfmood.data.synth import generate_corpus
    from tfmood.train.fit import TrainConfig, train

    corpus = generate_corpus(str(tmp_path / "corpus"), 90, 3.0, SEED, progress=False,
                             fractions=(0.5, 0.1, 0.4))  # fmt: skip
    config = TrainConfig(
        preset="sa3-arelu", train_tsv=corpus.split_paths["train"],
        validation_tsv=corpus.split_paths["validation"], train_root=corpus.audio_dir,
        source="audio", out_dir=str(tmp_path / "run"), epochs=6, patience=6,
        n_frames=N_FRAMES, width=WIDTH, learning_rate=1e-2, tensorboard=False, verbose=0,
    )  # fmt: skip
    result = train(config)
    assert result.val_roc_auc > 0.6  # it learned something: the ranking to keep is not noise
    out = tmp_path / "model-int8.tflite"
    report = export.export_model(result.best_model, "int8", str(out), calibration=corpus.out_dir,
                                 n_frames=N_FRAMES)  # fmt: skip
    checks = {c["metric"]: c for c in report["checks"]}
    assert checks["roc_auc_abs_diff_output_grid"]["value"] <= 0.01, checks
    auc = checks["roc_auc_abs_diff"]
    assert auc["limit"] == 0.01 and auc["passed"] == (auc["value"] <= 0.01)
    assert report["passed"] == auc["passed"] == out.is_file() == report["written"]
    assert report["inputs"][0]["dtype"] == "int8" and report["outputs"][0]["dtype"] == "int8"
    # Logits out (sigmoid in the app) at their own scale keep the ranking the sigmoid's 1/256
    # steps lose: this model failed with scores out (0.016) and passes with logits (0.002).
    report = export.export_model(result.best_model, "int8", str(tmp_path / "logits.tflite"),
                                 calibration=corpus.out_dir, n_frames=N_FRAMES, logits=True)  # fmt: skip
    checks = {c["metric"]: c for c in report["checks"]}
    assert checks["roc_auc_abs_diff"]["value"] <= 0.01 and report["passed"], checks


def test_output_grid_rounds_scores_to_int8_output_values():
    scores = np.array([[0.0, 0.001, 0.0021, 0.5, 0.999, 1.2]])
    grid = verify.on_output_grid(scores, 1 / 256, -128)
    # Steps of 1/256 from 0; 1.2 saturates at the largest int8 value, 127 - (-128) = 255 steps.
    np.testing.assert_allclose(grid, [[0.0, 0.0, 1 / 256, 0.5, 255 / 256, 255 / 256]])


# --- fidelity on unlabelled real music (--calibration MUSIC-FOLDER) -----------------------------

MUSIC = os.path.join(os.path.dirname(__file__), "data", "music")


def test_fidelity_numbers_match_hand_computed_ones():
    from scipy.stats import spearmanr

    reference = np.array([[0.9, 0.1, 0.5, 0.3, 0.2, 0.0],
                          [0.2, 0.8, 0.4, 0.1, 0.7, 0.3],
                          [0.5, 0.5, 0.6, 0.9, 0.1, 0.2],
                          [0.1, 0.3, 0.2, 0.4, 0.6, 0.5]])  # fmt: skip
    outputs = reference.copy()
    outputs[0, 0] = 0.88  # |dp| 0.02, ranks kept
    outputs[1, 2] = 0.65  # tag 2: ranks [3, 2, 4, 1] become [2, 4, 3, 1]
    outputs[3, 5] = 0.75  # tag 5: ranks [1, 3, 2, 4] kept
    numbers = verify.fidelity(reference, outputs, k=5)
    diff = np.abs(outputs - reference)
    assert numbers["mean_abs_diff"] == pytest.approx(diff.mean())
    assert numbers["mean_abs_diff"] == pytest.approx((0.02 + 0.25 + 0.25) / 24)
    assert numbers["max_abs_diff"] == pytest.approx(0.25)
    rho = [spearmanr(reference[:, t], outputs[:, t])[0] for t in range(6)]
    np.testing.assert_allclose(verify.spearman_per_tag(reference, outputs), rho)
    assert rho[2] == pytest.approx(0.4)  # sum d^2 = 1 + 4 + 1: 1 - 6 * 6 / (4 * 15)
    assert numbers["spearman_median"] == pytest.approx(1.0)
    assert numbers["spearman_min"] == pytest.approx(0.4)
    # Top-5 of 6 tags = all but the lowest, which no change above moves.
    assert numbers["top5_agreement"] == pytest.approx(1.0)
    outputs[2, 4] = 0.95  # window 2: reference drops tag 4 (0.1); outputs drop tag 5 (0.2)
    numbers = verify.fidelity(reference, outputs, k=5)
    assert numbers["top5_agreement"] == pytest.approx((3 + 4 / 5) / 4)
    assert numbers["top5_exact"] == pytest.approx(3 / 4)


def test_spearman_of_a_constant_tag_is_undefined_and_left_out_of_the_median():
    reference = np.array([[0.1, 0.5], [0.2, 0.5], [0.3, 0.5]])
    rho = verify.spearman_per_tag(reference, reference)
    assert rho[0] == pytest.approx(1.0) and np.isnan(rho[1])
    assert verify.fidelity(reference, reference, k=1)["spearman_tags"] == 1


def test_int8_fidelity_limits_and_float_max_diff_limits():
    rng = np.random.default_rng(0)
    reference = rng.uniform(0, 0.2, (20, 56))
    checks, _ = verify.check_fidelity("int8", reference, reference + 0.005)
    assert all(check.passed for check in checks)  # a shift keeps every ranking
    checks, _ = verify.check_fidelity("int8", reference, reference + 0.02)
    assert [c.metric for c in checks if not c.passed] == ["mean_abs_diff"]
    checks, _ = verify.check_fidelity("int8", reference, rng.uniform(0, 0.2, (20, 56)))
    assert {"spearman_median", "top5_agreement"} <= {c.metric for c in checks if not c.passed}
    checks, _ = verify.check_fidelity("float32", reference, reference + 2e-4)
    assert [c.metric for c in checks if not c.passed] == ["max_abs_diff"]


def test_music_windows_are_consecutive_and_split_by_track():
    windows = calibration.music_windows(MUSIC, 1400, hop_frames=700)
    assert [os.path.basename(t) for t in windows.tracks][:2] == [
        "asc-frontiers.mp3", "drascula-track1.ogg"]  # fmt: skip
    assert windows.skipped and windows.skipped[0][0].endswith("broken.ogg")
    assert windows.inputs.shape[1:] == (96, 1400)
    first = windows.inputs[windows.track_index == 0]
    np.testing.assert_array_equal(first[0][:, 700:], first[1][:, :700])  # consecutive, hop 700
    parts = calibration.split_music(windows)
    calibration_tracks = set(parts["calibration"].tracks)
    assert calibration_tracks.isdisjoint(parts["test"].tracks)
    assert sorted(calibration_tracks | set(parts["test"].tracks)) == windows.tracks
    assert os.path.basename(parts["calibration"].tracks[0]) == "asc-frontiers.mp3"


def test_export_cli_calibrates_and_verifies_on_a_music_folder(tmp_path, capsys):
    import shutil

    from tfmood.cli import main

    music = tmp_path / "music"
    music.mkdir()
    for name in ("hyperrogue-desert.ogg", "hyperrogue-ocean.ogg", "drascula-track11.ogg",
                 "broken.ogg"):  # fmt: skip
        shutil.copy(os.path.join(MUSIC, name), music / name)
    keras_path = tmp_path / "model.keras"
    small_model("baseline").save(keras_path)
    out = tmp_path / "model.tflite"
    code = main(["export", str(keras_path), "--target", "float32", "-o", str(out),
                 "--calibration", str(music), "--n-frames", str(N_FRAMES), "--hop", "160",
                 "--json"])  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and out.is_file() and report["passed"]
    assert report["data"]["calibration"]["tracks"] == ["drascula-track11.ogg",
                                                       "hyperrogue-ocean.ogg"]  # fmt: skip
    assert report["data"]["test"]["tracks"] == ["hyperrogue-desert.ogg"]
    assert "broken.ogg" in report["data"]["test"]["skipped"][0]
    assert report["fidelity"]["examples"] == report["data"]["test"]["windows"] > 1
    metrics = {check["metric"]: check for check in report["checks"]}
    assert metrics["max_abs_diff"]["limit"] == 1e-4 and metrics["max_abs_diff"]["passed"]
    assert metrics["spearman_median"]["limit"] is None  # float32: reported only
