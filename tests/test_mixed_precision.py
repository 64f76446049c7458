"""Mixed-precision training (`TrainConfig.precision`): float32 variables and scores, bf16
computation close to float32's (the model and each tfmood layer), no global policy left behind, a
float32 saved model that exports as before, and the option's validation from Python, YAML and
the command line.

The training run trains the baseline at width 0.25 on a tiny synthetic corpus (24 tracks of 4 s)
with 320-frame inputs and batches of 4, under mixed_bfloat16 (emulated where the CPU has no
native bf16: slower, but the same numbers).
"""

import json
import warnings
import zipfile

import keras
import numpy as np
import pytest

from tfmood.train import precision
from tfmood.train.fit import TrainConfig, build_and_compile, train

N_TRACKS, SECONDS, SEED = 24, 4.0, 0
TINY = {"n_frames": 320, "width": 0.25, "batch_size": 4, "tensorboard": False, "verbose": 0}


def random_batch(count: int, n_frames: int = 320, seed: int = 1) -> tuple:
    """Log-mel-like inputs (dB) and multi-hot labels."""
    rng = np.random.default_rng(seed)
    mel = rng.normal(-40.0, 20.0, (count, 96, n_frames)).astype(np.float32)
    labels = (rng.random((count, 56)) < 0.1).astype(np.float32)
    return mel, labels


def saved_dtype_names(path) -> set:
    """Every dtype policy name in a `.keras` file's config.json."""
    with zipfile.ZipFile(path) as archive:
        config = json.loads(archive.read("config.json"))
    names = set()

    def visit(node):
        if isinstance(node, dict):
            if node.get("class_name") == "DTypePolicy":
                names.add(node["config"]["name"])
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(config)
    return names


@pytest.fixture
def no_gpu(monkeypatch):
    """A machine without a visible GPU, whatever this one has."""
    import tensorflow as tf

    devices = tf.config.list_logical_devices
    monkeypatch.setattr(
        tf.config, "list_logical_devices",
        lambda kind=None: [] if kind == "GPU" else devices(kind),
    )  # fmt: skip


# ----------------------------------------------------------------------------------------------
# The model under a mixed policy


@pytest.fixture(scope="module")
def bf16_model():
    """The tiny baseline built and trained for two steps under mixed_bfloat16."""
    keras.utils.set_random_seed(SEED)
    config = TrainConfig(preset="baseline", precision="mixed_bfloat16", prior_bias=False, **TINY)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no native bf16 on this CPU: emulated, same numbers
        model = build_and_compile(config)
    mel, labels = random_batch(8)
    model.fit(mel, labels, batch_size=4, epochs=1, verbose=0)
    return model


def test_mixed_model_has_float32_variables_bf16_layers_and_float32_scores(bf16_model):
    assert {variable.dtype for variable in bf16_model.weights} == {"float32"}
    computes = {layer.name: layer.compute_dtype for layer in bf16_model.layers}
    assert computes["conv_1"] == computes["bn_3"] == computes["act_5"] == "bfloat16"
    assert computes["dense"] == "float32"
    scores = bf16_model.predict(random_batch(4, seed=2)[0], verbose=0)
    assert scores.dtype == np.float32 and scores.shape == (4, 56)


def test_mixed_scores_are_close_to_float32_computation(bf16_model):
    """The same weights in a float32 model built anew: bf16 has an 8-bit mantissa (relative
    rounding 2**-9), so scores differ, but by far less than they vary between inputs."""
    from tfmood.models.vggish import build_model

    reference = build_model("baseline", n_frames=None, width=TINY["width"])
    reference.set_weights(bf16_model.get_weights())
    mel = random_batch(8, seed=3)[0]
    expected = reference.predict(mel, verbose=0)
    scores = bf16_model.predict(mel, verbose=0)
    difference = np.abs(scores - expected)
    assert 0 < difference.max() < 0.05  # non-zero: the layers really compute in bf16
    assert difference.mean() < 0.25 * np.std(expected)
    assert np.corrcoef(scores.ravel(), expected.ravel())[0, 1] > 0.99


def test_float32_copy_keeps_weights_and_optimizer_state(bf16_model):
    copy = precision.float32_copy(bf16_model)
    assert precision.is_float32(copy) and not precision.is_float32(bf16_model)
    for kept, trained in zip(copy.get_weights(), bf16_model.get_weights(), strict=True):
        np.testing.assert_array_equal(kept, trained)
    assert int(copy.optimizer.iterations.numpy()) == 2
    for kept, trained in zip(copy.optimizer.variables, bf16_model.optimizer.variables,
                             strict=True):  # fmt: skip
        np.testing.assert_array_equal(kept.numpy(), trained.numpy())


