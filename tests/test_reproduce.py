"""`tfmood reproduce` on a fake MTG-Jamendo checkout: split-0 TSVs and melspecs `NN/ID.npy`."""

import contextlib
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from local_cluster import free_ports
from sklearn.metrics import average_precision_score, roc_auc_score

from tfmood.cli import main
from tfmood.reproduce import ReproduceConfig, run_reproduce

TRACKS = {"train": 25, "validation": 8, "test": 8}
TAGS = ("happy", "sad", "energetic", "calm")
# Table 1 of the paper (../shared/paper.md): model -> (ROC-AUC, PR-AUC) on the test set.
PAPER = {
    "baseline": (0.725, 0.107),
    "sa3": (0.716, 0.108),
    "sa4": (0.723, 0.108),
    "sa5": (0.716, 0.101),
    "arelu": (0.728, 0.107),
    "late fusion sa3 + arelu": (0.732, 0.114),
    "late fusion baseline + sa3 + arelu": (0.735, 0.118),
}
HEADER = ("| No. | Model | GFLOPs | #Parameters | ROC-AUC | paper ROC-AUC | difference | PR-AUC "
          "| paper PR-AUC | difference | best epoch | training time |")
SPLIT_HEADER = "TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS\n"


def write_fake_mtg(root, missing_train_files=1, seed=0):
    """Split files in the official format and short melspecs at NN/ID.npy; the first
    `missing_train_files` training tracks have no melspec. Returns (splits dir, melspec dir)."""
    rng = np.random.default_rng(seed)
    splits, melspecs = root / "splits" / "split-0", root / "melspecs"
    splits.mkdir(parents=True)
    number = 1000
    for split, count in TRACKS.items():
        rows = []
        for index in range(count):
            number += 1
            path = f"{number % 100:02d}/{number}.mp3"
            tag = TAGS[index % len(TAGS)]
            rows.append(f"track_{number:07d}\tartist_{number:06d}\talbum_{number:06d}\t{path}"
                        f"\t{30 + index}.0\tgenre---pop\tmood/theme---{tag}\n")
            if split == "train" and index < missing_train_files:
                continue
            mel = rng.normal(-40.0, 10.0, (96, int(rng.integers(200, 400)))).astype(np.float32)
            mel[TAGS.index(tag) * 20:(TAGS.index(tag) + 1) * 20] += 20.0  # a learnable cue
            npy = melspecs / f"{number % 100:02d}" / f"{number}.npy"
            npy.parent.mkdir(parents=True, exist_ok=True)
            np.save(npy, mel)
        (splits / f"autotagging_moodtheme-{split}.tsv").write_text(SPLIT_HEADER + "".join(rows))
    return splits, melspecs


