"""MediaEval metrics and late fusion, checked by hand and against scikit-learn."""

import json

import numpy as np
import pytest
from sklearn import metrics as skmetrics

from tfmood import metrics
from tfmood.data.tags import MOODTHEME_TAGS

# A 4-track, 2-tag example worked out by hand.
#
#            tag A        tag B
#   track  truth score  truth score
#     0      1    0.9     0    0.3
#     1      0    0.8     1    0.6
#     2      1    0.4     1    0.6
#     3      0    0.1     0    0.6
#
# Tag A, scores descending: 0.9(+) 0.8(-) 0.4(+) 0.1(-).
#   ROC-AUC: positive-negative pairs ranked right: 0.9>0.8, 0.9>0.1, 0.4>0.1, not 0.4>0.8 -> 3/4.
#   PR curve (threshold: precision, recall): 0.9: 1, 1/2; 0.8: 1/2, 1/2; 0.4: 2/3, 1; 0.1: 1/2, 1.
#   AP = sum of recall steps x precision = 1/2 * 1 + 1/2 * 2/3 = 5/6.
#   F = 2PR/(P+R): 0.9: 2/3; 0.8: 1/2; 0.4: 4/5; 0.1: 2/3 -> threshold 0.4.
#   Decisions >= 0.4: [1,1,1,0] -> P 2/3, R 1, F 4/5.
#   Strict > 0.4: [1,1,0,0] -> P 1/2, R 1/2, F 1/2.
# Tag B, scores descending: 0.6 {+,+,-} tied, then 0.3(-).
#   ROC-AUC: each positive ties one negative (1/2) and beats the other (1) -> (1.5 + 1.5) / 4 = 3/4.
#   PR curve: 0.6: 2/3, 1; 0.3: 1/2, 1.  AP = 1 * 2/3 = 2/3.
#   F: 0.6: 4/5; 0.3: 2/3 -> threshold 0.6.
#   Decisions >= 0.6: [0,1,1,1] -> P 2/3, R 1, F 4/5.
#   Strict > 0.6: none -> P 0, R 0, F 0.
# Micro (8 pooled cells; positives 0.9, 0.4, 0.6, 0.6; negatives 0.8, 0.1, 0.3, 0.6):
#   ROC-AUC: 0.9 beats 4; 0.4 beats 2; each 0.6 beats 2 and ties 1
#   -> (4 + 2 + 2.5 + 2.5) / 16 = 11/16.
#   PR: 0.9: 1/1 at R 1/4; 0.8: 1/2; 0.6: 3/5 at R 3/4; 0.4: 4/6 at R 1
#   -> AP = 1/4 * 1 + 1/2 * 3/5 + 1/4 * 2/3 = 43/60.
#   Decisions >=: TP 4, FP 2, FN 0 -> P 2/3, R 1, F 4/5.
#   Strict: TP 1, FP 1, FN 3 -> P 1/2, R 1/4, F 1/3.
HAND_TRUTH = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
HAND_SCORES = np.array([[0.9, 0.3], [0.8, 0.6], [0.4, 0.6], [0.1, 0.6]])


def random_case(n_tracks=300, n_tags=7, seed=0, levels=None):
    """Random truth with every tag defined, and scores (quantised to `levels` to force ties)."""
    rng = np.random.default_rng(seed)
    truth = rng.random((n_tracks, n_tags)) < rng.uniform(0.05, 0.4, n_tags)
    truth[0], truth[1] = True, False
    scores = np.clip(0.3 * truth + rng.random((n_tracks, n_tags)) * 0.7, 0, 1)
    if levels is not None:
        scores = np.round(scores * levels) / levels
    return truth.astype(np.int64), scores.astype(np.float32)


def brute_force_threshold(labels, scores):
    """Try every distinct score as a `>=` threshold; the lowest one with the best F wins."""
    best_f, best_threshold = -1.0, None
    for threshold in np.unique(scores):  # ascending, like sklearn's curve
        decided = scores >= threshold
        tp = np.sum(decided & (labels == 1))
        f_score = 2 * tp / (decided.sum() + labels.sum())
        if f_score > best_f:
            best_f, best_threshold = f_score, threshold
    return best_threshold


# ----------------------------------------------------------------------------------------------
# Hand-computed example


