"""The training loop: a run's files, its validation AUCs against sklearn, early stopping, resume
after a kill, configs and command-line overrides, and training/fit.py.

Every run trains the baseline at width 0.25 on a tiny synthetic corpus (30 tracks of 4 s, their
log-mel shards written once for the module) with 320-frame inputs and batches of 4.
"""

import json
import os
import runpy
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from tfmood.train.fit import TrainConfig, train

REPO = Path(__file__).resolve().parents[1]
N_TRACKS, SECONDS, SEED = 30, 4.0, 0
TINY = {"n_frames": 320, "width": 0.25, "batch_size": 4, "tensorboard": False, "verbose": 2}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The synthetic corpus and the log-mel shards of its three splits."""
    from tfmood.data.shards import write_shards
    from tfmood.data.synth import generate_corpus

    root = tmp_path_factory.mktemp("corpus")
    info = generate_corpus(str(root / "synth"), N_TRACKS, SECONDS, SEED, progress=False)
    shards = {}
    for split, tsv in info.split_paths.items():
        shards[split] = str(root / "shards" / split)
        write_shards(tsv, info.audio_dir, shards[split], source="audio", progress=False)
    return {"tsv": info.split_paths, "shards": shards}


def tiny_settings(corpus, out_dir, **changes) -> dict:
    """TrainConfig fields of a tiny run on the corpus shards."""
    settings = dict(
        preset="baseline",
        train_tsv=corpus["tsv"]["train"],
        validation_tsv=corpus["tsv"]["validation"],
        train_root=corpus["shards"]["train"],
        validation_root=corpus["shards"]["validation"],
        source="tfrecord",
        out_dir=str(out_dir),
        epochs=3,
        **TINY,
    )
    settings.update(changes)
    return settings


def read_rows(csv_path) -> list:
    from tfmood.train.callbacks import read_history

    return read_history(str(csv_path))


def sklearn_validation_aucs(model_path, corpus) -> tuple:
    """Macro ROC-AUC and PR-AUC of a saved model on the validation split, from sklearn.

    The labels come from the split file, the scores from `model.predict` on the validation
    pipeline at the training batch size (as the callback computes them, so the arithmetic is
    the same); the macro averages run over the tags with positive and negative tracks.
    """
    import keras
    from sklearn.metrics import average_precision_score, roc_auc_score

    import tfmood.layers  # noqa: F401  (registers the custom layers)
    from tfmood.data.metadata import label_matrix, read_split
    from tfmood.data.pipeline import make_dataset

    model = keras.saving.load_model(str(model_path), safe_mode=True)
    tsv = corpus["tsv"]["validation"]
    dataset = make_dataset(
        tsv, corpus["shards"]["validation"], "tfrecord", n_frames=TINY["n_frames"],
        batch_size=TINY["batch_size"], progress=False,
    )  # fmt: skip
    scores = model.predict(dataset, verbose=0)
    labels = label_matrix(read_split(tsv)).astype(bool)
    assert scores.shape == labels.shape
    defined = labels.any(axis=0) & ~labels.all(axis=0)
    assert defined.sum() >= 2, "the validation split needs tags with positives and negatives"
    roc = roc_auc_score(labels[:, defined], scores[:, defined], average="macro")
    pr = average_precision_score(labels[:, defined], scores[:, defined], average="macro")
    return roc, pr


# ----------------------------------------------------------------------------------------------
# One finished run


@pytest.fixture(scope="module")
def finished_run(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    config = TrainConfig(**tiny_settings(corpus, out))
    return config, train(config)


def test_run_writes_model_history_curves_and_result(finished_run):
    import keras

    import tfmood.layers  # noqa: F401

    config, result = finished_run
    out = Path(config.out_dir)
    model = keras.saving.load_model(str(out / "best.keras"), safe_mode=True)
    assert model.predict_on_batch(np.zeros((1, 96, 320), np.float32)).shape == (1, 56)

    with open(out / "history.csv") as handle:
        header = handle.readline().strip().split(",")
    assert {"epoch", "loss", "val_loss", "val_roc_auc", "val_pr_auc"} <= set(header)
    rows = read_rows(out / "history.csv")
    assert [int(row["epoch"]) for row in rows] == [0, 1, 2]
    assert all(0.0 <= row["val_roc_auc"] <= 1.0 for row in rows)

    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "result.json").read_text()) == result.as_dict()
    assert result.epochs_run == 3 and result.best_model == str(out / "best.keras")
    best = max(rows, key=lambda row: row["val_roc_auc"])  # first maximum, as the selector
    assert result.best_epoch == int(best["epoch"]) + 1
    assert (result.val_roc_auc, result.val_pr_auc) == (best["val_roc_auc"], best["val_pr_auc"])
    assert TrainConfig.from_yaml(str(out / "config.yaml")) == config
    assert not (out / "backup").exists(), "the backup of a finished run is removed"


def test_logged_validation_aucs_equal_sklearn_on_the_best_model(finished_run, corpus):
    # best.keras holds the weights that produced the best epoch's row, whichever epoch that is,
    # so sklearn on its predictions must give the logged numbers exactly.
    _, result = finished_run
    roc, pr = sklearn_validation_aucs(result.best_model, corpus)
    assert result.val_roc_auc == pytest.approx(roc, abs=1e-12)
    assert result.val_pr_auc == pytest.approx(pr, abs=1e-12)


def test_logged_validation_loss_equals_keras_evaluate_on_the_best_model(finished_run, corpus):
    import keras

    import tfmood.layers  # noqa: F401
    from tfmood.data.pipeline import make_dataset

    config, result = finished_run
    model = keras.saving.load_model(result.best_model, safe_mode=True)
    model.compile(loss="binary_crossentropy")
    dataset = make_dataset(
        corpus["tsv"]["validation"], corpus["shards"]["validation"], "tfrecord",
        n_frames=TINY["n_frames"], batch_size=TINY["batch_size"], progress=False,
    )  # fmt: skip
    keras_loss = model.evaluate(dataset, verbose=0)
    best = [r for r in read_rows(Path(config.out_dir) / "history.csv")
            if int(r["epoch"]) + 1 == result.best_epoch][0]
    assert best["val_loss"] == pytest.approx(keras_loss, rel=1e-5)


def test_finished_run_is_not_trained_again(finished_run):
    config, result = finished_run
    out = Path(config.out_dir)
    before = {name: (out / name).stat().st_mtime_ns for name in ("best.keras", "history.csv")}
    assert train(config) == result
    assert {name: (out / name).stat().st_mtime_ns for name in before} == before


def test_finished_history_without_result_restores_the_best_model_from_the_backup(
    finished_run, tmp_path
):
    # As if killed after the backup of the last epoch, the best one, but before its model was
    # saved: history and backup are complete, best.keras is missing and result.json too.
    import shutil

    import keras

    import tfmood.layers  # noqa: F401

    config, result = finished_run
    out = tmp_path / "run"
    shutil.copytree(config.out_dir, out)
    original = keras.saving.load_model(str(out / "best.keras"), safe_mode=True)
    with open(out / "history.csv") as handle:
        lines = handle.readlines()[: result.best_epoch + 1]  # up to the best epoch
    (out / "history.csv").write_text("".join(lines))
    (out / "backup").mkdir()
    original.save_weights(str(out / "backup" / "latest.weights.h5"))
    (out / "backup" / "training_metadata.json").write_text(
        json.dumps({"epoch": result.best_epoch, "batch": 0})
    )
    (out / "best.keras").unlink()
    (out / "result.json").unlink()

    finished = TrainConfig(**{**vars(config), "out_dir": str(out), "epochs": result.best_epoch})
    restored = train(finished)
    assert restored.val_roc_auc == result.val_roc_auc
    assert restored.best_epoch == restored.epochs_run == result.best_epoch
    assert not (out / "backup").exists()
    mel = np.random.default_rng(0).normal(-40, 20, (4, 96, 320)).astype(np.float32)
    model = keras.saving.load_model(str(out / "best.keras"), safe_mode=True)
    np.testing.assert_array_equal(model.predict_on_batch(mel), original.predict_on_batch(mel))


# ----------------------------------------------------------------------------------------------
# Early stopping


def scripted_metric(values: list):
    """A stand-in for macro_roc_auc that returns `values` in turn and counts its calls."""
    calls = []

    def metric(groundtruth, predictions, tags=None):
        calls.append(len(calls))
        return values[len(calls) - 1]

    return metric, calls


def test_early_stopping_counts_patience_from_the_last_improvement(corpus, tmp_path, monkeypatch):
    from tfmood import metrics

    # Epoch 2 improves, epoch 3 does not: patience 1 stops there, before the better epoch 4.
    metric, calls = scripted_metric([0.6, 0.7, 0.65, 0.9, 0.95])
    monkeypatch.setattr(metrics, "macro_roc_auc", metric)
    config = TrainConfig(**tiny_settings(corpus, tmp_path, epochs=5, patience=1, steps_per_epoch=1))
    result = train(config)

    assert len(calls) == 3
    rows = read_rows(tmp_path / "history.csv")
    assert [row["val_roc_auc"] for row in rows] == [0.6, 0.7, 0.65]
    assert (result.best_epoch, result.epochs_run, result.val_roc_auc) == (2, 3, 0.7)


def test_selector_with_patience_zero_never_stops(tmp_path):
    import keras

    from tfmood.train.callbacks import BestCheckpointEarlyStopping

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    selector = BestCheckpointEarlyStopping(str(tmp_path / "best.keras"), "", patience=0)
    selector.set_model(model)
    selector.on_train_begin()
    for epoch, value in enumerate([0.6, 0.5, 0.4, 0.3]):
        selector.on_epoch_end(epoch, {"val_roc_auc": value})
    assert not getattr(model, "stop_training", False) and selector.stopped_epoch is None
    assert (selector.best, selector.best_epoch) == (0.6, 0)
    assert (tmp_path / "best.keras").exists()


# ----------------------------------------------------------------------------------------------
# Resume after a kill


def train_command(config_path, out_dir, epochs: int) -> list:
    return [
        sys.executable, "-m", "tfmood", "train", "--config", str(config_path),
        "--out-dir", str(out_dir), "--epochs", str(epochs),
    ]  # fmt: skip


def kill_after_first_backup(command: list, backup_meta: Path, log: Path, timeout: float) -> None:
    """Run `command` until the backup of its first epoch exists, then SIGKILL it."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    with open(log, "w") as output:
        process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + timeout
            while not backup_meta.exists() and time.monotonic() < deadline:
                assert process.poll() is None, f"training exited early:\n{log.read_text()}"
                time.sleep(0.02)
            assert backup_meta.exists(), f"no backup after {timeout} s:\n{log.read_text()}"
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()