def custom_layer(name: str, dtype: str):
    from tfmood import layers

    return {
        "arelu": lambda: layers.AReLU(dtype=dtype),
        "attention": lambda: layers.LocalSelfAttention(8, dtype=dtype),
        "attention_heads": lambda: layers.LocalSelfAttention(8, heads=2, dtype=dtype),
        "augmented": lambda: layers.AttentionAugmentedConv2D(16, heads=2, dtype=dtype),
        "export_attention": lambda: layers.ExportLocalSelfAttention(8, dtype=dtype),
        "batch_norm": lambda: layers.SyncBatchNormalization(dtype=dtype),
    }[name]()


@pytest.mark.parametrize(
    "name",
    ["arelu", "attention", "attention_heads", "augmented", "export_attention", "batch_norm"],
)
def test_custom_layers_compute_in_bf16_close_to_float32(name):
    """Each tfmood layer under a mixed policy: float32 variables, bf16 outputs, float32
    gradients for every variable, outputs within bf16 rounding of the float32 layer's."""
    import tensorflow as tf

    x = tf.constant(np.random.default_rng(0).normal(size=(2, 8, 12, 8)).astype("float32"))
    mixed = custom_layer(name, "mixed_bfloat16")
    with tf.GradientTape() as tape:
        outputs = mixed(x, training=True)
        loss = tf.reduce_sum(tf.cast(outputs, "float32") ** 2)
    gradients = tape.gradient(loss, mixed.trainable_variables)
    assert outputs.dtype == "bfloat16"
    assert {variable.dtype for variable in mixed.weights} == {"float32"}
    assert all(g is not None and g.dtype == "float32" for g in gradients)
    reference = custom_layer(name, "float32")
    reference.build(x.shape)
    reference.set_weights(mixed.get_weights())
    expected = reference(x, training=True).numpy()
    error = np.abs(np.asarray(outputs, dtype="float32") - expected).max()
    assert error <= 0.03 * np.abs(expected).max()


def test_log_mel_stays_float32_under_a_mixed_policy():
    """The front-end keeps float32 (its -200 dB floor is below float16's range) when a mixed
    global policy is in force."""
    from tfmood.layers import LogMel

    waveform = np.random.default_rng(1).normal(size=(1, 4096)).astype("float32")
    with precision.dtype_policy("mixed_float16"):
        layer = LogMel()
    assert layer.compute_dtype == "float32"
    np.testing.assert_array_equal(layer(waveform), LogMel()(waveform))


def test_dtype_policy_is_restored_after_the_block_and_after_an_error():
    assert keras.config.dtype_policy().name == "float32"
    with precision.dtype_policy("mixed_bfloat16"):
        assert keras.config.dtype_policy().name == "mixed_bfloat16"
    assert keras.config.dtype_policy().name == "float32"
    with pytest.raises(RuntimeError), precision.dtype_policy("mixed_bfloat16"):
        raise RuntimeError("interrupted")
    assert keras.config.dtype_policy().name == "float32"


def test_mixed_float16_wraps_adam_in_loss_scaling(monkeypatch):
    import tensorflow as tf

    devices = tf.config.list_logical_devices
    monkeypatch.setattr(
        tf.config, "list_logical_devices",
        lambda kind=None: ["a GPU"] if kind == "GPU" else devices(kind),
    )  # fmt: skip
    config = TrainConfig(preset="baseline", precision="mixed_float16", prior_bias=False, **TINY)
    model = build_and_compile(config)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert model.get_layer("conv_2").compute_dtype == "float16"
    assert precision.loss_scaled(keras.optimizers.Adam(), "mixed_bfloat16").__class__ is (
        keras.optimizers.Adam
    )


# ----------------------------------------------------------------------------------------------
# Where each precision may run


def test_mixed_float16_without_a_gpu_is_refused(no_gpu):
    with pytest.raises(ValueError, match="mixed_float16 needs a GPU"):
        precision.check_precision("mixed_float16")
    with pytest.raises(ValueError, match="mixed_float16 needs a GPU"):
        build_and_compile(TrainConfig(precision="mixed_float16", **TINY))


def test_bf16_warns_only_without_native_bf16(no_gpu, tmp_path):
    plain = tmp_path / "avx2"
    plain.write_text("flags\t\t: fpu sse2 avx avx2 fma\n")
    native = tmp_path / "avx512"
    native.write_text("flags\t\t: fpu avx2 avx512f avx512_vnni avx512_bf16\n")
    assert not precision.has_native_bf16(str(plain))
    assert precision.has_native_bf16(str(native))
    assert not precision.has_native_bf16(str(tmp_path / "absent"))
    with pytest.warns(UserWarning, match="emulated"):
        precision.check_precision("mixed_bfloat16", cpuinfo=str(plain))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        precision.check_precision("mixed_bfloat16", cpuinfo=str(native))
        precision.check_precision("float32", cpuinfo=str(plain))


