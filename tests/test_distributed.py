"""Distributed training: `tfmood train --strategy mirrored` over two logical CPU devices, and
`--strategy multiworker` with two local worker processes (TF_CONFIG on 127.0.0.1).

Each run happens in its own process: logical devices and the multi-worker runtime must be set up
before TensorFlow does anything else. The splits end in partial batches (checked below), and the
runs force TensorFlow's oneDNN kernels on (`TF_ENABLE_ONEDNN_OPTS=1`; the default only on CPUs
with AVX-512 VNNI/bf16): there a replica left without examples by a partial batch got a Conv2D
output with the wrong channel count and aborted the step in a BatchNorm collective. Each kind of
run is repeated, since a failure of that kind can depend on scheduling. A run is checked the same way as a single-device one: the
validation ROC-AUC it logged for its best epoch must equal sklearn's on the predictions of the
saved best model, which holds only if every replica predicts with the same weights and batch
normalisation statistics and the predictions come back complete and in order.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from local_cluster import free_ports

REPO = Path(__file__).resolve().parents[1]
N_TRACKS, SECONDS, SEED, EPOCHS = 30, 4.0, 0, 2
TINY = {"n_frames": 320, "width": 0.25, "batch_size": 4, "tensorboard": False, "verbose": 2}
RUN_FILES = {"best.keras", "config.yaml", "curves.png", "history.csv", "result.json"}
TIMEOUT = 600

# Two logical CPU devices, configured before anything else touches TensorFlow, then the CLI.
MIRRORED_MAIN = """
import sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from tfmood.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory) -> Path:
    """A config file of a tiny run on the log-mel shards of a synthetic corpus."""
    from tfmood.data.shards import write_shards
    from tfmood.data.synth import generate_corpus

    root = tmp_path_factory.mktemp("corpus")
    info = generate_corpus(str(root / "synth"), N_TRACKS, SECONDS, SEED, progress=False)
    shards = {}
    for split in ("train", "validation"):
        shards[split] = str(root / "shards" / split)
        write_shards(info.split_paths[split], info.audio_dir, shards[split], source="audio",
                     progress=False)  # fmt: skip
    settings = dict(
        preset="baseline",
        train_tsv=info.split_paths["train"],
        validation_tsv=info.split_paths["validation"],
        train_root=shards["train"],
        validation_root=shards["validation"],
        source="tfrecord",
        epochs=EPOCHS,
        **TINY,
    )
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def environment(**extra) -> dict:
    env = {name: value for name, value in os.environ.items() if name != "TF_CONFIG"}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", TF_ENABLE_ONEDNN_OPTS="1", **extra)
    return env


def printed_result(stdout: str) -> dict:
    """The result JSON that `tfmood train` prints last."""
    # TensorFlow's coordination service may log a line at shutdown, after the result.
    result, _ = json.JSONDecoder().raw_decode(stdout[stdout.rindex("\n{") + 1 :])
    return result


def check_run(out: Path, config_path: Path) -> dict:
    """The run's files, one history row per epoch, and its logged AUC against sklearn."""
    import keras
    from sklearn.metrics import roc_auc_score

    import tfmood.layers  # noqa: F401  (registers the custom layers)
    from tfmood.data.metadata import label_matrix, read_split
    from tfmood.data.pipeline import make_dataset
    from tfmood.train.callbacks import read_history

    assert {path.name for path in out.iterdir()} == RUN_FILES
    rows = read_history(str(out / "history.csv"))
    assert [int(row["epoch"]) for row in rows] == list(range(EPOCHS))
    result = json.loads((out / "result.json").read_text())
    assert result["epochs_run"] == EPOCHS

    config = yaml.safe_load(config_path.read_text())
    model = keras.saving.load_model(str(out / "best.keras"), safe_mode=True)
    dataset = make_dataset(
        config["validation_tsv"], config["validation_root"], "tfrecord",
        n_frames=TINY["n_frames"], batch_size=TINY["batch_size"], progress=False,
    )  # fmt: skip
    scores = model.predict(dataset, verbose=0)
    labels = label_matrix(read_split(config["validation_tsv"])).astype(bool)
    defined = labels.any(axis=0) & ~labels.all(axis=0)
    roc = roc_auc_score(labels[:, defined], scores[:, defined], average="macro")
    assert result["val_roc_auc"] == pytest.approx(roc, abs=1e-12)
    return result