@pytest.mark.slow
def test_killed_run_resumes_from_its_backup(corpus, tmp_path):
    from tfmood.train.callbacks import backup_epoch

    epochs = 4
    config_path = tmp_path / "tiny.yaml"
    config_path.write_text(yaml.safe_dump(tiny_settings(corpus, "unused", epochs=1)))
    out = tmp_path / "run"
    command = train_command(config_path, out, epochs)
    kill_after_first_backup(command, out / "backup" / "training_metadata.json",
                            tmp_path / "killed.log", timeout=300)  # fmt: skip

    committed = backup_epoch(str(out / "backup"))
    assert 1 <= committed < epochs, "killed too late to test resuming"
    rows_before = read_rows(out / "history.csv")[:committed]
    assert [int(row["epoch"]) for row in rows_before] == list(range(committed))
    # As if killed after the CSV row of the next epoch but before its backup: a resumed run
    # must drop this row (else its epoch would appear twice and its 1.0 would be the best).
    with open(out / "history.csv") as handle:
        header = handle.readline().strip().split(",")
    fake = {**rows_before[-1], "epoch": committed, "val_roc_auc": 1.0}
    with open(out / "history.csv", "a") as handle:
        handle.write(",".join(repr(float(fake[name])) for name in header) + "\n")

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    resumed = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    epoch_lines = [line for line in resumed.stdout.splitlines() if line.startswith("Epoch ")]
    assert epoch_lines[0] == f"Epoch {committed + 1}/{epochs}", resumed.stdout
    assert len(epoch_lines) == epochs - committed

    rows = read_rows(out / "history.csv")
    assert [int(row["epoch"]) for row in rows] == list(range(epochs))
    assert rows[:committed] == rows_before
    assert 1.0 not in [row["val_roc_auc"] for row in rows]
    result = json.loads((out / "result.json").read_text())
    assert result["epochs_run"] == epochs
    # best.keras is a valid model and is the one that scored the best row.
    roc, _ = sklearn_validation_aucs(out / "best.keras", corpus)
    assert result["val_roc_auc"] == pytest.approx(roc, abs=1e-12)
    assert result["val_roc_auc"] == max(row["val_roc_auc"] for row in rows)

    # The same command again: the run is finished, nothing is trained.
    from tfmood.cli import main

    mtime = (out / "best.keras").stat().st_mtime_ns
    assert main(command[3:]) == 0
    assert (out / "best.keras").stat().st_mtime_ns == mtime
    assert read_rows(out / "history.csv") == rows