def test_hand_example_aucs():
    result = metrics.evaluate(HAND_TRUTH, HAND_SCORES, tags=["A", "B"])
    np.testing.assert_allclose(result.roc_auc_per_tag, [3 / 4, 3 / 4])
    np.testing.assert_allclose(result.pr_auc_per_tag, [5 / 6, 2 / 3])
    assert result.summary["ROC-AUC-macro"] == pytest.approx(3 / 4)
    assert result.summary["PR-AUC-macro"] == pytest.approx((5 / 6 + 2 / 3) / 2)
    assert result.summary["ROC-AUC-micro"] == pytest.approx(11 / 16)
    assert result.summary["PR-AUC-micro"] == pytest.approx(43 / 60)
    assert metrics.macro_roc_auc(HAND_TRUTH, HAND_SCORES) == pytest.approx(3 / 4)
    assert metrics.macro_pr_auc(HAND_TRUTH, HAND_SCORES) == pytest.approx(3 / 4)


def test_hand_example_thresholds_and_decisions():
    result = metrics.evaluate(HAND_TRUTH, HAND_SCORES)
    np.testing.assert_array_equal(result.thresholds, [0.4, 0.6])
    np.testing.assert_array_equal(metrics.optimal_thresholds(HAND_TRUTH, HAND_SCORES), [0.4, 0.6])
    expected = [[1, 0], [1, 1], [1, 1], [0, 1]]
    np.testing.assert_array_equal(result.decisions, np.array(expected, dtype=bool))
    assert result.decisions.dtype == bool
    np.testing.assert_allclose(result.precision_per_tag, [2 / 3, 2 / 3])
    np.testing.assert_allclose(result.f_score_per_tag, [4 / 5, 4 / 5])
    expected_summary = {
        "precision-macro": 2 / 3,
        "recall-macro": 1.0,
        "F-score-macro": 4 / 5,
        "precision-micro": 2 / 3,
        "recall-micro": 1.0,
        "F-score-micro": 4 / 5,
    }
    for key, value in expected_summary.items():
        assert result.summary[key] == pytest.approx(value), key


def test_hand_example_strict_decisions_follow_the_official_rule():
    result = metrics.evaluate(HAND_TRUTH, HAND_SCORES, strict_decisions=True)
    np.testing.assert_array_equal(result.decisions, [[1, 0], [1, 0], [0, 0], [0, 0]])
    expected_summary = {
        "precision-macro": 1 / 4,
        "recall-macro": 1 / 4,
        "F-score-macro": 1 / 4,
        "precision-micro": 1 / 2,
        "recall-micro": 1 / 4,
        "F-score-micro": 1 / 3,
    }
    for key, value in expected_summary.items():
        assert result.summary[key] == pytest.approx(value), key


def test_summary_keys_are_exactly_the_mediaeval_ones():
    result = metrics.evaluate(HAND_TRUTH, HAND_SCORES)
    assert tuple(result.summary) == metrics.SUMMARY_KEYS
    assert set(metrics.SUMMARY_KEYS) == {
        f"{name}-{average}"
        for name in ("ROC-AUC", "PR-AUC", "precision", "recall", "F-score")
        for average in ("macro", "micro")
    }
    assert all(isinstance(value, float) for value in result.summary.values())


# ----------------------------------------------------------------------------------------------
# Against scikit-learn, computed here the way the official scripts do


@pytest.mark.parametrize("levels", [None, 10])
def test_evaluate_matches_sklearn(levels):
    truth, scores = random_case(levels=levels)
    result = metrics.evaluate(truth, scores)
    expected = {}
    for average in ("macro", "micro"):
        expected[f"ROC-AUC-{average}"] = skmetrics.roc_auc_score(truth, scores, average=average)
        expected[f"PR-AUC-{average}"] = skmetrics.average_precision_score(
            truth, scores, average=average
        )
    thresholds = np.array(
        [brute_force_threshold(truth[:, i], scores[:, i]) for i in range(truth.shape[1])]
    )
    np.testing.assert_array_equal(result.thresholds, thresholds)
    decisions = scores >= thresholds
    np.testing.assert_array_equal(result.decisions, decisions)
    for average in ("macro", "micro"):
        p, r, f, _ = skmetrics.precision_recall_fscore_support(truth, decisions, average=average)
        expected[f"precision-{average}"] = p
        expected[f"recall-{average}"] = r
        expected[f"F-score-{average}"] = f
    for key, value in expected.items():
        assert result.summary[key] == pytest.approx(value, abs=1e-12), key
    np.testing.assert_allclose(
        result.roc_auc_per_tag, skmetrics.roc_auc_score(truth, scores, average=None)
    )
    np.testing.assert_allclose(
        result.pr_auc_per_tag, skmetrics.average_precision_score(truth, scores, average=None)
    )
    np.testing.assert_array_equal(result.positives_per_tag, truth.sum(axis=0))


