"""Microcontroller export: TFLM allocation and outputs, C array, op resolver, budgets."""

import re

import numpy as np
import pytest

pytest.importorskip("tflite_micro", reason="the tflite-micro package runs the TFLM interpreter")

from tfmood import micro
from tfmood.export import ops_used

N_FRAMES = 320
FILTERS = (4, 8)  # small: the mechanics, not the accuracy


@pytest.fixture(scope="module")
def calibration():
    rng = np.random.default_rng(0)
    return rng.normal(-40.0, 20.0, size=(6, micro.N_MELS, N_FRAMES)).astype(np.float32)


@pytest.fixture(scope="module")
def small_model():
    import keras

    keras.utils.set_random_seed(0)
    return micro.build_micro_model(filters=FILTERS)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, small_model, calibration):
    out = tmp_path_factory.mktemp("micro") / "model.tflite"
    report = micro.export_micro(small_model, str(out), calibration=calibration)
    return report, out


def test_export_passes_and_writes_every_file(exported):
    report, out = exported
    assert report["passed"] and report["written"]
    for name in ("model.tflite", "model_data.cc", "model_data.h", "ops.txt"):
        assert (out.parent / name).is_file(), name
    assert report["inputs"][0]["dtype"] == "int8"
    assert report["inputs"][0]["shape"] == [1, micro.N_MELS, N_FRAMES]
    assert report["outputs"][0]["dtype"] == "int8"


def test_arena_is_within_budget_and_is_the_smallest_that_allocates(exported):
    report, out = exported
    flatbuffer = out.read_bytes()
    arena = report["arena_bytes"]
    assert 0 < arena <= micro.ARENA_BUDGET
    # The input tensor alone (96 x 320 int8) must fit in the arena.
    assert arena >= micro.N_MELS * N_FRAMES
    assert micro._allocates(flatbuffer, arena)
    assert not micro._allocates(flatbuffer, arena - 16)


def test_tflm_outputs_match_tflite_within_one_step(exported, calibration):
    import tensorflow as tf

    _, out = exported
    flatbuffer = out.read_bytes()
    interpreter = tf.lite.Interpreter(model_content=flatbuffer)
    interpreter.allocate_tensors()
    (input_detail,) = interpreter.get_input_details()
    (output_detail,) = interpreter.get_output_details()
    scale, zero_point = input_detail["quantization"]
    quantized = np.clip(np.round(calibration / scale) + zero_point, -128, 127).astype(np.int8)
    expected = []
    for example in quantized:
        interpreter.set_tensor(input_detail["index"], example[None])
        interpreter.invoke()
        expected.append(interpreter.get_tensor(output_detail["index"])[0])
    got = micro.run_tflm(flatbuffer, quantized, micro.ARENA_BUDGET)
    assert got.dtype == np.int8 and got.shape == (len(calibration), 56)
    diff = np.abs(got.astype(np.int32) - np.stack(expected).astype(np.int32))
    assert diff.max() <= 1


def test_c_array_holds_the_tflite_bytes(exported):
    _, out = exported
    flatbuffer = out.read_bytes()
    source = (out.parent / "model_data.cc").read_text()
    assert "alignas(16) const unsigned char g_model[]" in source
    body = source.split("g_model[] = {", 1)[1].split("};", 1)[0]
    values = bytes(int(token, 16) for token in re.findall(r"0x[0-9a-f]{2}", body))
    assert values == flatbuffer
    assert f"const unsigned int g_model_len = {len(flatbuffer)};" in source
    assert "extern const unsigned char g_model[];" in (out.parent / "model_data.h").read_text()


def _resolver_ops(snippet: str) -> list:
    """Builtin op names back from `op_resolver.AddConv2D();` lines: AddMaxPool2D -> MAX_POOL_2D."""
    methods = re.findall(r"op_resolver\.Add(\w+)\(\);", snippet)
    return sorted(re.sub(r"(?<=[a-z])(?=[A-Z0-9])", "_", name).upper() for name in methods)


def test_resolver_registers_exactly_the_ops_in_the_flatbuffer(exported):
    report, out = exported
    snippet = (out.parent / "ops.txt").read_text()
    used = ops_used(out.read_bytes())
    assert _resolver_ops(snippet) == used
    assert f"MicroMutableOpResolver<{len(used)}>" in snippet
    declared = int(re.search(r"kTensorArenaSize = (\d+);", snippet).group(1))
    assert declared >= report["arena_bytes"]
    assert "CONV_2D" in used and "FULLY_CONNECTED" in used


def test_over_budget_models_are_refused_and_not_written(tmp_path, small_model, calibration):
    out = tmp_path / "model.tflite"
    with pytest.raises(ValueError, match=r"\d+-byte TFLM arena, over the 50000-byte budget"):
        micro.export_micro(small_model, str(out), calibration=calibration, arena_budget=50_000)
    with pytest.raises(ValueError, match=r"is \d+ bytes, over the 1000-byte flash budget"):
        micro.export_micro(small_model, str(out), calibration=calibration, flash_budget=1000)
    assert not out.exists()


def test_aggregate_windows_is_the_mean_of_window_scores():
    scores = np.array([[0.2, 0.9], [0.4, 0.1], [0.6, 0.5]], dtype=np.float32)
    np.testing.assert_allclose(micro.aggregate_windows(scores), [0.4, 0.5], atol=1e-7)
    batch = np.stack([scores, scores[::-1] * 0.5])
    np.testing.assert_allclose(micro.aggregate_windows(batch), [[0.4, 0.5], [0.2, 0.25]], atol=1e-7)
    with pytest.raises(ValueError):
        micro.aggregate_windows(np.zeros((0, 2)))


def test_clip_windows_cuts_consecutive_windows():
    mel = np.arange(2 * 700, dtype=np.float32).reshape(2, 700)
    windows = micro.clip_windows(mel, 320)
    assert windows.shape == (2, 2, 320)
    np.testing.assert_array_equal(windows[1], mel[:, 320:640])
    short = micro.clip_windows(mel[:, :100], 320)  # tiled from its start
    np.testing.assert_array_equal(short[0][:, 100:200], mel[:, :100])
