"""The microcontroller model: TFLM export (allocation and outputs, C array, op resolver,
budgets), training as the "micro" preset through `train()`, and distillation (the Distiller)."""

import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tflite_micro", reason="the tflite-micro package runs the TFLM interpreter")

from tfmood.deploy import tflm
from tfmood.deploy.convert import ops_used
from tfmood.models import micro
from tfmood.train.distill import Distiller, distillation_targets

REPO = Path(__file__).resolve().parents[1]
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


def test_distillation_targets_mix_labels_and_teacher_scores(small_model):
    labels = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    teacher = np.array([[0.6, 0.2], [0.1, 0.7]], dtype=np.float32)
    np.testing.assert_allclose(
        distillation_targets(labels, teacher, 0.25), [[0.9, 0.05], [0.025, 0.925]], atol=1e-6
    )
    np.testing.assert_array_equal(distillation_targets(labels, teacher, 0.0), labels)
    for weight in (1.5, -0.1):
        with pytest.raises(ValueError, match="distill_weight must be in"):
            Distiller(small_model, small_model, weight=weight)
    longer = micro.build_micro_model(n_frames=2 * N_FRAMES, filters=(2,), head_filters=())
    with pytest.raises(ValueError, match=r"takes inputs of shape \(96, 640\)"):
        Distiller(small_model, longer)


def _bce(targets, scores):
    """Binary cross-entropy per example and tag (float64)."""
    return -(targets * np.log(scores) + (1 - targets) * np.log(1 - scores))


def test_distiller_loss_is_the_mixed_loss(calibration):
    """The loss of a batch: (1 - w) x cross-entropy with the labels + w x cross-entropy with the
    teacher's scores (numpy), in `compute_loss` and in `evaluate`; `fit` moves the student only."""
    import keras

    keras.utils.set_random_seed(1)
    teacher = micro.build_micro_model(filters=(2,), head_filters=(), name="teacher")
    student = micro.build_micro_model(filters=FILTERS, head_filters=HEAD_FILTERS, name="student")
    distiller = Distiller(student, teacher, weight=0.3)
    distiller.compile(optimizer="adam", loss="binary_crossentropy")
    x = (calibration[:3] + 40.0) / 20.0  # unit scale: scores away from 0 and 1
    labels = (np.arange(3 * 56).reshape(3, 56) % 3 == 0).astype(np.float32)
    scores = np.asarray(student(x)).astype(np.float64)
    soft = np.asarray(teacher(x)).astype(np.float64)
    assert 0.001 < scores.min() and scores.max() < 0.999  # no clipping in the cross-entropy
    expected = np.mean(0.7 * _bce(labels, scores) + 0.3 * _bce(soft, scores))
    loss = distiller.compute_loss(x=x, y=labels, y_pred=student(x), training=False)
    assert float(loss) == pytest.approx(expected, rel=1e-4)
    evaluated = distiller.evaluate(x, labels, batch_size=3, verbose=0)
    assert evaluated == pytest.approx(expected, rel=1e-4)
    np.testing.assert_allclose(distiller.predict(x, verbose=0), scores, atol=1e-6)  # the student
    # Training moves the student only: the teacher's weights stay as they were.
    before = [np.array(w) for w in teacher.weights]
    distiller.fit(x, labels, epochs=1, batch_size=3, verbose=0)
    for old, new in zip(before, teacher.weights):
        np.testing.assert_array_equal(old, np.asarray(new))
    assert not np.allclose(np.asarray(student(x)), scores)


def test_distillation_moves_the_student_toward_the_teacher(calibration):
    """Trained on the teacher's scores alone (w = 1), the student's scores come closer to the
    teacher's than they were, and closer than the same student trained on the labels (w = 0)."""
    import keras

    keras.utils.set_random_seed(2)
    x = (calibration + 40.0) / 20.0
    teacher = micro.build_micro_model(filters=(2,), head_filters=(), name="teacher")
    labels = (np.random.default_rng(2).random((len(x), 56)) < 0.5).astype(np.float32)
    student = micro.build_micro_model(filters=FILTERS, head_filters=HEAD_FILTERS, dropout=0.0)
    start = [np.array(w) for w in student.weights]
    soft = np.asarray(teacher(x))

    def distance_after(weight: float) -> float:
        student.set_weights(start)
        distiller = Distiller(student, teacher, weight=weight)
        distiller.compile(optimizer=keras.optimizers.Adam(1e-2), loss="binary_crossentropy")
        distiller.fit(x, labels, epochs=30, batch_size=len(x), verbose=0)
        return float(np.abs(np.asarray(student(x, training=True)) - soft).mean())

    student.set_weights(start)
    initial = float(np.abs(np.asarray(student(x, training=True)) - soft).mean())
    distilled, from_labels = distance_after(1.0), distance_after(0.0)
    assert distilled < 0.5 * initial
    assert distilled < 0.5 * from_labels


# ----------------------------------------------------------------------------------------------
# The micro preset trained by train()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A tiny synthetic corpus (24 tracks of 4 s) and the log-mel shards of its splits."""
    from tfmood.data.shards import write_shards
    from tfmood.data.synth import generate_corpus

    root = tmp_path_factory.mktemp("micro_corpus")
    info = generate_corpus(str(root / "synth"), 24, 4.0, 0, progress=False)
    shards = {}
    for split, tsv in info.split_paths.items():
        shards[split] = str(root / "shards" / split)
        write_shards(tsv, info.audio_dir, shards[split], source="audio", progress=False)
    return {"dir": info.out_dir, "tsv": info.split_paths, "shards": shards}