# ----------------------------------------------------------------------------------------------
# Configs and command-line overrides


@pytest.mark.parametrize("preset", ["baseline", "sa3", "sa4", "sa5", "arelu", "sa3-arelu"])
def test_shipped_configs_hold_the_paper_settings(preset):
    config = TrainConfig.from_yaml(str(REPO / "training" / "configs" / f"{preset}.yaml"))
    assert config.preset == preset
    assert (config.batch_size, config.learning_rate) == (16, 1e-4)
    assert (config.epochs, config.patience, config.n_frames) == (100, 35, 1400)


def test_yaml_overrides_win_and_numbers_are_converted(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("preset: sa3\nlearning_rate: 3e-4\nepochs: 7\nwidth: 1\njit_compile: yes\n")
    config = TrainConfig.from_yaml(str(path), epochs=2, batch_size=None)
    assert config.preset == "sa3" and config.epochs == 2 and config.batch_size == 16
    assert config.learning_rate == 3e-4 and isinstance(config.learning_rate, float)
    assert config.width == 1.0 and config.jit_compile is True


@pytest.mark.parametrize(
    "text, line, message",
    [
        ("preset: sa3\nlearnin_rate: 0.1\n", 2, "unknown config field 'learnin_rate'"),
        ("epochs: ten\n", 1, "epochs must be int, got 'ten'"),
        ("jit_compile: maybe\n", 1, "jit_compile must be bool"),
        ("- preset\n", 1, "a config must be a mapping"),
    ],
)
def test_bad_config_names_the_file_and_the_problem(tmp_path, text, line, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=f"{path}:{line}: .*") as error:
        TrainConfig.from_yaml(str(path))
    assert message in str(error.value)


def test_width_from_yaml_list_and_command_line(tmp_path):
    from tfmood.cli import build_parser
    from tfmood.cli.train import overrides_of

    path = tmp_path / "run.yaml"
    path.write_text("width: [0.25, 0.25, 0.5, 1, 1]\n")
    assert TrainConfig.from_yaml(str(path)).width == (0.25, 0.25, 0.5, 1.0, 1.0)
    args = build_parser().parse_args(["train", "--width", "0.5,0.5,1,1,1"])
    assert overrides_of(args)["width"] == (0.5, 0.5, 1.0, 1.0, 1.0)
    # The written config.yaml reads back to the same config.
    config = TrainConfig(width=(0.5, 0.5, 1, 1, 1), out_dir=str(tmp_path))
    config.to_yaml(str(tmp_path / "config.yaml"))
    assert TrainConfig.from_yaml(str(tmp_path / "config.yaml")) == config


def test_cosine_schedule_decays_to_zero_over_all_steps(corpus):
    from tfmood.train.fit import learning_rate, steps_per_epoch

    config = TrainConfig(train_tsv=corpus["tsv"]["train"], batch_size=4, epochs=3,
                         learning_rate=1e-3, lr_schedule="cosine")
    n_train = len(open(corpus["tsv"]["train"]).read().splitlines()) - 1  # minus the header
    steps = -(-n_train // 4)
    assert steps_per_epoch(config) == steps
    schedule = learning_rate(config)
    total = 3 * steps
    for step in (0, total // 3, total // 2, total):
        expected = 1e-3 * 0.5 * (1 + np.cos(np.pi * step / total))
        assert float(schedule(step)) == pytest.approx(expected, rel=1e-5, abs=1e-9)
    assert learning_rate(TrainConfig(train_tsv=config.train_tsv)) == 1e-4


def test_bad_strategy_is_refused():
    with pytest.raises(ValueError, match="strategy must be one of"):
        TrainConfig(strategy="parameter-server")


def test_command_line_flags_override_the_config(tmp_path):
    from tfmood.cli import build_parser
    from tfmood.cli.train import overrides_of

    path = tmp_path / "run.yaml"
    path.write_text("preset: sa3\nepochs: 7\ntensorboard: true\n")
    argv = ["train", "--config", str(path), "--batch-size", "8", "--learning-rate", "2e-4",
            "--heads", "4", "--tensorboard", "off", "--strategy", "mirrored"]  # fmt: skip
    args = build_parser().parse_args(argv)
    overrides = overrides_of(args)
    assert overrides == {
        "batch_size": 8,
        "learning_rate": 2e-4,
        "heads": 4,
        "tensorboard": False,
        "strategy": "mirrored",
    }
    config = TrainConfig.from_yaml(args.config, **overrides)
    assert (config.preset, config.epochs, config.batch_size, config.heads) == ("sa3", 7, 8, 4)
    assert config.tensorboard is False and config.strategy == "mirrored"


@pytest.mark.parametrize(
    "text, value",
    [("true", True), ("YES", True), ("1", True), ("On", True),
     ("false", False), ("no", False), ("0", False), ("OFF", False)],
)  # fmt: skip
def test_boolean_flags(text, value):
    from tfmood.cli import build_parser

    args = build_parser().parse_args(["train", "--jit-compile", text])
    assert args.jit_compile is value


def test_bad_boolean_flag_is_a_usage_error(capsys):
    from tfmood.cli import build_parser

    with pytest.raises(SystemExit) as error:
        build_parser().parse_args(["train", "--skip-bad", "maybe"])
    assert error.value.code == 2
    assert "--skip-bad" in capsys.readouterr().err


def test_missing_config_file_is_reported(tmp_path, capsys):
    from tfmood.cli import main

    assert main(["train", "--config", str(tmp_path / "absent.yaml")]) == 2
    assert "absent.yaml" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# training/fit.py


def test_fit_script_trains_and_tests(corpus, tmp_path, monkeypatch):
    config_path = tmp_path / "tiny.yaml"
    config_path.write_text(yaml.safe_dump(tiny_settings(corpus, tmp_path / "run", epochs=1)))
    test_split = ["--test-tsv", corpus["tsv"]["test"], "--test-root", corpus["shards"]["test"]]
    argv = ["fit.py", "--config", str(config_path), "--steps-per-epoch", "2", *test_split]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(REPO / "training" / "fit.py"), run_name="__main__")

    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["epochs_run"] == 1
    report = json.loads((tmp_path / "run" / "test" / "metrics.json").read_text())
    assert 0.0 <= report["ROC-AUC-macro"] <= 1.0
    predictions = np.load(tmp_path / "run" / "test" / "predictions.npy", allow_pickle=False)
    assert predictions.shape[1] == 56


def test_a_split_is_cached_in_memory_only_within_the_cache_limit(corpus, tmp_path):
    from tfmood.train.fit import cache_bytes, cache_fits, datasets

    tsv = corpus["tsv"]["validation"]
    n_tracks = len(open(tsv).read().splitlines()) - 1  # minus the header
    config = TrainConfig(**tiny_settings(corpus, tmp_path))
    assert cache_bytes(config, tsv) == n_tracks * 96 * config.n_frames * 4
    whole_tracks = TrainConfig(**tiny_settings(corpus, tmp_path, random_crop=True))
    assert cache_bytes(whole_tracks, tsv) == 8 * cache_bytes(config, tsv)
    assert cache_fits(config, tsv)  # a few hundred kB under the default 1024 MB
    assert not cache_fits(TrainConfig(**tiny_settings(corpus, tmp_path, cache_mb=0)), tsv)
    assert cache_fits(TrainConfig(**tiny_settings(corpus, tmp_path, cache_mb=None)), tsv)
    # Read from the files every epoch, the validation batches are the cached ones.
    _, cached, labels = datasets(config)
    _, uncached, uncached_labels = datasets(TrainConfig(**tiny_settings(corpus, tmp_path,
                                                                        cache_mb=0)))
    np.testing.assert_array_equal(labels, uncached_labels)
    for (x1, y1), (x2, y2) in zip(cached, uncached, strict=True):
        np.testing.assert_array_equal(x1.numpy(), x2.numpy())
        np.testing.assert_array_equal(y1.numpy(), y2.numpy())
