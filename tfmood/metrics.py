"""MediaEval 2020 evaluation of multi-label tag scores, and late fusion of several models' scores.

The definitions are those of the challenge's official scripts (MTG-Jamendo `scripts/mediaeval`,
`calculate_decisions.py` and `evaluate.py`):

- ROC-AUC: `sklearn.metrics.roc_auc_score`; PR-AUC: `sklearn.metrics.average_precision_score`;
  each macro (mean over tags) and micro (all tracks x tags pooled).
- Decision threshold per tag: the score on the tag's precision-recall curve
  (`sklearn.metrics.precision_recall_curve`) with the highest F = 2PR / (P + R) (first one on ties).
- Precision, recall and F-score, macro and micro: `sklearn.metrics.precision_recall_fscore_support`
  on the binary decisions.

The decisions here are `scores >= threshold`, the operating point at which the threshold was picked
on the curve. The official `calculate_decisions.py` decides `scores > threshold`, which drops the
tracks scored exactly at the threshold; `strict_decisions=True` reproduces that rule.

Matrices are (tracks, tags): the ground truth binary, the predictions scores in [0, 1].
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn import metrics as skmetrics

from tfmood import atomic, plotting
from tfmood.data.tags import MOODTHEME_TAGS, N_TAGS, PREFIX

SUMMARY_KEYS = (
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
)

REPORT_FILES = {
    "metrics": "metrics.json",
    "results": "results.tsv",
    "per_tag": "per_tag.tsv",
    "thresholds": "thresholds.tsv",
    "decisions": "decisions.npy",
    "auc_plot": "per_tag_auc.png",
}


@dataclass(frozen=True)
class EvaluationResult:
    """Everything the MediaEval evaluation reports for one prediction matrix.

    Attributes:
        tags: tag names, one per column.
        summary: the ten summary metrics, keyed by `SUMMARY_KEYS` (in that order).
        roc_auc_per_tag: ROC-AUC of each tag, shape (tags,).
        pr_auc_per_tag: PR-AUC (average precision) of each tag, shape (tags,).
        precision_per_tag: precision of each tag's decisions, shape (tags,).
        recall_per_tag: recall of each tag's decisions, shape (tags,).
        f_score_per_tag: F-score of each tag's decisions, shape (tags,).
        thresholds: decision threshold of each tag, shape (tags,).
        decisions: binary decisions, bool, shape (tracks, tags).
        positives_per_tag: number of ground-truth positives of each tag, shape (tags,).
        strict_decisions: True when the decisions are `scores > threshold` (the official script's
            rule), False for `scores >= threshold`.
    """

    tags: tuple[str, ...]
    summary: dict[str, float]
    roc_auc_per_tag: np.ndarray
    pr_auc_per_tag: np.ndarray
    precision_per_tag: np.ndarray
    recall_per_tag: np.ndarray
    f_score_per_tag: np.ndarray
    thresholds: np.ndarray
    decisions: np.ndarray
    positives_per_tag: np.ndarray
    strict_decisions: bool = False


# ----------------------------------------------------------------------------------------------
# Input checks


def default_tags(n_columns: int) -> list[str]:
    """The 56 mood/theme tags when there are 56 columns, else `tag_0`, `tag_1`, ...

    Args:
        n_columns: number of tag columns.
    """
    if n_columns == N_TAGS:
        return list(MOODTHEME_TAGS)
    return [f"tag_{i}" for i in range(n_columns)]


def _resolve_tags(tags: Sequence[str] | None, n_columns: int) -> tuple[str, ...]:
    if tags is None:
        return tuple(default_tags(n_columns))
    tags = tuple(str(tag) for tag in tags)
    if len(tags) != n_columns:
        raise ValueError(f"{len(tags)} tag names given for a matrix with {n_columns} tag columns")
    return tags


def _where(row: int, column: int, tags: Sequence[str] | None) -> str:
    tag = f" (tag {tags[column]!r})" if tags is not None and column < len(tags) else ""
    return f"row {row}, column {column}{tag}"


def _check_matrix(array: np.ndarray, name: str) -> None:
    """Shape and dtype checks shared by ground truth and scores."""
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{name}: expected a numeric or bool matrix, got dtype {array.dtype}")
    if array.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D matrix (tracks x tags), got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name}: the matrix is empty, shape {array.shape}")


def _check_scores(scores: np.ndarray, name: str, tags: Sequence[str] | None = None) -> np.ndarray:
    """Scores must be finite and within [0, 1]; returns them as a float array."""
    scores = np.asarray(scores)
    _check_matrix(scores, name)
    if scores.dtype.kind != "f":
        scores = scores.astype(np.float64)
    nan_cells = np.isnan(scores)
    if nan_cells.any():
        row, column = np.argwhere(nan_cells)[0]
        count = int(nan_cells.sum())
        raise ValueError(f"{name}: {count} NaN score(s), the first at {_where(row, column, tags)}")
    outside = (scores < 0) | (scores > 1)
    if outside.any():
        row, column = np.argwhere(outside)[0]
        raise ValueError(
            f"{name}: scores must lie in [0, 1], found {float(scores[row, column])!r} at "
            f"{_where(row, column, tags)}"
        )
    return scores


def _check_groundtruth(
    groundtruth: np.ndarray, name: str, tags: Sequence[str] | None = None
) -> np.ndarray:
    """Ground truth must hold only 0 and 1; returns it as a bool array."""
    groundtruth = np.asarray(groundtruth)
    _check_matrix(groundtruth, name)
    if groundtruth.dtype.kind == "b":
        return groundtruth
    non_binary = (groundtruth != 0) & (groundtruth != 1)
    if non_binary.any():
        row, column = np.argwhere(non_binary)[0]
        value = groundtruth[row, column].item()
        raise ValueError(
            f"{name}: ground truth must be binary (0/1), found {value!r} at "
            f"{_where(row, column, tags)}"
        )
    return groundtruth == 1


def validate_inputs(
    groundtruth: np.ndarray,
    predictions: np.ndarray,
    groundtruth_name: str = "groundtruth",
    predictions_name: str = "predictions",
    tags: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Check a ground-truth and a prediction matrix; ValueError says which one and what is wrong.

    Args:
        groundtruth: (tracks, tags) matrix of 0/1 (bool, int or float).
        predictions: (tracks, tags) matrix of scores in [0, 1].
        groundtruth_name: how errors name the ground truth (e.g. its file name).
        predictions_name: how errors name the predictions (e.g. its file name).
        tags: optional tag names, so errors also name the tag of a bad cell.

    Returns:
        The ground truth as a bool array and the predictions as a float array.
    """
    groundtruth = _check_groundtruth(groundtruth, groundtruth_name, tags)
    predictions = _check_scores(predictions, predictions_name, tags)
    if predictions.shape != groundtruth.shape:
        raise ValueError(
            f"{predictions_name}: shape {predictions.shape} does not match {groundtruth_name} "
            f"shape {groundtruth.shape} (tracks x tags)"
        )
    return groundtruth, predictions