def test_strict_decisions_are_strictly_above_threshold():
    truth, scores = random_case(levels=10)
    result = metrics.evaluate(truth, scores, strict_decisions=True)
    np.testing.assert_array_equal(result.decisions, scores > result.thresholds)
    precision, recall, f_score, _ = skmetrics.precision_recall_fscore_support(
        truth, scores > result.thresholds, average="macro", zero_division=0
    )
    assert result.summary["precision-macro"] == pytest.approx(precision, abs=1e-12)
    assert result.summary["recall-macro"] == pytest.approx(recall, abs=1e-12)
    assert result.summary["F-score-macro"] == pytest.approx(f_score, abs=1e-12)


@pytest.mark.parametrize("levels", [None, 5, 20])
def test_fast_macro_aucs_match_sklearn(levels):
    truth, scores = random_case(n_tracks=500, n_tags=11, seed=3, levels=levels)
    assert metrics.macro_roc_auc(truth, scores) == pytest.approx(
        skmetrics.roc_auc_score(truth, scores, average="macro"), abs=1e-12
    )
    assert metrics.macro_pr_auc(truth, scores) == pytest.approx(
        skmetrics.average_precision_score(truth, scores, average="macro"), abs=1e-12
    )


def test_fast_macro_aucs_accept_bool_and_float_truth():
    truth, scores = random_case(seed=5)
    expected = skmetrics.roc_auc_score(truth, scores)
    assert metrics.macro_roc_auc(truth.astype(bool), scores) == pytest.approx(expected)
    assert metrics.macro_roc_auc(truth.astype(np.float32), scores) == pytest.approx(expected)


# ----------------------------------------------------------------------------------------------
# Undefined tags and bad input


@pytest.mark.parametrize(
    "function",
    [metrics.evaluate, metrics.macro_roc_auc, metrics.macro_pr_auc, metrics.optimal_thresholds],
)
def test_tag_without_positives_or_negatives_is_an_error(function):
    truth = HAND_TRUTH.copy()
    truth[:, 0] = 0
    scores = HAND_SCORES
    with pytest.raises(ValueError, match=r"undefined.*no positive track for 'A' \(column 0\)"):
        function(truth, scores, tags=["A", "B"])
    truth = np.hstack([HAND_TRUTH, np.ones((4, 1), int), np.zeros((4, 1), int)])
    scores = np.hstack([HAND_SCORES, np.full((4, 2), 0.5)])
    with pytest.raises(ValueError) as raised:
        function(truth, scores)
    message = str(raised.value)
    assert "no positive track for 'tag_3' (column 3)" in message
    assert "no negative track for 'tag_2' (column 2)" in message


def test_undefined_56_tag_error_names_the_mood_tag():
    truth, scores = random_case(n_tags=56)
    truth[:, 7] = 0
    with pytest.raises(ValueError, match="'christmas' \\(column 7\\)"):
        metrics.evaluate(truth, scores)


def test_shape_mismatch_names_both_inputs():
    with pytest.raises(ValueError, match=r"p\.npy: shape \(4, 1\) does not match gt\.npy"):
        metrics.validate_inputs(HAND_TRUTH, HAND_SCORES[:, :1], "gt.npy", "p.npy")


@pytest.mark.parametrize(
    "bad, pattern",
    [
        (HAND_SCORES[:, 0], r"p\.npy: expected a 2-D matrix .* shape \(4,\)"),
        (np.zeros((0, 2)), r"p\.npy: the matrix is empty"),
        (HAND_SCORES.astype(str), r"p\.npy: expected a numeric or bool matrix, got dtype <U"),
        (HAND_SCORES.astype(complex), r"p\.npy: expected a numeric or bool matrix"),
    ],
)
def test_bad_prediction_shape_or_dtype(bad, pattern):
    with pytest.raises(ValueError, match=pattern):
        metrics.validate_inputs(HAND_TRUTH, bad, "gt.npy", "p.npy")


