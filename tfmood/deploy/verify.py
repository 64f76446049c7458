"""Checks of an exported model against its Keras model: I/O, outputs, fidelity on music.

Float32 outputs within 1e-4 of the Keras model, float16 within 1e-2, dynamic-range and int8
macro ROC-AUC within 0.01 of the Keras model's (tags with positives and negatives only);
interpreter input/output dtypes and quantisation parameters are checked too.

On unlabelled music (`fidelity`): mean and max |dp| of the tag scores, the median over tags of
the per-tag Spearman rank correlation across windows and the top-5 agreement (the mean, over
windows, of |top5(Keras) & top5(TFLite)| / 5; the fraction of windows whose top-5 sets are
identical is reported too). Limits (`FIDELITY_LIMITS`): int8 and dynamic mean |dp| <= 0.01,
Spearman median >= 0.98, top-5 agreement >= 0.9; float16 max |dp| <= 1e-2 and float32 max
|dp| <= 1e-4 as on the synthetic corpus.
"""

from __future__ import annotations

import dataclasses
from typing import List, Optional, Tuple, Union

import numpy as np

from tfmood.deploy.convert import check_target
from tfmood.deploy.runtime import io_details

# Verification limits: max |TFLite - Keras| on the scores, or the ROC-AUC difference.
MAX_ABS_DIFF = {"float32": 1e-4, "float16": 1e-2}


MAX_AUC_DIFF = 0.01


# The int8 output of a sigmoid: TFLite fixes its quantisation to scale 1/256, zero point -128.
SIGMOID_INT8_SCALE = 1.0 / 256.0


SIGMOID_INT8_ZERO_POINT = -128


# Music-folder verification (no labels): fidelity to the Keras model's scores.
FIDELITY_LIMITS = {"mean_abs_diff": 0.01, "spearman_median": 0.98, "top5_agreement": 0.9}


TOP_K = 5


@dataclasses.dataclass
class Check:
    """One verification: a metric, its value, the limit it must respect and the outcome."""

    metric: str
    value: Union[float, str, None]
    limit: Union[float, str, None]
    passed: bool
    detail: str = ""

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def check_io(flatbuffer: bytes, target: str, logits: bool = False) -> List[Check]:
    """Input/output dtypes and quantisation parameters expected for `target`.

    Float targets take and give float32; int8 takes and gives int8 with a positive scale and a
    zero point in [-128, 127], the output (a sigmoid) at scale 1/256 and zero point -128, or,
    for a logits output, at its own calibrated scale.

    Args:
        flatbuffer: the model bytes.
        target: the conversion target.
        logits: the model outputs logits (no sigmoid).
    """
    check_target(target)
    details = io_details(flatbuffer)
    expected = "int8" if target == "int8" else "float32"
    checks = []
    for kind in ("inputs", "outputs"):
        for tensor in details[kind]:
            role = f"{kind[:-1]} {tensor['name']}"
            checks.append(
                Check(f"{role} dtype", tensor["dtype"], expected, tensor["dtype"] == expected)
            )
            sigmoid = kind == "outputs" and not logits
            checks.append(_quantization_check(role, tensor["quantization"], target, sigmoid))
    return checks


def _quantization_check(role: str, quantization, target: str, sigmoid: bool) -> Check:
    metric = f"{role} quantization"
    if target != "int8":
        return Check(metric, str(quantization), "None", quantization is None)
    if quantization is None:
        return Check(metric, "None", "int8 scale and zero point", False)
    scale, zero_point = quantization["scale"], quantization["zero_point"]
    value = f"scale={scale:.6g} zero_point={zero_point}"
    if sigmoid:
        passed = np.isclose(scale, SIGMOID_INT8_SCALE) and zero_point == SIGMOID_INT8_ZERO_POINT
        limit = f"scale={SIGMOID_INT8_SCALE:.6g} zero_point={SIGMOID_INT8_ZERO_POINT} (sigmoid)"
    else:
        passed = scale > 0 and -128 <= zero_point <= 127
        limit = "scale > 0, zero_point in [-128, 127]"
    return Check(metric, value, limit, bool(passed))


