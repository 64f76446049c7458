"""`tfmood evaluate` and `tfmood fuse`, end to end through `tfmood.cli.main`."""

import json

import numpy as np
import pytest
from sklearn import metrics as skmetrics

from tfmood.cli import main
from tfmood.data.tags import MOODTHEME_TAGS, PREFIX

SUMMARY_KEYS = {
    "ROC-AUC-macro",
    "PR-AUC-macro",
    "ROC-AUC-micro",
    "PR-AUC-micro",
    "precision-macro",
    "recall-macro",
    "F-score-macro",
    "precision-micro",
    "recall-micro",
    "F-score-micro",
}


def make_case(n_tracks=200, n_tags=56, seed=0):
    rng = np.random.default_rng(seed)
    truth = rng.random((n_tracks, n_tags)) < 0.1
    truth[0], truth[1] = True, False  # every tag has a positive and a negative
    scores = np.clip(0.25 * truth + 0.75 * rng.random((n_tracks, n_tags)), 0, 1)
    return truth, scores.astype(np.float32)


@pytest.fixture
def files(tmp_path):
    truth, scores = make_case()
    np.save(tmp_path / "groundtruth.npy", truth)
    np.save(tmp_path / "predictions.npy", scores)
    return tmp_path, truth, scores


def run_evaluate(directory, *extra):
    return main(
        [
            "evaluate",
            "--groundtruth",
            str(directory / "groundtruth.npy"),
            "--predictions",
            str(directory / "predictions.npy"),
            *extra,
        ]
    )


def test_evaluate_json(files, capsys):
    directory, truth, scores = files
    assert run_evaluate(directory, "--json") == 0
    summary = json.loads(capsys.readouterr().out)
    assert set(summary) == SUMMARY_KEYS
    assert summary["ROC-AUC-macro"] == pytest.approx(skmetrics.roc_auc_score(truth, scores))
    assert summary["PR-AUC-micro"] == pytest.approx(
        skmetrics.average_precision_score(truth, scores, average="micro")
    )
    assert 0 < summary["F-score-micro"] <= 1


def test_evaluate_table_and_report(files, capsys):
    directory, truth, scores = files
    out_dir = directory / "report"
    assert run_evaluate(directory, "-o", str(out_dir)) == 0
    captured = capsys.readouterr()
    for key in SUMMARY_KEYS:
        assert key in captured.out
    assert "melancholic" in captured.out  # per-tag rows use the 56 mood/theme names
    assert "report written to" in captured.err
    expected = {
        "metrics.json",
        "results.tsv",
        "per_tag.tsv",
        "thresholds.tsv",
        "decisions.npy",
        "per_tag_auc.png",
        "curves.png",
    }
    assert {p.name for p in out_dir.iterdir()} == expected
    summary = json.loads((out_dir / "metrics.json").read_text())
    assert set(summary) == SUMMARY_KEYS
    thresholds = (out_dir / "thresholds.tsv").read_text().splitlines()
    assert [line.split("\t")[0] for line in thresholds] == list(MOODTHEME_TAGS)
    decisions = np.load(out_dir / "decisions.npy", allow_pickle=False)
    threshold_values = np.array([float(line.split("\t")[1]) for line in thresholds])
    np.testing.assert_array_equal(decisions, scores >= threshold_values)
    f_score = skmetrics.precision_recall_fscore_support(truth, decisions, average="macro")[2]
    assert summary["F-score-macro"] == pytest.approx(f_score)


def test_evaluate_strict_decisions_and_json_with_report(tmp_path, capsys):
    truth, scores = make_case(n_tags=6)
    np.save(tmp_path / "groundtruth.npy", truth)
    np.save(tmp_path / "predictions.npy", scores)
    directory = tmp_path
    out_dir = directory / "strict"
    assert run_evaluate(directory, "--json", "--strict-decisions", "-o", str(out_dir)) == 0
    json.loads(capsys.readouterr().out)  # stdout stays one JSON object
    thresholds = np.array(
        [
            float(line.split("\t")[1])
            for line in (out_dir / "thresholds.tsv").read_text().split("\n")[:-1]
        ]
    )
    decisions = np.load(out_dir / "decisions.npy")
    np.testing.assert_array_equal(decisions, scores > thresholds)