# ----------------------------------------------------------------------------------------------
# The option from Python, YAML and the command line


def test_bad_precision_is_refused_with_the_field_name(tmp_path, capsys):
    from tfmood.cli import main

    with pytest.raises(ValueError, match="precision must be one of"):
        TrainConfig(precision="float16")
    path = tmp_path / "run.yaml"
    path.write_text("preset: baseline\nprecision: bf16\n")
    with pytest.raises(ValueError, match="precision"):
        TrainConfig.from_yaml(str(path))
    assert main(["train", "--precision", "half"]) == 2
    assert "precision" in capsys.readouterr().err


def test_precision_from_yaml_and_command_line(tmp_path):
    from tfmood.cli import build_parser
    from tfmood.cli.train import overrides_of

    path = tmp_path / "run.yaml"
    path.write_text("preset: sa3\nprecision: mixed_bfloat16\n")
    assert TrainConfig.from_yaml(str(path)).precision == "mixed_bfloat16"
    assert TrainConfig().precision == "float32"
    args = build_parser().parse_args(["train", "--config", str(path), "--precision", "float32"])
    config = TrainConfig.from_yaml(args.config, **overrides_of(args))
    assert (config.preset, config.precision) == ("sa3", "float32")


# ----------------------------------------------------------------------------------------------
# A whole run, its saved model and its export


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The synthetic corpus (WAV, split TSVs) and the log-mel shards of its splits."""
    from tfmood.data.shards import write_shards
    from tfmood.data.synth import generate_corpus

    root = tmp_path_factory.mktemp("corpus")
    info = generate_corpus(str(root / "synth"), N_TRACKS, SECONDS, SEED, progress=False)
    shards = {}
    for split, tsv in info.split_paths.items():
        shards[split] = str(root / "shards" / split)
        write_shards(tsv, info.audio_dir, shards[split], source="audio", progress=False)
    return {"dir": info.out_dir, "tsv": info.split_paths, "shards": shards}


@pytest.fixture(scope="module")
def bf16_run(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    config = TrainConfig(
        preset="baseline",
        train_tsv=corpus["tsv"]["train"],
        validation_tsv=corpus["tsv"]["validation"],
        train_root=corpus["shards"]["train"],
        validation_root=corpus["shards"]["validation"],
        source="tfrecord",
        out_dir=str(out),
        epochs=2,
        precision="mixed_bfloat16",
        **TINY,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = train(config)
    return config, result


def test_run_leaves_no_policy_and_saves_a_float32_model(bf16_run):
    from tfmood.models.vggish import load_model

    config, result = bf16_run
    assert keras.config.dtype_policy().name == "float32"
    assert saved_dtype_names(result.best_model) == {"float32"}
    model = load_model(result.best_model)
    assert precision.is_float32(model)
    assert {variable.dtype for variable in model.weights} == {"float32"}
    assert TrainConfig.from_yaml(f"{config.out_dir}/config.yaml").precision == "mixed_bfloat16"
    scores = model.predict(random_batch(2)[0], verbose=0)
    assert scores.dtype == np.float32 and np.all((scores >= 0) & (scores <= 1))


@pytest.mark.parametrize("target, dtype", [("float32", "float32"), ("int8", "int8")])
def test_model_trained_in_bf16_exports_and_passes_its_checks(bf16_run, corpus, tmp_path, target,
                                                             dtype):  # fmt: skip
    from tfmood.deploy.export import export_model

    _, result = bf16_run
    out = tmp_path / "model.tflite"
    report = export_model(result.best_model, target, str(out), calibration=corpus["dir"],
                          n_frames=TINY["n_frames"], progress=False)  # fmt: skip
    assert report["passed"] and report["written"] and out.is_file()
    assert report["inputs"][0]["dtype"] == report["outputs"][0]["dtype"] == dtype
    assert not any("bf16" in op.lower() or "bfloat" in op.lower() for op in report["ops"])


def test_a_mid_run_bf16_checkpoint_exports_as_float32(bf16_model, corpus, tmp_path):
    """A checkpoint saved during a mixed run keeps bf16 layers; the export builds float32."""
    from tfmood.deploy.export import export_model
    from tfmood.train.precision import is_float32

    checkpoint = tmp_path / "best.keras"
    bf16_model.save(checkpoint)
    assert "mixed_bfloat16" in saved_dtype_names(checkpoint) and not is_float32(bf16_model)
    out = tmp_path / "model.tflite"
    report = export_model(str(checkpoint), "float32", str(out), calibration=corpus["dir"],
                          n_frames=TINY["n_frames"], progress=False)  # fmt: skip
    assert report["passed"] and out.is_file()
    assert report["inputs"][0]["dtype"] == report["outputs"][0]["dtype"] == "float32"