def tiny_args(splits, melspecs, out):
    return ["reproduce", "--splits", str(splits), "--data", str(melspecs), "--out", str(out),
            "--presets", "sa3", "arelu", "--epochs", "1", "--patience", "1", "--batch-size", "8",
            "--n-frames", "320", "--width", "0.125", "--strategy", "none", "--skip-bad",
            "--no-tensorboard"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("mtg")
    splits, melspecs = write_fake_mtg(root)
    out = root / "out"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = main(tiny_args(splits, melspecs, out))
    assert status == 0
    return splits, melspecs, out, printed.getvalue()


def results_of(out):
    with open(os.path.join(out, "results.json")) as handle:
        return json.load(handle)


def test_the_plan_is_stated_before_training(tiny_run):
    _, _, out, printed = tiny_run
    # One training file is missing and left out: 24 usable tracks, 3 steps of 8 (not 4).
    usable = {"train": TRACKS["train"] - 1, "validation": 8, "test": 8}
    steps = math.ceil(usable["train"] / 8)
    assert steps == 3
    tracks_line = "tracks: train 24, validation 8, test 8 (1 left out as bad files)"
    steps_line = f"steps per epoch: {steps} (batch 8); epochs: up to 1"
    assert tracks_line in printed and steps_line in printed
    assert "presets: sa3 to train, arelu to train" in printed
    assert printed.index(tracks_line) < printed.index("training sa3")
    with open(os.path.join(out, "plan.json")) as handle:
        plan = json.load(handle)
    assert plan["tracks"] == usable
    assert plan["left_out"] == {"train": 1, "validation": 0, "test": 0}
    assert (plan["steps_per_epoch"], plan["epochs"], plan["batch_size"]) == (steps, 1, 8)


def test_the_settings_are_saved_for_a_rerun(tiny_run):
    from tfmood.train.config import load_config

    splits, melspecs, out, _ = tiny_run
    saved = load_config(ReproduceConfig, os.path.join(out, "config.yaml"))
    assert saved == ReproduceConfig(
        splits=str(splits), data=str(melspecs), out_dir=str(out), presets=("sa3", "arelu"),
        epochs=1, patience=1, batch_size=8, n_frames=320, width=0.125, skip_bad=True,
        tensorboard=False)
    assert saved.learning_rate == 1e-4 and saved.dropout == 0.5  # the paper's


def test_table_has_the_paper_numbers_beside_ours(tiny_run):
    _, _, out, printed = tiny_run
    with open(os.path.join(out, "results.md")) as handle:
        table = handle.read()
    assert table.splitlines()[0] == HEADER
    assert table.strip() in printed
    rows = results_of(out)["rows"]
    assert [row["model"] for row in rows] == ["sa3", "arelu", "late fusion sa3 + arelu"]
    for number, row in enumerate(rows, start=1):
        paper_roc, paper_pr = PAPER[row["model"]]
        assert (row["paper_roc_auc"], row["paper_pr_auc"]) == (paper_roc, paper_pr)
        assert row["roc_auc_difference"] == pytest.approx(row["roc_auc"] - paper_roc)
        assert row["pr_auc_difference"] == pytest.approx(row["pr_auc"] - paper_pr)
        cells = [cell.strip() for cell in table.splitlines()[1 + number].strip("|").split("|")]
        assert cells[:2] == [str(number), row["model"]]
        assert cells[4:10] == [
            f"{row['roc_auc']:.3f}", f"{paper_roc:.3f}", f"{row['roc_auc'] - paper_roc:+.3f}",
            f"{row['pr_auc']:.3f}", f"{paper_pr:.3f}", f"{row['pr_auc'] - paper_pr:+.3f}",
        ]
    # The models as trained (width 0.125): sa3's parameters are far below the paper's 350,074.
    assert 0 < rows[0]["params"] < 350_074


def test_paper_numbers_are_table_1_for_every_row():
    from tfmood.reproduce import PAPER_TABLE1

    assert PAPER_TABLE1 == PAPER


def test_fusion_row_is_the_mean_of_the_members_scores(tiny_run):
    _, _, out, _ = tiny_run
    test_dir = os.path.join(out, "test")
    members = [np.load(os.path.join(test_dir, p, "predictions.npy")) for p in ("sa3", "arelu")]
    groundtruth = np.load(os.path.join(test_dir, "sa3", "groundtruth.npy"))
    defined = groundtruth.any(axis=0) & ~groundtruth.all(axis=0)
    assert defined.sum() == len(TAGS)
    fused = (members[0] + members[1]) / 2
    fusion = results_of(out)["rows"][2]
    assert fusion["roc_auc"] == pytest.approx(
        roc_auc_score(groundtruth[:, defined], fused[:, defined], average="macro"), abs=1e-6)
    assert fusion["pr_auc"] == pytest.approx(
        average_precision_score(groundtruth[:, defined], fused[:, defined], average="macro"),
        abs=1e-6)


def test_second_run_trains_nothing(tiny_run):
    splits, melspecs, out, _ = tiny_run
    run_files = [os.path.join(out, "models", p, name) for p in ("sa3", "arelu")
                 for name in ("best.keras", "history.csv", "result.json")]
    stamps = [os.path.getmtime(path) for path in run_files]
    before = results_of(out)["rows"]
    printed = io.StringIO()
    config = ReproduceConfig(splits=str(splits), data=str(melspecs), out_dir=str(out),
                             presets=("sa3", "arelu"), epochs=1, patience=1, batch_size=8,
                             n_frames=320, width=0.125, skip_bad=True, tensorboard=False)
    with contextlib.redirect_stdout(printed):
        again = run_reproduce(config)
    assert "presets: sa3 finished, arelu finished" in printed.getvalue()
    assert [os.path.getmtime(path) for path in run_files] == stamps
    for row in before:
        assert again[row["model"]]["roc_auc"] == pytest.approx(row["roc_auc"])


def test_missing_split_file_is_a_clear_error(tmp_path, capsys):
    splits, melspecs = write_fake_mtg(tmp_path)
    os.remove(splits / "autotagging_moodtheme-validation.tsv")
    status = main(tiny_args(splits, melspecs, tmp_path / "out"))
    error = capsys.readouterr().err
    assert status == 2
    assert "autotagging_moodtheme-validation.tsv: no such split file" in error
    assert not (tmp_path / "out" / "models").exists()


def test_empty_split_is_a_clear_error(tmp_path):
    splits, melspecs = write_fake_mtg(tmp_path)
    (splits / "autotagging_moodtheme-test.tsv").write_text(SPLIT_HEADER)
    config = ReproduceConfig(splits=str(splits), data=str(melspecs), out_dir=str(tmp_path / "o"))
    with pytest.raises(ValueError, match="autotagging_moodtheme-test.tsv: empty split"):
        run_reproduce(config)


def test_split_without_usable_files_is_a_clear_error(tmp_path):
    splits, melspecs = write_fake_mtg(tmp_path, missing_train_files=TRACKS["train"])
    config = ReproduceConfig(splits=str(splits), data=str(melspecs), out_dir=str(tmp_path / "o"),
                             skip_bad=True)
    with pytest.raises(ValueError, match="autotagging_moodtheme-train.tsv: no usable npy file"):
        run_reproduce(config)


def test_a_bad_file_stops_the_run_unless_skipped(tmp_path):
    splits, melspecs = write_fake_mtg(tmp_path)
    config = ReproduceConfig(splits=str(splits), data=str(melspecs), out_dir=str(tmp_path / "o"))
    with pytest.raises(ValueError, match=r"01/1001\.npy"):
        run_reproduce(config)


def test_config_file_with_command_line_overrides(tmp_path):
    from tfmood.cli import build_parser
    from tfmood.cli._config_options import config_of
    from tfmood.cli.reproduce import FIELD_OF_OPTION
    from tfmood.reproduce import ReproduceConfig

    def parsed(*options):
        args = build_parser().parse_args(["reproduce", *options])
        return config_of(ReproduceConfig, args, FIELD_OF_OPTION)

    path = tmp_path / "reproduce.yaml"
    path.write_text("presets: [sa3, arelu]\nepochs: 7\nlearning_rate: 1e-4\nwidth: 0.5\n"
                    "strategy: mirrored\n")
    config = parsed("--config", str(path), "--epochs", "2")
    assert (config.presets, config.epochs, config.width, config.strategy) == (
        ("sa3", "arelu"), 2, 0.5, "mirrored")
    assert (config.batch_size, config.patience, config.n_frames) == (16, 35, 1400)
    path.write_text("strategy: horovod\n")
    with pytest.raises(ValueError, match="reproduce.yaml:1: strategy must be one of"):
        parsed("--config", str(path))


@pytest.mark.slow
def test_multiworker_with_two_local_workers(tmp_path):
    """Every worker runs the same command; the chief writes the table, the other worker trains
    and leaves nothing behind in its temporary folder."""
    splits, melspecs = write_fake_mtg(tmp_path)
    out = tmp_path / "out"
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    args = tiny_args(splits, melspecs, out)
    args[args.index("--strategy") + 1] = "multiworker"
    workers, logs = [], [tmp_path / f"worker{index}.log" for index in range(2)]
    try:
        for index in range(2):
            (tmp_path / f"tmp{index}").mkdir()
            env = {name: value for name, value in os.environ.items() if name != "TF_CONFIG"}
            env.update(TF_CPP_MIN_LOG_LEVEL="2", TMPDIR=str(tmp_path / f"tmp{index}"),
                       TF_CONFIG=json.dumps({"cluster": cluster,
                                             "task": {"type": "worker", "index": index}}))
            with open(logs[index], "w") as log:
                workers.append(subprocess.Popen(
                    [sys.executable, "-m", "tfmood", *args], env=env, stdout=log,
                    stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parents[1]))
        for worker in workers:
            worker.wait(timeout=600)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    outputs = [log.read_text() for log in logs]
    for worker, output in zip(workers, outputs):
        assert worker.returncode == 0, output
        assert output.count("2 replicas in sync") == 2, output  # one per preset
    rows = results_of(out)["rows"]
    assert [row["model"] for row in rows] == ["sa3", "arelu", "late fusion sa3 + arelu"]
    assert "presets: sa3 to train" in outputs[0] and "presets:" not in outputs[1]
    assert list((tmp_path / "tmp1").iterdir()) == []
