"""Microcontroller export: TFLM allocation and outputs, C array, op resolver, budgets."""

import re

import numpy as np
import pytest

pytest.importorskip("tflite_micro", reason="the tflite-micro package runs the TFLM interpreter")

from tfmood.deploy import tflm
from tfmood.deploy.convert import ops_used
from tfmood.models import micro
from tfmood.train import micro_training

N_FRAMES = 320
FILTERS = (4, 8)  # small: the mechanics, not the accuracy
HEAD_FILTERS = (8,)


@pytest.fixture(scope="module")
def calibration():
    rng = np.random.default_rng(0)
    return rng.normal(-40.0, 20.0, size=(6, micro.N_MELS, N_FRAMES)).astype(np.float32)


@pytest.fixture(scope="module")
def small_model():
    import keras

    keras.utils.set_random_seed(0)
    return micro.build_micro_model(filters=FILTERS, head_filters=HEAD_FILTERS)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, small_model, calibration):
    out = tmp_path_factory.mktemp("micro") / "model.tflite"
    report = tflm.export_micro(small_model, str(out), calibration=calibration)
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
    assert 0 < arena <= tflm.ARENA_BUDGET
    # The input tensor alone (96 x 320 int8) must fit in the arena.
    assert arena >= micro.N_MELS * N_FRAMES
    assert tflm._allocates(flatbuffer, arena)
    assert not tflm._allocates(flatbuffer, arena - 16)


def test_tflm_outputs_match_tflite_within_one_step(exported, calibration):
    from tfmood.deploy.runtime import io_details, quantize, run

    _, out = exported
    flatbuffer = out.read_bytes()
    quantized = quantize(calibration, io_details(flatbuffer)["inputs"][0])
    got = tflm.run_tflm(flatbuffer, quantized, tflm.ARENA_BUDGET)
    assert got.dtype == np.int8 and got.shape == (len(calibration), 56)
    # The export checks TFLM against the reference kernels; here also against LiteRT's own
    # optimised int8 kernels. The XNNPACK delegate (the default) requantises with a different
    # rounding, which moves a 3x3 stride-1 convolution's outputs by a step or more.
    for kernels in ("reference", "builtin"):
        expected = run(flatbuffer, quantized, kernels=kernels, raw=True).reshape(got.shape)
        diff = np.abs(got.astype(np.int32) - expected.astype(np.int32))
        assert diff.max() <= 1, kernels
    reference = run(flatbuffer, quantized, kernels="reference", raw=True)
    np.testing.assert_array_equal(tflm.run_tflite_int8(flatbuffer, quantized), reference)