def check_outputs(
    target: str,
    reference: np.ndarray,
    outputs: np.ndarray,
    labels: Optional[np.ndarray] = None,
    output_quantization: Optional[Tuple[float, int]] = None,
    logits: bool = False,
) -> List[Check]:
    """Compare TFLite scores with the Keras model's on the same inputs.

    float32 and float16: the largest absolute difference against its limit. dynamic and int8:
    the macro ROC-AUC difference (over the tags with positives and negatives) against 0.01; the
    largest absolute difference is reported without a limit. With `output_quantization` (int8
    outputs), also reported: the ROC-AUC difference against the Keras scores rounded to the same
    output grid. Scores of 1/256 steps tie tracks that a float score ranks, which costs a weakly
    trained model (its scores bunched near the tags' base rates) ROC-AUC however exact the int8
    graph is; this second number is the int8 graph's own error.

    With `logits`, `reference` and `outputs` are logits: the checks compare their sigmoids (the
    scores the app computes), and the output grid applies to the logits.

    Args:
        target: the conversion target.
        reference: Keras scores (N, tags).
        outputs: TFLite scores (N, tags).
        labels: (N, tags) 0/1 ground truth, required for dynamic and int8.
        output_quantization: (scale, zero point) of int8 outputs.
        logits: `reference` and `outputs` are logits.
    """
    check_target(target)
    to_scores = _sigmoid if logits else np.asarray
    grid = None
    if output_quantization is not None:
        grid = to_scores(on_output_grid(reference, *output_quantization))
    reference, outputs = to_scores(reference), to_scores(outputs)
    diff = float(np.max(np.abs(outputs - reference)))
    if target in MAX_ABS_DIFF:
        limit = MAX_ABS_DIFF[target]
        return [Check("max_abs_diff", diff, limit, diff <= limit)]
    if labels is None:
        raise ValueError(f"verifying a {target} model needs labels (a ROC-AUC check)")
    from tfmood.metrics import defined_columns, macro_roc_auc

    columns = defined_columns(labels)
    if columns.size == 0:
        raise ValueError("no tag has both positive and negative examples: ROC-AUC is undefined")
    keras_auc = macro_roc_auc(labels[:, columns], reference[:, columns])
    tflite_auc = macro_roc_auc(labels[:, columns], outputs[:, columns])
    delta = abs(tflite_auc - keras_auc)
    detail = f"Keras {keras_auc:.4f}, TFLite {tflite_auc:.4f} over {columns.size} tags"
    checks = [
        Check("roc_auc_abs_diff", delta, MAX_AUC_DIFF, delta <= MAX_AUC_DIFF, detail),
        Check("max_abs_diff", diff, None, True, "reported only"),
    ]
    if grid is not None:
        grid_auc = macro_roc_auc(labels[:, columns], grid[:, columns])
        checks.append(Check(
            "roc_auc_abs_diff_output_grid", abs(tflite_auc - grid_auc), None, True,
            f"Keras scores on the int8 output grid: {grid_auc:.4f} (reported only)",
        ))  # fmt: skip
    return checks


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    from scipy.special import expit

    return expit(np.asarray(logits, dtype=np.float64)).astype(np.float32)