def test_the_splits_end_in_partial_batches(tiny_config):
    from tfmood.data.metadata import read_split

    config = yaml.safe_load(tiny_config.read_text())
    for split in ("train_tsv", "validation_tsv"):
        assert len(read_split(config[split])) % TINY["batch_size"] != 0


def test_replicated_pipelines_hold_whole_batches_only(tiny_config):
    import numpy as np

    from tfmood.data.metadata import read_split
    from tfmood.train.fit import TrainConfig, datasets

    config = TrainConfig.from_yaml(str(tiny_config), strategy="mirrored")
    train, validation, labels = datasets(config)
    batch = TINY["batch_size"]
    assert {len(y) for _, y in train.as_numpy_iterator()} == {batch}
    rows = [y for _, y in validation.as_numpy_iterator()]
    assert {len(y) for y in rows} == {batch}
    padded = np.concatenate(rows)
    tracks = len(read_split(config.validation_tsv))
    assert len(labels) == tracks and len(padded) == -(-tracks // batch) * batch
    np.testing.assert_array_equal(padded[:tracks], labels)
    assert not padded[tracks:].any()


# Three runs: the abort this guards against happened on every run, but a collective that pairs
# by chance would not; the repeats are slow-marked (the full suite runs them, the quick one not).
@pytest.mark.parametrize(
    "run", [0, pytest.param(1, marks=pytest.mark.slow), pytest.param(2, marks=pytest.mark.slow)]
)
def test_mirrored_over_two_logical_cpus(tiny_config, tmp_path, run):
    out = tmp_path / "run"
    command = [sys.executable, "-c", MIRRORED_MAIN, "train", "--config", str(tiny_config),
               "--strategy", "mirrored", "--out-dir", str(out)]  # fmt: skip
    env = environment()
    run = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "MirroredStrategy: 2 replicas in sync" in run.stdout
    result = check_run(out, tiny_config)
    assert printed_result(run.stdout) == result


@pytest.mark.slow
@pytest.mark.parametrize("run", range(2))
def test_multiworker_with_two_local_workers(tiny_config, tmp_path, run):
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    out = tmp_path / "run"
    worker_tmp = [tmp_path / f"worker{index}-tmp" for index in range(2)]
    logs = [tmp_path / f"worker{index}.log" for index in range(2)]
    workers = []
    try:
        for index in range(2):
            worker_tmp[index].mkdir()
            tf_config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
            env = environment(TF_CONFIG=json.dumps(tf_config), TMPDIR=str(worker_tmp[index]))
            command = [sys.executable, "-m", "tfmood", "train", "--config", str(tiny_config),
                       "--strategy", "multiworker", "--out-dir", str(out)]  # fmt: skip
            with open(logs[index], "w") as log:
                workers.append(subprocess.Popen(
                    command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
                ))  # fmt: skip
        for worker in workers:
            worker.wait(timeout=TIMEOUT)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()

    outputs = [log.read_text() for log in logs]
    for worker, output in zip(workers, outputs):
        assert worker.returncode == 0, output
        assert "2 replicas in sync" in output
    # Only the chief (worker 0) wrote the run's files; worker 1 wrote to a temporary directory
    # under its TMPDIR and removed it.
    result = check_run(out, tiny_config)
    assert list(worker_tmp[1].iterdir()) == []
    # Both workers saw the same gathered validation predictions, hence the same best epoch.
    printed = [printed_result(output) for output in outputs]
    for summary in printed:
        summary.pop("train_seconds")
    result.pop("train_seconds")
    assert printed[0] == printed[1] == result