def test_evaluate_with_tag_file(tmp_path, capsys):
    truth, scores = make_case(n_tags=3)
    np.save(tmp_path / "groundtruth.npy", truth.astype(np.int64))
    np.save(tmp_path / "predictions.npy", scores)
    (tmp_path / "tags.txt").write_text(f"{PREFIX}happy\nsad\n{PREFIX}calm\n")
    out_dir = tmp_path / "out"
    assert run_evaluate(tmp_path, "--tags", str(tmp_path / "tags.txt"), "-o", str(out_dir)) == 0
    assert "happy" in capsys.readouterr().out
    per_tag = (out_dir / "per_tag.tsv").read_text().splitlines()
    assert [line.split("\t")[0] for line in per_tag[1:]] == ["happy", "sad", "calm"]


def test_evaluate_default_names_for_other_column_counts(tmp_path, capsys):
    truth, scores = make_case(n_tags=4)
    np.save(tmp_path / "groundtruth.npy", truth)
    np.save(tmp_path / "predictions.npy", scores)
    assert run_evaluate(tmp_path) == 0
    assert "tag_3" in capsys.readouterr().out


def test_evaluate_tag_file_with_wrong_count(files, capsys):
    directory, _, _ = files
    (directory / "tags.txt").write_text("happy\nsad\n")
    assert run_evaluate(directory, "--tags", str(directory / "tags.txt")) == 2
    assert "tags.txt: 2 tags, but" in capsys.readouterr().err


def test_evaluate_errors_name_the_file(files, capsys):
    directory, truth, scores = files
    bad = scores.copy()
    bad[5, 9] = np.nan
    np.save(directory / "predictions.npy", bad)
    assert run_evaluate(directory) == 2
    error = capsys.readouterr().err
    assert "predictions.npy: 1 NaN score(s), the first at row 5, column 9 (tag 'cool')" in error

    np.save(directory / "predictions.npy", scores[:, :10])
    assert run_evaluate(directory) == 2
    assert "predictions.npy: shape (200, 10) does not match" in capsys.readouterr().err

    np.save(directory / "predictions.npy", scores)
    bad_truth = truth.astype(np.int64)
    bad_truth[3, 0] = 2
    np.save(directory / "groundtruth.npy", bad_truth)
    assert run_evaluate(directory) == 2
    assert "groundtruth.npy: ground truth must be binary" in capsys.readouterr().err


def test_evaluate_undefined_tag(files, capsys):
    directory, truth, _ = files
    truth = truth.copy()
    truth[:, 2] = False
    np.save(directory / "groundtruth.npy", truth)
    assert run_evaluate(directory, "--json") == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "groundtruth.npy" in captured.err and "'advertising' (column 2)" in captured.err


def test_evaluate_missing_file(tmp_path, capsys):
    assert run_evaluate(tmp_path) == 2
    assert "groundtruth.npy: no such file" in capsys.readouterr().err


def test_fuse_end_to_end(tmp_path, capsys):
    _, a = make_case(seed=1)
    _, b = make_case(seed=2)
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    out = tmp_path / "fused.npy"
    assert main(["fuse", str(tmp_path / "a.npy"), str(tmp_path / "b.npy"), "-o", str(out)]) == 0
    assert "fused 2 score matrices" in capsys.readouterr().out
    fused = np.load(out, allow_pickle=False)
    assert fused.dtype == np.float32
    np.testing.assert_allclose(fused, (a.astype(np.float64) + b) / 2, rtol=1e-6)

    weighted = tmp_path / "weighted.npy"
    args = ["fuse", str(tmp_path / "a.npy"), str(tmp_path / "b.npy"), "-o", str(weighted)]
    assert main(args + ["--weights", "1", "3"]) == 0
    np.testing.assert_allclose(np.load(weighted), 0.25 * a + 0.75 * b, rtol=1e-6)


def test_fuse_errors(tmp_path, capsys):
    _, a = make_case(seed=1)
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", a[:, :5])
    out = tmp_path / "fused.npy"
    assert main(["fuse", str(tmp_path / "a.npy"), str(tmp_path / "b.npy"), "-o", str(out)]) == 2
    assert "b.npy: shape (200, 5) does not match" in capsys.readouterr().err
    assert not out.exists()
    args = ["fuse", str(tmp_path / "a.npy"), str(tmp_path / "a.npy"), "-o", str(out)]
    assert main(args + ["--weights", "1"]) == 2
    assert "1 weights given for 2 score matrices" in capsys.readouterr().err