def on_output_grid(scores: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Float scores rounded to the values an int8 output of (scale, zero point) can hold."""
    steps = np.clip(np.round(scores / scale) + zero_point, -128, 127)
    return ((steps - zero_point) * scale).astype(np.float32)


def spearman_per_tag(reference: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """Spearman rank correlation of each tag's scores across examples (average ranks for ties).

    A tag whose scores are constant on either side has no rank correlation: NaN.

    Args:
        reference: (N, tags) scores.
        outputs: (N, tags) scores.

    Returns:
        float64 (tags,).
    """
    from scipy.stats import rankdata

    a = rankdata(np.asarray(reference, dtype=np.float64), axis=0)
    b = rankdata(np.asarray(outputs, dtype=np.float64), axis=0)
    a, b = a - a.mean(axis=0), b - b.mean(axis=0)
    denominator = np.sqrt((a * a).sum(axis=0) * (b * b).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (a * b).sum(axis=0) / denominator
    return np.where(denominator > 0, rho, np.nan)


def top_k_sets(scores: np.ndarray, k: int = TOP_K) -> List[frozenset]:
    """Each example's k highest-scoring tags (ties broken by the lower tag index)."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), axis=1, kind="stable")
    return [frozenset(row[:k].tolist()) for row in order]


def fidelity(reference: np.ndarray, outputs: np.ndarray, k: int = TOP_K) -> dict:
    """How closely exported scores follow the Keras model's on the same inputs, without labels.

    Args:
        reference: Keras scores (N, tags), probabilities.
        outputs: exported-model scores (N, tags), probabilities.
        k: the top-k of the agreement.

    Returns:
        {"examples", "mean_abs_diff" (over all scores), "max_abs_diff",
         "worst_tag_mean_abs_diff" (the largest per-tag mean), "spearman_median" (over the tags
         with a defined correlation), "spearman_min", "spearman_tags" (how many were defined),
         "top5_agreement" (mean over examples of |top-k(Keras) & top-k(export)| / k),
         "top5_exact" (fraction of examples whose top-k sets are equal)}.
    """
    reference = np.asarray(reference, dtype=np.float64)
    outputs = np.asarray(outputs, dtype=np.float64)
    if reference.shape != outputs.shape or reference.ndim != 2:
        raise ValueError(f"scores of shapes {reference.shape} and {outputs.shape} do not pair")
    diff = np.abs(outputs - reference)
    rho = spearman_per_tag(reference, outputs)
    defined = rho[~np.isnan(rho)]
    pairs = list(zip(top_k_sets(reference, k), top_k_sets(outputs, k)))
    overlap = [len(a & b) / k for a, b in pairs]
    return {
        "examples": int(reference.shape[0]),
        "mean_abs_diff": float(diff.mean()),
        "max_abs_diff": float(diff.max()),
        "worst_tag_mean_abs_diff": float(diff.mean(axis=0).max()),
        "spearman_median": float(np.median(defined)) if defined.size else float("nan"),
        "spearman_min": float(defined.min()) if defined.size else float("nan"),
        "spearman_tags": int(defined.size),
        "top5_agreement": float(np.mean(overlap)),
        "top5_exact": float(np.mean([a == b for a, b in pairs])),
    }


def check_fidelity(target: str, reference: np.ndarray, outputs: np.ndarray,
                   logits: bool = False) -> Tuple[List[Check], dict]:
    """The checks of an export against the Keras model on unlabelled real music.

    float32 and float16: max |dp| against MAX_ABS_DIFF; dynamic and int8: the mean |dp|, the
    per-tag Spearman median and the top-5 agreement against FIDELITY_LIMITS. Every fidelity
    number is reported; those without a limit for the target are reported only.

    Args:
        target: the conversion target.
        reference: Keras outputs (N, tags).
        outputs: exported-model outputs (N, tags).
        logits: both are logits (compared as their sigmoids).

    Returns:
        (checks, the `fidelity` dict).
    """
    check_target(target)
    to_scores = _sigmoid if logits else np.asarray
    numbers = fidelity(to_scores(reference), to_scores(outputs))
    if target in MAX_ABS_DIFF:
        limits = {"max_abs_diff": MAX_ABS_DIFF[target]}
    else:
        limits = dict(FIDELITY_LIMITS)
    checks = []
    for metric in ("mean_abs_diff", "max_abs_diff", "spearman_median", "top5_agreement"):
        value, limit = numbers[metric], limits.get(metric)
        if limit is None:
            checks.append(Check(metric, value, None, True, "reported only"))
            continue
        higher_is_better = metric in ("spearman_median", "top5_agreement")
        passed = value >= limit if higher_is_better else value <= limit
        checks.append(Check(metric, value, limit, bool(passed),
                            f"{numbers['examples']} windows of real music"))  # fmt: skip
    return checks, numbers