def check_tags_defined(
    groundtruth: np.ndarray,
    tags: Sequence[str] | None = None,
    groundtruth_name: str = "groundtruth",
) -> None:
    """ValueError naming the tags whose ground truth is all negative or all positive.

    ROC-AUC, PR-AUC and the decision thresholds are undefined for such a tag.

    Args:
        groundtruth: (tracks, tags) bool matrix.
        tags: tag names, one per column (default: see `default_tags`).
        groundtruth_name: how the error names the ground truth.
    """
    tags = _resolve_tags(tags, groundtruth.shape[1])
    positives = groundtruth.sum(axis=0)
    problems = []
    for label, columns in (
        ("no positive", np.flatnonzero(positives == 0)),
        ("no negative", np.flatnonzero(positives == groundtruth.shape[0])),
    ):
        if columns.size:
            names = ", ".join(f"{tags[c]!r} (column {c})" for c in columns)
            problems.append(f"{label} track for {names}")
    if problems:
        raise ValueError(
            f"{groundtruth_name}: ROC-AUC and PR-AUC are undefined for a tag with "
            + " and ".join(problems)
            + " (evaluate on a subset of columns that excludes them)"
        )


def defined_columns(groundtruth: np.ndarray) -> np.ndarray:
    """Indices of the tags with at least one positive and one negative track.

    Only on those are ROC-AUC, PR-AUC and the decision thresholds defined: a caller that wants
    metrics over whatever a split covers (a small or synthetic corpus) evaluates these columns.
    """
    groundtruth = np.asarray(groundtruth, dtype=bool)
    positives = groundtruth.sum(axis=0)
    return np.flatnonzero((positives > 0) & (positives < groundtruth.shape[0]))