def micro_config(corpus, out_dir, **overrides):
    """training/configs/micro.yaml on the tiny corpus, with small channels and 2 epochs."""
    from tfmood.train.config import load_config
    from tfmood.train.fit import TrainConfig

    settings = dict(
        train_tsv=corpus["tsv"]["train"], validation_tsv=corpus["tsv"]["validation"],
        train_root=corpus["shards"]["train"], validation_root=corpus["shards"]["validation"],
        source="tfrecord", out_dir=str(out_dir), epochs=2, batch_size=4, micro_filters=FILTERS,
        micro_head_filters=HEAD_FILTERS, tensorboard=False, verbose=0,
    )  # fmt: skip
    return load_config(TrainConfig, str(REPO / "training" / "configs" / "micro.yaml"),
                       **{**settings, **overrides})  # fmt: skip


def test_shipped_micro_configs():
    from tfmood.train.config import load_config
    from tfmood.train.fit import TrainConfig

    configs = REPO / "training" / "configs"
    plain = load_config(TrainConfig, str(configs / "micro.yaml"))
    assert (plain.preset, plain.n_frames, plain.learning_rate) == ("micro", N_FRAMES, 3e-3)
    assert plain.micro_filters == micro.DEFAULT_FILTERS
    assert plain.micro_head_filters == micro.DEFAULT_HEAD_FILTERS
    assert plain.teacher is None and plain.random_crop and plain.lr_schedule == "cosine"
    distilled = load_config(TrainConfig, str(configs / "micro-distilled.yaml"))
    assert distilled.teacher and distilled.distill_weight == 0.5 and distilled.preset == "micro"


def test_micro_preset_trains_through_train_reloads_and_exports(corpus, tmp_path):
    import keras

    from tfmood.cli import main
    from tfmood.metrics import defined_columns, macro_roc_auc
    from tfmood.train.callbacks import read_history
    from tfmood.train.fit import datasets, train

    config = micro_config(corpus, tmp_path / "run")
    result = train(config)
    assert result.epochs_run == 2 and 1 <= result.best_epoch <= 2
    for name in ("best.keras", "history.csv", "config.yaml", "result.json", "curves.png"):
        assert (tmp_path / "run" / name).is_file(), name
    model = keras.saving.load_model(result.best_model, safe_mode=True)
    assert model.input_shape == (None, micro.N_MELS, N_FRAMES)
    assert [model.get_layer(f"conv_{i}").filters for i in range(3)] == [4, 8, 8]
    # The saved model is the best epoch's: its validation ROC-AUC is the logged one (sklearn).
    _, validation, labels = datasets(config)
    scores = model.predict(validation, verbose=0)[: len(labels)]
    columns = defined_columns(labels)
    rows = read_history(str(tmp_path / "run" / "history.csv"))
    logged = rows[result.best_epoch - 1]["val_roc_auc"]
    assert macro_roc_auc(labels[:, columns], scores[:, columns]) == pytest.approx(logged, abs=1e-5)
    out = tmp_path / "fw" / "model.tflite"
    argv = ["export", result.best_model, "--target", "micro", "-o", str(out),
            "--calibration", corpus["dir"], "--limit", "8", "--json"]  # fmt: skip
    assert main(argv) == 0
    assert out.is_file() and (out.parent / "model_data.cc").is_file()


def test_micro_preset_distilled_through_train_saves_the_student(corpus, tmp_path):
    import keras

    from tfmood.train.fit import _save_backup_as_best, build_and_compile, train

    keras.utils.set_random_seed(0)
    teacher_path = tmp_path / "teacher.keras"
    micro.build_micro_model(filters=(2,), head_filters=(), name="teacher").save(teacher_path)
    config = micro_config(corpus, tmp_path / "run", teacher=str(teacher_path), epochs=1)
    result = train(config)
    student = keras.saving.load_model(result.best_model, safe_mode=True)
    assert student.name == "micro_cnn" and "teacher" not in {layer.name for layer in student.layers}
    assert student.count_params() == micro.build_micro_model(
        filters=FILTERS, head_filters=HEAD_FILTERS).count_params()  # fmt: skip
    # Resuming from a backup (the Distiller's weights and optimizer) also saves the student.
    distiller = build_and_compile(config)
    assert isinstance(distiller, Distiller)
    x = np.random.default_rng(0).normal(0, 1, (4, micro.N_MELS, N_FRAMES)).astype("float32")
    distiller.fit(x, np.ones((4, 56), "float32"), epochs=1, verbose=0)
    weights = tmp_path / "backup" / "latest.weights.h5"
    weights.parent.mkdir()
    distiller.save_weights(weights)
    best = tmp_path / "resumed.keras"
    _save_backup_as_best(config, str(weights), str(best))
    resumed = keras.saving.load_model(best, safe_mode=True)
    np.testing.assert_allclose(resumed.predict(x, verbose=0), distiller.predict(x, verbose=0),
                               atol=1e-6)  # fmt: skip


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