def test_clip_scores_in_tflm_are_the_mean_of_keras_window_scores(exported, small_model):
    _, out = exported
    flatbuffer = out.read_bytes()
    rng = np.random.default_rng(3)
    # Clips of 2.5 windows (the trailing half dropped) and of half a window (tiled).
    clips = [rng.normal(-40.0, 20.0, (micro.N_MELS, n)).astype(np.float32)
             for n in (5 * N_FRAMES // 2, N_FRAMES // 2)]  # fmt: skip
    got = tflm.score_clips_tflm(flatbuffer, clips)
    assert got.shape == (2, 56) and got.dtype == np.float32
    long_clip = np.asarray(small_model(np.stack([clips[0][:, :N_FRAMES],
                                                 clips[0][:, N_FRAMES:2 * N_FRAMES]])))
    short_clip = np.asarray(small_model(np.tile(clips[1], (1, 2))[None]))
    expected = np.stack([long_clip.mean(0), short_clip[0]])
    # int8 scores come in steps of 1/256; a few steps of drift through the int8 graph.
    np.testing.assert_allclose(got, expected, atol=6 / 256)


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
    for op in ("CONV_2D", "FULLY_CONNECTED", "MAX_POOL_2D", "AVERAGE_POOL_2D", "CONCATENATION"):
        assert op in used, op


def test_over_budget_models_are_refused_and_not_written(tmp_path, small_model, calibration):
    out = tmp_path / "model.tflite"
    with pytest.raises(ValueError, match=r"\d+-byte TFLM arena, over the 50000-byte budget"):
        tflm.export_micro(small_model, str(out), calibration=calibration, arena_budget=50_000)
    with pytest.raises(ValueError, match=r"is \d+ bytes, over the 1000-byte flash budget"):
        tflm.export_micro(small_model, str(out), calibration=calibration, flash_budget=1000)
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


def test_default_model_layout_and_pooling(small_model, calibration):
    """Strided convolutions halve both axes, head convolutions keep them; the pooled features are
    the per-channel max then mean of the last activation (numpy reference)."""
    import keras

    model = micro.build_micro_model()
    strided, head = len(micro.DEFAULT_FILTERS), len(micro.DEFAULT_HEAD_FILTERS)
    for index in range(strided + head):
        shape = model.get_layer(f"conv_{index}").output.shape
        scale = 2 ** min(index + 1, strided)
        assert shape[1:3] == (-(-micro.N_MELS // scale), -(-N_FRAMES // scale)), (index, shape)
    assert model.get_layer(f"conv_{strided + head - 1}").output.shape[-1] == 128
    weights = sum(int(np.prod(w.shape)) for w in model.weights)
    assert weights < 0.5 * tflm.FLASH_BUDGET  # int8 weights, with room for the flatbuffer
    last = keras.Model(small_model.input, small_model.get_layer("relu_2").output)
    features = keras.Model(small_model.input, small_model.get_layer("pool").output)
    activation = np.asarray(last(calibration[:2]))
    expected = np.concatenate([activation.max(axis=(1, 2)), activation.mean(axis=(1, 2))], axis=1)
    got = np.asarray(features(calibration[:2]))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="head_filters"):
        micro.build_micro_model(head_filters=(0,))


def test_distillation_targets_mix_labels_and_teacher_scores():
    labels = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    teacher = np.array([[0.6, 0.2], [0.1, 0.7]], dtype=np.float32)
    np.testing.assert_allclose(
        micro_training.distillation_targets(labels, teacher, 0.25), [[0.9, 0.05], [0.025, 0.925]], atol=1e-6
    )
    np.testing.assert_array_equal(micro_training.distillation_targets(labels, teacher, 0.0), labels)
    with pytest.raises(ValueError, match="distill_weight"):
        micro_training.distillation_model(None, None, weight=1.5)


def test_distillation_loss_is_cross_entropy_against_the_mixed_targets(small_model, calibration):
    import keras

    keras.utils.set_random_seed(1)
    teacher = micro.build_micro_model(filters=(2,), head_filters=(), name="teacher")
    student = micro.build_micro_model(filters=FILTERS, head_filters=HEAD_FILTERS, name="student")
    distiller = micro_training.distillation_model(student, teacher, weight=0.3)
    distiller.compile(optimizer="adam", loss="binary_crossentropy")
    x = (calibration[:3] + 40.0) / 20.0  # unit scale: scores away from 0 and 1
    labels = (np.arange(3 * 56).reshape(3, 56) % 3 == 0).astype(np.float32)
    scores = np.asarray(student(x)).astype(np.float64)
    target = 0.7 * labels + 0.3 * np.asarray(teacher(x)).astype(np.float64)
    assert 0.001 < scores.min() and scores.max() < 0.999  # no clipping in the cross-entropy
    expected = -np.mean(target * np.log(scores) + (1 - target) * np.log(1 - scores))
    loss = distiller.compute_loss(x=x, y=labels, y_pred=student(x), training=False)
    assert float(loss) == pytest.approx(expected, rel=1e-4)
    # Training moves the student only: the teacher's weights stay as they were.
    before = [np.array(w) for w in teacher.weights]
    distiller.fit(x, labels, epochs=1, batch_size=3, verbose=0)
    for old, new in zip(before, teacher.weights):
        np.testing.assert_array_equal(old, np.asarray(new))
    assert not np.allclose(np.asarray(student(x)), scores)


def test_default_model_fits_the_board_with_margin(calibration):
    """The real TFLM arena of the default model: at least its two largest activations (the first
    two convolution outputs, live together), and within the budgets with room to spare."""
    import keras

    keras.utils.set_random_seed(0)
    report = tflm.export_micro(micro.build_micro_model(), None, calibration=calibration[:2])
    assert report["passed"] and not report["written"]
    first, second = 48 * 160 * micro.DEFAULT_FILTERS[0], 24 * 80 * micro.DEFAULT_FILTERS[1]
    assert first + second <= report["arena_bytes"] <= 0.8 * tflm.ARENA_BUDGET
    assert report["bytes"] <= 0.5 * tflm.FLASH_BUDGET