def _validated(
    groundtruth: np.ndarray, predictions: np.ndarray, tags: Sequence[str] | None
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Checked inputs, resolved tag names, and every tag's metrics defined."""
    groundtruth, predictions = validate_inputs(groundtruth, predictions, tags=tags)
    tags = _resolve_tags(tags, groundtruth.shape[1])
    check_tags_defined(groundtruth, tags)
    return groundtruth, predictions, tags


# ----------------------------------------------------------------------------------------------
# Per-epoch metrics: vectorised over tags, equal to sklearn's macro averages


def macro_roc_auc(
    groundtruth: np.ndarray, predictions: np.ndarray, tags: Sequence[str] | None = None
) -> float:
    """Macro ROC-AUC, equal to `roc_auc_score(..., average="macro")`, about 3x faster.

    Uses the Mann-Whitney form: the chance that a positive outscores a negative, ties counting one
    half, from average ranks (which is what sklearn's trapezoidal area gives).

    Args:
        groundtruth: (tracks, tags) 0/1 matrix.
        predictions: (tracks, tags) scores in [0, 1].
        tags: optional tag names for error messages.
    """
    from scipy.stats import rankdata  # scipy comes with scikit-learn

    groundtruth, predictions, tags = _validated(groundtruth, predictions, tags)
    ranks = rankdata(predictions, axis=0)  # ascending, ties get their average rank
    positives = groundtruth.sum(axis=0).astype(np.float64)
    negatives = groundtruth.shape[0] - positives
    positive_rank_sums = np.where(groundtruth, ranks, 0.0).sum(axis=0)
    per_tag = (positive_rank_sums - positives * (positives + 1) / 2) / (positives * negatives)
    return float(np.mean(per_tag))


def macro_pr_auc(
    groundtruth: np.ndarray, predictions: np.ndarray, tags: Sequence[str] | None = None
) -> float:
    """Macro PR-AUC, equal to `average_precision_score(..., average="macro")`, about 3x faster.

    Average precision = mean over the positives of the precision at the threshold equal to the
    positive's score (tracks tied with it all count as retrieved), as sklearn defines it.

    Args:
        groundtruth: (tracks, tags) 0/1 matrix.
        predictions: (tracks, tags) scores in [0, 1].
        tags: optional tag names for error messages.
    """
    groundtruth, predictions, tags = _validated(groundtruth, predictions, tags)
    n_tracks = predictions.shape[0]
    order = np.argsort(-predictions, axis=0, kind="stable")
    scores = np.take_along_axis(predictions, order, axis=0)
    labels = np.take_along_axis(groundtruth, order, axis=0)
    true_positives = np.cumsum(labels, axis=0)
    # A threshold lies after the last track of each run of equal scores; every track of the run
    # takes the precision there.
    closes_run = np.ones_like(labels)
    closes_run[:-1] = scores[:-1] != scores[1:]
    rows = np.broadcast_to(np.arange(n_tracks)[:, None], scores.shape)
    run_end = np.where(closes_run, rows, n_tracks)
    run_end = np.minimum.accumulate(run_end[::-1], axis=0)[::-1]
    precision_at_run_end = np.take_along_axis(true_positives, run_end, axis=0) / (run_end + 1)
    per_tag = np.where(labels, precision_at_run_end, 0.0).sum(axis=0) / labels.sum(axis=0)
    return float(np.mean(per_tag))


# ----------------------------------------------------------------------------------------------
# Full MediaEval evaluation


def _best_f_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The score with the highest F on the tag's precision-recall curve (first on ties)."""
    precision, recall, thresholds = skmetrics.precision_recall_curve(labels, scores)
    with np.errstate(divide="ignore", invalid="ignore"):
        f_score = np.nan_to_num(2 * precision * recall / (precision + recall))
    # The curve's last point (recall 0) has no threshold; with a positive present it never wins.
    return float(thresholds[np.argmax(f_score[:-1])])


def optimal_thresholds(
    groundtruth: np.ndarray, predictions: np.ndarray, tags: Sequence[str] | None = None
) -> np.ndarray:
    """Per-tag thresholds that maximise the F-score, as MediaEval's calculate_decisions.py.

    Args:
        groundtruth: (tracks, tags) 0/1 matrix.
        predictions: (tracks, tags) scores in [0, 1].
        tags: optional tag names for error messages.

    Returns:
        float64 array of shape (tags,).
    """
    groundtruth, predictions, tags = _validated(groundtruth, predictions, tags)
    return _thresholds_of_checked(groundtruth, predictions)


def _thresholds_of_checked(groundtruth: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    columns = range(groundtruth.shape[1])
    return np.array([_best_f_threshold(groundtruth[:, i], predictions[:, i]) for i in columns])


def apply_thresholds(
    predictions: np.ndarray, thresholds: np.ndarray, strict: bool = False
) -> np.ndarray:
    """Binary decisions: `predictions >= thresholds` (or `>` with `strict`, the official rule).

    Args:
        predictions: (tracks, tags) scores.
        thresholds: (tags,) thresholds.
        strict: decide `scores > threshold`, as MediaEval's calculate_decisions.py does.
    """
    predictions = np.asarray(predictions)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if thresholds.shape != predictions.shape[1:]:
        raise ValueError(
            f"{thresholds.shape[0] if thresholds.ndim else 1} thresholds for "
            f"{predictions.shape[1]} tag columns"
        )
    return predictions > thresholds if strict else predictions >= thresholds


def evaluate(
    groundtruth: np.ndarray,
    predictions: np.ndarray,
    tags: Sequence[str] | None = None,
    strict_decisions: bool = False,
) -> EvaluationResult:
    """All MediaEval 2020 metrics: AUCs, optimal thresholds, decisions and their P/R/F.

    Args:
        groundtruth: (tracks, tags) 0/1 matrix.
        predictions: (tracks, tags) scores in [0, 1].
        tags: tag names, one per column (default: see `default_tags`).
        strict_decisions: decide `scores > threshold` as the official script does, instead of
            `scores >= threshold`.

    Example:
        >>> result = evaluate(groundtruth, predictions)
        >>> result.summary["PR-AUC-macro"]
    """
    groundtruth, predictions, tags = _validated(groundtruth, predictions, tags)
    roc_auc = skmetrics.roc_auc_score(groundtruth, predictions, average=None)
    pr_auc = skmetrics.average_precision_score(groundtruth, predictions, average=None)
    thresholds = _thresholds_of_checked(groundtruth, predictions)
    decisions = apply_thresholds(predictions, thresholds, strict=strict_decisions)
    # zero_division=0 is sklearn's default value, without its warning.
    precision, recall, f_score, _ = skmetrics.precision_recall_fscore_support(
        groundtruth, decisions, average=None, zero_division=0
    )
    micro = skmetrics.precision_recall_fscore_support(
        groundtruth, decisions, average="micro", zero_division=0
    )
    summary = {
        "ROC-AUC-macro": float(np.mean(roc_auc)),
        "PR-AUC-macro": float(np.mean(pr_auc)),
        "ROC-AUC-micro": float(skmetrics.roc_auc_score(groundtruth, predictions, average="micro")),
        "PR-AUC-micro": float(
            skmetrics.average_precision_score(groundtruth, predictions, average="micro")
        ),
        "precision-macro": float(np.mean(precision)),
        "recall-macro": float(np.mean(recall)),
        "F-score-macro": float(np.mean(f_score)),
        "precision-micro": float(micro[0]),
        "recall-micro": float(micro[1]),
        "F-score-micro": float(micro[2]),
    }
    return EvaluationResult(
        tags=tags,
        summary=summary,
        roc_auc_per_tag=np.asarray(roc_auc, dtype=np.float64),
        pr_auc_per_tag=np.asarray(pr_auc, dtype=np.float64),
        precision_per_tag=np.asarray(precision, dtype=np.float64),
        recall_per_tag=np.asarray(recall, dtype=np.float64),
        f_score_per_tag=np.asarray(f_score, dtype=np.float64),
        thresholds=thresholds,
        decisions=decisions,
        positives_per_tag=groundtruth.sum(axis=0),
        strict_decisions=strict_decisions,
    )


# ----------------------------------------------------------------------------------------------
# Late fusion


def fuse_scores(
    score_matrices: Sequence[np.ndarray],
    weights: Sequence[float] | None = None,
    names: Sequence[str] | None = None,
) -> np.ndarray:
    """Late fusion: the (weighted) mean of several models' score matrices.

    Args:
        score_matrices: (tracks, tags) score matrices in [0, 1], all of the same shape.
        weights: one non-negative weight per matrix (default: equal weights).
        names: how errors name each matrix (e.g. its file name).

    Returns:
        The fused (tracks, tags) matrix, float32 when every input is float32 or narrower,
        else float64.
    """
    if len(score_matrices) == 0:
        raise ValueError("fusion needs at least one score matrix")
    names = (
        list(names) if names is not None else [f"scores[{i}]" for i in range(len(score_matrices))]
    )
    if len(names) != len(score_matrices):
        raise ValueError(f"{len(names)} names for {len(score_matrices)} score matrices")
    checked = [_check_scores(scores, name) for scores, name in zip(score_matrices, names)]
    for scores, name in zip(checked[1:], names[1:]):
        if scores.shape != checked[0].shape:
            raise ValueError(
                f"{name}: shape {scores.shape} does not match {names[0]} shape {checked[0].shape}"
            )
    weights = _fusion_weights(weights, len(checked))
    fused = np.tensordot(weights, np.stack([s.astype(np.float64) for s in checked]), axes=1)
    out_dtype = np.result_type(np.float32, *[s.dtype for s in checked])
    # Normalised weights can sum to 1 + epsilon; keep the fused scores within [0, 1].
    return np.clip(fused, 0.0, 1.0).astype(out_dtype)


def _fusion_weights(weights: Sequence[float] | None, n_matrices: int) -> np.ndarray:
    """Normalised fusion weights; ValueError for a wrong count, negatives or a zero sum."""
    if weights is None:
        return np.full(n_matrices, 1.0 / n_matrices)
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != (n_matrices,):
        raise ValueError(f"{weights.size} weights given for {n_matrices} score matrices")
    if not np.all(np.isfinite(weights)) or np.any(weights < 0) or weights.sum() <= 0:
        raise ValueError(
            f"fusion weights must be finite, non-negative and not all zero, got {weights.tolist()}"
        )
    return weights / weights.sum()


# ----------------------------------------------------------------------------------------------
# Files


def load_matrix(path: str | os.PathLike) -> np.ndarray:
    """Load a .npy matrix without unpickling; errors name the file.

    Args:
        path: the .npy file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise ValueError(f"{path}: not a readable numeric .npy file ({error})") from None
    if not isinstance(loaded, np.ndarray):  # an .npz archive
        loaded.close()
        raise ValueError(f"{path}: expected one .npy array, got an .npz archive")
    return loaded


def load_tags(path: str | os.PathLike) -> list[str]:
    """Tag names from a text file, one per line, with or without the `mood/theme---` prefix.

    Blank lines are skipped; only the first tab-separated field of a line is used.

    Args:
        path: the text file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    tags = []
    for line in path.read_text(encoding="utf-8").splitlines():
        name = line.split("\t")[0].strip()
        if name:
            tags.append(name.removeprefix(PREFIX))
    if not tags:
        raise ValueError(f"{path}: no tag names in the file")
    return tags


def save_matrix(path: str | os.PathLike, matrix: np.ndarray) -> Path:
    """Save a matrix as .npy at exactly `path`, atomically.

    Args:
        path: destination file.
        matrix: the array.
    """
    path = Path(path)
    atomic.save_npy(path, matrix)
    return path


def _per_tag_tsv(result: EvaluationResult) -> str:
    header = "tag\tROC-AUC\tPR-AUC\tprecision\trecall\tF-score\tthreshold\tpositives"
    rows = [header]
    for i, tag in enumerate(result.tags):
        rows.append(
            f"{tag}\t{result.roc_auc_per_tag[i]:.6f}\t{result.pr_auc_per_tag[i]:.6f}\t"
            f"{result.precision_per_tag[i]:.6f}\t{result.recall_per_tag[i]:.6f}\t"
            f"{result.f_score_per_tag[i]:.6f}\t{float(result.thresholds[i])!r}\t"
            f"{int(result.positives_per_tag[i])}"
        )
    return "\n".join(rows) + "\n"


def write_report(result: EvaluationResult, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write an evaluation report; every file is written atomically.

    Files: `metrics.json` (the summary), `results.tsv` (the summary in the official evaluate.py
    format), `per_tag.tsv`, `thresholds.tsv` (tag, threshold; as calculate_decisions.py writes it),
    `decisions.npy` (bool) and `per_tag_auc.png` (bar plot of per-tag ROC-AUC and PR-AUC).

    Args:
        result: what `evaluate` returned.
        out_dir: directory, created if missing.

    Returns:
        The written paths, keyed as `REPORT_FILES`.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {key: out_dir / name for key, name in REPORT_FILES.items()}
    atomic.write_text(paths["metrics"], json.dumps(result.summary, indent=2) + "\n")
    atomic.write_text(
        paths["results"], "".join(f"{k}\t{v:.6f}\n" for k, v in result.summary.items())
    )
    atomic.write_text(paths["per_tag"], _per_tag_tsv(result))
    atomic.write_text(
        paths["thresholds"],
        "".join(f"{tag}\t{t!r}\n" for tag, t in zip(result.tags, result.thresholds.tolist())),
    )
    save_matrix(paths["decisions"], result.decisions)
    plot_per_tag_auc(result, paths["auc_plot"])
    return paths


def format_summary(result: EvaluationResult, per_tag: bool = True) -> str:
    """A readable table of the summary metrics and, optionally, of every tag.

    Args:
        result: what `evaluate` returned.
        per_tag: add one line per tag.
    """
    lines = [f"{key:<16}{value:.6f}" for key, value in result.summary.items()]
    if per_tag:
        rule = ">" if result.strict_decisions else ">="
        header = (
            f"{'tag':<14}{'ROC-AUC':>9}{'PR-AUC':>9}{'P':>8}{'R':>8}{'F':>8}"
            f"  {'decide ' + rule:>12}{'positives':>10}"
        )
        lines += ["", header]
        for i, tag in enumerate(result.tags):
            lines.append(
                f"{tag:<14}{result.roc_auc_per_tag[i]:9.4f}{result.pr_auc_per_tag[i]:9.4f}"
                f"{result.precision_per_tag[i]:8.3f}{result.recall_per_tag[i]:8.3f}"
                f"{result.f_score_per_tag[i]:8.3f}  {result.thresholds[i]:12.6f}"
                f"{int(result.positives_per_tag[i]):10d}"
            )
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Plots (`tfmood.plotting`: no pyplot, no global backend change)


def plot_per_tag_auc(result: EvaluationResult, path: str | os.PathLike) -> Path:
    """Bar plot (PNG) of each tag's ROC-AUC and PR-AUC, with the macro averages as lines.

    Args:
        result: what `evaluate` returned.
        path: the PNG file.
    """
    n_tags = len(result.tags)
    width, height = max(6.0, 0.25 * n_tags + 2), 4.5
    figure = plotting.new_figure((width, height))
    # Margins in inches, the bottom one sized for the rotated tag names (a layout engine costs
    # a second here).
    bottom = 0.35 + 0.065 * max(len(tag) for tag in result.tags)
    axes = figure.add_axes(
        (0.7 / width, bottom / height, 1 - 0.9 / width, 1 - (bottom + 0.4) / height)
    )
    x = np.arange(n_tags)
    axes.bar(x - 0.2, result.roc_auc_per_tag, width=0.4, label="ROC-AUC", color="tab:blue")
    axes.bar(x + 0.2, result.pr_auc_per_tag, width=0.4, label="PR-AUC", color="tab:orange")
    axes.axhline(result.summary["ROC-AUC-macro"], color="tab:blue", linestyle="--", linewidth=1)
    axes.axhline(result.summary["PR-AUC-macro"], color="tab:orange", linestyle="--", linewidth=1)
    axes.set_xticks(x, result.tags, rotation=90, fontsize=7)
    axes.set_xlim(-0.7, n_tags - 0.3)
    axes.set_ylim(0, 1)
    axes.set_ylabel("area under curve")
    axes.set_title(
        f"Per-tag ROC-AUC and PR-AUC (dashed: macro {result.summary['ROC-AUC-macro']:.3f}"
        f" / {result.summary['PR-AUC-macro']:.3f})"
    )
    axes.legend(loc="upper right")
    return plotting.save_png(figure, path)


def plot_curves(
    groundtruth: np.ndarray,
    predictions: np.ndarray,
    path: str | os.PathLike,
    tags: Sequence[str] | None = None,
) -> Path:
    """Small multiples (PNG): each tag's ROC curve and precision-recall curve in one panel.

    Args:
        groundtruth: (tracks, tags) 0/1 matrix.
        predictions: (tracks, tags) scores in [0, 1].
        path: the PNG file.
        tags: tag names, one per column (default: see `default_tags`).
    """
    groundtruth, predictions, tags = _validated(groundtruth, predictions, tags)
    n_columns = math.ceil(math.sqrt(len(tags)))
    n_rows = math.ceil(len(tags) / n_columns)
    # A fixed grid and unshared axes: a layout engine or 56 shared axes cost seconds to draw.
    width, height = 1.6 * n_columns + 0.5, 1.6 * n_rows + 0.7
    figure = plotting.new_figure((width, height))
    margins = {"left": 0.35 / width, "right": 1 - 0.1 / width, "bottom": 0.3 / height}
    grid = figure.subplots(
        n_rows,
        n_columns,
        squeeze=False,
        gridspec_kw={**margins, "top": 1 - 0.55 / height, "wspace": 0.08, "hspace": 0.3},
    )
    for i, axes in enumerate(grid.flat):
        if i >= len(tags):
            axes.set_axis_off()
            continue
        fpr, tpr, _ = skmetrics.roc_curve(groundtruth[:, i], predictions[:, i])
        precision, recall, _ = skmetrics.precision_recall_curve(
            groundtruth[:, i], predictions[:, i]
        )
        axes.plot(fpr, tpr, color="tab:blue", linewidth=0.8)
        axes.plot(recall, precision, color="tab:orange", linewidth=0.8)
        axes.plot([0, 1], [0, 1], color="0.8", linewidth=0.5)
        axes.set_title(tags[i], fontsize=7, pad=2)
        _unit_square(axes, x_labels=i + n_columns >= len(tags), y_labels=i % n_columns == 0)
    figure.suptitle(
        "ROC (blue: TPR vs FPR)\nprecision-recall (orange: precision vs recall)", fontsize=8
    )
    return plotting.save_png(figure, path)


def _unit_square(axes, x_labels: bool, y_labels: bool) -> None:
    """[0, 1] limits; ticks only on the outer panels (each tick costs milliseconds to draw)."""
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.02)
    ticks, labels = [0, 0.5, 1], ["0", ".5", "1"]
    axes.set_xticks(ticks if x_labels else [], labels if x_labels else [], fontsize=6)
    axes.set_yticks(ticks if y_labels else [], labels if y_labels else [], fontsize=6)