def test_nan_score_reports_its_row_and_column():
    scores = HAND_SCORES.copy()
    scores[2, 1] = np.nan
    scores[3, 0] = np.nan
    with pytest.raises(ValueError, match=r"p\.npy: 2 NaN score\(s\), the first at row 2, column 1"):
        metrics.validate_inputs(HAND_TRUTH, scores, "gt.npy", "p.npy")
    with pytest.raises(ValueError, match=r"row 2, column 1 \(tag 'B'\)"):
        metrics.validate_inputs(HAND_TRUTH, scores, tags=["A", "B"])


@pytest.mark.parametrize("value", [1.5, -0.01, np.inf])
def test_score_outside_unit_interval(value):
    scores = HAND_SCORES.copy()
    scores[1, 0] = value
    with pytest.raises(ValueError, match=r"p\.npy: scores must lie in \[0, 1\].*row 1, column 0"):
        metrics.validate_inputs(HAND_TRUTH, scores, "gt.npy", "p.npy")


@pytest.mark.parametrize("value", [2, 0.5, -1, np.nan])
def test_non_binary_groundtruth(value):
    truth = HAND_TRUTH.astype(np.float64)
    truth[3, 1] = value
    with pytest.raises(ValueError, match=r"gt\.npy: ground truth must be binary.*row 3, column 1"):
        metrics.validate_inputs(truth, HAND_SCORES, "gt.npy", "p.npy")


def test_groundtruth_dtype_and_shape():
    with pytest.raises(ValueError, match=r"gt\.npy: expected a numeric or bool matrix"):
        metrics.validate_inputs(HAND_TRUTH.astype(str), HAND_SCORES, "gt.npy", "p.npy")
    with pytest.raises(ValueError, match=r"gt\.npy: expected a 2-D matrix"):
        metrics.validate_inputs(HAND_TRUTH[None], HAND_SCORES, "gt.npy", "p.npy")


def test_validate_inputs_returns_bool_truth_and_float_scores():
    truth, scores = metrics.validate_inputs(HAND_TRUTH.astype(np.float32), HAND_SCORES)
    assert truth.dtype == bool and scores.dtype.kind == "f"
    np.testing.assert_array_equal(truth, HAND_TRUTH == 1)


def test_wrong_number_of_tag_names():
    with pytest.raises(ValueError, match="3 tag names given for a matrix with 2 tag columns"):
        metrics.evaluate(HAND_TRUTH, HAND_SCORES, tags=["a", "b", "c"])


def test_default_tags():
    assert metrics.default_tags(56) == list(MOODTHEME_TAGS)
    assert metrics.default_tags(3) == ["tag_0", "tag_1", "tag_2"]


# ----------------------------------------------------------------------------------------------
# Late fusion


def test_fuse_scores_is_the_mean():
    _, a = random_case(seed=1)
    _, b = random_case(seed=2)
    _, c = random_case(seed=3)
    fused = metrics.fuse_scores([a, b, c])
    assert fused.dtype == np.float32
    np.testing.assert_allclose(fused, (a.astype(float) + b + c) / 3, rtol=1e-6)


def test_fuse_scores_weighted():
    a = np.array([[0.0, 1.0]])
    b = np.array([[1.0, 0.2]])
    # weights 3 and 1 -> 3/4 a + 1/4 b
    np.testing.assert_allclose(metrics.fuse_scores([a, b], weights=[3, 1]), [[0.25, 0.8]])
    np.testing.assert_allclose(metrics.fuse_scores([a, b], weights=[0, 2]), b)


def test_fuse_scores_errors_name_the_input():
    a = np.full((3, 2), 0.5)
    with pytest.raises(ValueError, match=r"b\.npy: shape \(3, 1\) does not match a\.npy"):
        metrics.fuse_scores([a, a[:, :1]], names=["a.npy", "b.npy"])
    bad = a.copy()
    bad[1, 1] = np.nan
    with pytest.raises(ValueError, match=r"b\.npy: 1 NaN score\(s\), the first at row 1, column 1"):
        metrics.fuse_scores([a, bad], names=["a.npy", "b.npy"])
    with pytest.raises(ValueError, match="2 weights given for 3 score matrices"):
        metrics.fuse_scores([a, a, a], weights=[1, 1])
    with pytest.raises(ValueError, match="non-negative"):
        metrics.fuse_scores([a, a], weights=[1, -1])
    with pytest.raises(ValueError, match="at least one"):
        metrics.fuse_scores([])


def test_late_fusion_of_complementary_models_helps():
    """Two models with independent errors: their mean ranks better than either (as in the paper)."""
    rng = np.random.default_rng(0)
    truth = (rng.random((2000, 5)) < 0.2).astype(int)
    noisy = [np.clip(0.5 * truth + rng.normal(0.25, 0.3, truth.shape), 0, 1) for _ in range(2)]
    fused = metrics.fuse_scores(noisy)
    single = max(metrics.macro_roc_auc(truth, scores) for scores in noisy)
    assert metrics.macro_roc_auc(truth, fused) > single + 0.01


# ----------------------------------------------------------------------------------------------
# Files


def test_write_report(tmp_path):
    truth, scores = random_case(n_tags=4)
    result = metrics.evaluate(truth, scores, tags=["w", "x", "y", "z"])
    paths = metrics.write_report(result, tmp_path / "report")
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == sorted(
        metrics.REPORT_FILES.values()
    )
    summary = json.loads(paths["metrics"].read_text())
    assert list(summary) == list(metrics.SUMMARY_KEYS)
    assert summary["PR-AUC-macro"] == pytest.approx(
        skmetrics.average_precision_score(truth, scores)
    )
    results_rows = [line.split("\t") for line in paths["results"].read_text().splitlines()]
    assert [row[0] for row in results_rows] == list(metrics.SUMMARY_KEYS)
    assert float(results_rows[0][1]) == pytest.approx(summary["ROC-AUC-macro"], abs=1e-6)
    per_tag = [line.split("\t") for line in paths["per_tag"].read_text().splitlines()]
    assert per_tag[0][:3] == ["tag", "ROC-AUC", "PR-AUC"] and len(per_tag) == 5
    assert float(per_tag[2][1]) == pytest.approx(
        skmetrics.roc_auc_score(truth[:, 1], scores[:, 1]), abs=1e-6
    )
    thresholds = [line.split("\t") for line in paths["thresholds"].read_text().splitlines()]
    assert [row[0] for row in thresholds] == ["w", "x", "y", "z"]
    np.testing.assert_array_equal([float(row[1]) for row in thresholds], result.thresholds)
    decisions = np.load(paths["decisions"], allow_pickle=False)
    assert decisions.dtype == bool
    np.testing.assert_array_equal(decisions, scores >= result.thresholds)
    assert paths["auc_plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_curves_writes_png(tmp_path):
    truth, scores = random_case(n_tags=5)
    path = metrics.plot_curves(truth, scores, tmp_path / "curves.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]  # no temporary file left


def test_load_tags_strips_prefix_and_blank_lines(tmp_path):
    path = tmp_path / "tags.txt"
    path.write_text("mood/theme---happy\n\nsad\t0.1\n  calm \n")
    assert metrics.load_tags(path) == ["happy", "sad", "calm"]
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(ValueError, match="empty.txt: no tag names"):
        metrics.load_tags(tmp_path / "empty.txt")


def test_load_matrix_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.npy: no such file"):
        metrics.load_matrix(tmp_path / "missing.npy")
    objects = tmp_path / "objects.npy"
    np.save(objects, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="objects.npy: not a readable numeric .npy file"):
        metrics.load_matrix(objects)
    text = tmp_path / "text.npy"
    text.write_text("0.1 0.2\n")
    with pytest.raises(ValueError, match="text.npy: not a readable"):
        metrics.load_matrix(text)
    (tmp_path / "empty.npy").write_bytes(b"")
    with pytest.raises(ValueError, match="empty.npy: not a readable"):
        metrics.load_matrix(tmp_path / "empty.npy")
    np.savez(tmp_path / "archive.npz", a=np.eye(2))
    with pytest.raises(ValueError, match="archive.npz: expected one .npy array"):
        metrics.load_matrix(tmp_path / "archive.npz")


def test_save_matrix_writes_exact_path(tmp_path):
    path = metrics.save_matrix(tmp_path / "fused.scores", np.eye(2, dtype=np.float32))
    assert path.name == "fused.scores"
    np.testing.assert_array_equal(np.load(path), np.eye(2))
    assert [p.name for p in tmp_path.iterdir()] == ["fused.scores"]


def test_defined_columns_keeps_tags_with_both_classes():
    from tfmood.metrics import defined_columns

    groundtruth = np.array([[1, 0, 1, 0], [0, 0, 1, 1], [1, 0, 1, 0]], dtype=bool)
    # column 1 has no positive, column 2 no negative
    assert defined_columns(groundtruth).tolist() == [0, 3]
