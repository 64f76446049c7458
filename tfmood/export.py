"""TFLite export: converters, op inspection, verification against Keras.

    convert(model, target, representative_data) -> bytes        float32 | float16 | dynamic | int8
    export_model(model, target, out_path, ...) -> report dict   rewrite, convert, verify, write

The converter is TensorFlow's (`tf.lite.TFLiteConverter`); the converted models run in LiteRT
through `tfmood.interpreter` (`run_tflite`, `io_details` and `measure_latency` here are its
functions, kept under these names). Builtin ops only (no Flex/SELECT_TF_OPS), so an exported
model runs in the standard TFLite/LiteRT runtime; the int8 target is full-integer (int8 input
and output). Before conversion the model is rebuilt by `tfmood.fold.inference_model` (static
shapes, BatchNorm/AReLU folded, attention in a fast form). Every export is verified on held-out
inputs before it is written: float32 outputs within 1e-4 of the Keras model, float16 within
1e-2, dynamic-range and int8 macro ROC-AUC within 0.01 of the Keras model's (tags with positives
and negatives only); interpreter input/output dtypes and quantisation parameters are checked
too. An export that fails is not written.

The calibration and verification data come from the real input pipeline (`tfmood.data`) at batch
size 1: the validation and test splits of a corpus in the MTG-Jamendo layout, by default a
synthetic corpus (`tfmood.synth`) generated once into a cache directory.

Or from a folder of unlabelled music (`calibration=FOLDER` of audio files, no split TSVs): each
track is decoded (`tfmood.audio`), turned into log-mel (`tfmood.features`) and cut into windows of
the model's frames (every `hop_frames`, `music_windows`); the tracks, sorted by name, alternate
between calibration (even places) and verification (odd places), so no track is in both. A model
trained on real music is then judged without labels against the Keras model (`fidelity`): mean and
max |dp| of the tag scores, the median over tags of the per-tag Spearman rank correlation across
windows and the top-5 agreement (the mean, over windows, of |top5(Keras) & top5(TFLite)| / 5;
the fraction of windows whose top-5 sets are identical is reported too). Limits
(`FIDELITY_LIMITS`): int8 and dynamic mean |dp| <= 0.01, Spearman median >= 0.98, top-5 agreement
>= 0.9; float16 max |dp| <= 1e-2 and float32 max |dp| <= 1e-4 as on the synthetic corpus.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import re
import tempfile
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from tfmood import atomic
from tfmood.interpreter import io_details, measure_latency  # noqa: F401  (public names here)
from tfmood.interpreter import run as run_tflite

TARGETS = ("float32", "float16", "dynamic", "int8")
# Verification limits: max |TFLite - Keras| on the scores, or the ROC-AUC difference.
MAX_ABS_DIFF = {"float32": 1e-4, "float16": 1e-2}
MAX_AUC_DIFF = 0.01
# The int8 output of a sigmoid: TFLite fixes its quantisation to scale 1/256, zero point -128.
SIGMOID_INT8_SCALE = 1.0 / 256.0
SIGMOID_INT8_ZERO_POINT = -128

# Default verification corpus (tfmood.synth): big enough for a stable macro ROC-AUC.
DEFAULT_CORPUS = {"n_tracks": 300, "seconds": 30.0, "seed": 0}
# Targets the audio-in model is offered for: with int8 weights or activations in the spectral
# front-end (int8, and dynamic, whose hybrid kernels quantise activations on the fly) the quiet
# bins that the dB scale keeps are lost (ROC-AUC fell by 0.13 on the synthetic test split).
AUDIO_IN_TARGETS = ("float32", "float16")
# Music-folder verification (no labels): fidelity to the Keras model's scores.
FIDELITY_LIMITS = {"mean_abs_diff": 0.01, "spearman_median": 0.98, "top5_agreement": 0.9}
TOP_K = 5
AUDIO_SUFFIXES = (".wav", ".mp3", ".flac", ".ogg")
# Window step in mel frames for music folders: 1/8 of a 1400-frame window (3.7 s), so a
# 35-second excerpt gives 2 windows and a 65-second one 10.
DEFAULT_HOP_FRAMES = 175
SAMPLE_RATE = 12000
HOP_LENGTH = 256


def _check_target(target: str) -> None:
    if target not in TARGETS:
        raise ValueError(f"unknown TFLite target {target!r}; valid: {', '.join(TARGETS)}")


# ----------------------------------------------------------------------------------------------
# Conversion


def convert(
    model,
    target: str,
    representative_data: Optional[Callable[[], Iterable[list]]] = None,
    rewrite: bool = True,
    n_frames: Optional[int] = None,
) -> bytes:
    """Convert a Keras model to a TFLite flatbuffer with builtin ops only.

    Args:
        model: a Keras model (for `rewrite`, a chain such as `tfmood.models.build_model` gives).
        target: "float32", "float16" (float16 weights), "dynamic" (int8 weights, float
            activations) or "int8" (full integer: int8 weights, activations, input and output).
        representative_data: for "int8", a callable returning an iterable of `[input]` lists,
            each input a float32 array with batch size 1 (real pipeline data).
        rewrite: first rebuild the model with `tfmood.fold.inference_model` (static shapes,
            folded BatchNorm/AReLU, fast attention); False converts `model` as it is.
        n_frames: input length for `rewrite` when the model takes any length.

    Returns:
        The flatbuffer bytes.

    Raises:
        ValueError: an unknown target, "int8" without representative data, or an op that is not
            a TFLite builtin ("unsupported TFLite op ...").
    """
    import tensorflow as tf

    _check_target(target)
    if target == "int8" and representative_data is None:
        raise ValueError("target 'int8' needs representative_data (calibration inputs)")
    if rewrite:
        from tfmood.fold import inference_model

        model = inference_model(model, "int8" if target == "int8" else "float", n_frames)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if target != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if target == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if target == "int8":
        converter.representative_dataset = representative_data
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    # Keras prints the saved artifact's signature while converting: kept off the caller's stdout.
    notes = io.StringIO()
    try:
        with contextlib.redirect_stdout(notes):
            flatbuffer = converter.convert()
    except Exception as error:  # the converter raises ConverterError for ops without a builtin
        if type(error).__name__ != "ConverterError":
            raise
        names = sorted(set(re.findall(r"'tf\.(\w+)' op", str(error)))) or ["(see converter log)"]
        raise ValueError(
            f"unsupported TFLite op {names[0]}: no builtin kernel for {', '.join(names)} "
            "(Flex/SELECT_TF_OPS and custom ops are not allowed)"
        ) from None
    check_builtin_ops(flatbuffer)
    return flatbuffer


def ops_used(flatbuffer: bytes) -> List[str]:
    """Names of the operators a TFLite model uses, read from its flatbuffer (sorted).

    Builtin ops appear by name (CONV_2D, ...); custom ops (Flex ops included) as
    "CUSTOM:<name>".

    Args:
        flatbuffer: the model bytes.
    """
    from tfmood import compat

    schema = compat.tflite_schema()  # TensorFlow's generated module of the TFLite schema
    names = {code: name for name, code in vars(schema.BuiltinOperator).items()
             if not name.startswith("_")}  # fmt: skip
    model = schema.Model.GetRootAsModel(flatbuffer, 0)
    used = set()
    for index in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(index)
        # Codes above 127 live in BuiltinCode; older files keep them in the deprecated field.
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == schema.BuiltinOperator.CUSTOM:
            custom = code.CustomCode()
            used.add(f"CUSTOM:{custom.decode() if isinstance(custom, bytes) else custom}")
        else:
            used.add(names.get(builtin, f"BUILTIN_{builtin}"))
    return sorted(used)


def check_builtin_ops(flatbuffer: bytes) -> List[str]:
    """The ops of a model; ValueError naming the first custom (or Flex) op, if any.

    Args:
        flatbuffer: the model bytes.
    """
    used = ops_used(flatbuffer)
    custom = [name for name in used if name.startswith("CUSTOM:")]
    if custom:
        name = custom[0].split(":", 1)[1]
        kind = "Flex (TensorFlow) op" if name.startswith("Flex") else "custom op"
        raise ValueError(
            f"unsupported TFLite op {name} ({kind}); only builtin ops are allowed, all custom: "
            f"{', '.join(c.split(':', 1)[1] for c in custom)}"
        )
    return used


# ----------------------------------------------------------------------------------------------
# Verification


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
    _check_target(target)
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
    _check_target(target)
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
    _check_target(target)
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


# ----------------------------------------------------------------------------------------------
# Data: calibration and verification splits through the real pipeline


@dataclasses.dataclass
class SplitData:
    """Examples of one split: model inputs (N, ...) float32 and labels (N, tags) 0/1."""

    inputs: np.ndarray
    labels: np.ndarray
    tsv: str


SPLIT_NAME = "autotagging_moodtheme-{split}.tsv"


def default_corpus(cache_dir: Optional[str] = None) -> str:
    """The synthetic verification corpus, generated once (deterministic) into a cache directory.

    Args:
        cache_dir: where corpora are kept (default: $TFMOOD_CACHE or ~/.cache/tfmood).

    Returns:
        The corpus directory (split TSVs and `audio/`).
    """
    from tfmood.synth import generate_corpus

    cache_dir = cache_dir or os.environ.get(
        "TFMOOD_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "tfmood")
    )
    spec = DEFAULT_CORPUS
    name = f"export-corpus-{spec['n_tracks']}x{spec['seconds']:g}s-seed{spec['seed']}"
    path = os.path.join(cache_dir, name)
    if os.path.isfile(os.path.join(path, "synth.json")):
        return path
    os.makedirs(cache_dir, exist_ok=True)
    # Generated beside its final place and renamed, so a half-written corpus is never used.
    staging = tempfile.mkdtemp(prefix=f".{name}-", dir=cache_dir)
    generate_corpus(staging, spec["n_tracks"], spec["seconds"], spec["seed"])
    try:
        os.rename(staging, path)
    except OSError:  # another process finished first; its corpus is the same
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
    return path


def resolve_splits(calibration: Optional[str], test: Optional[str] = None) -> Dict[str, str]:
    """The calibration and test split files for a `--calibration` DIR or TSV.

    Args:
        calibration: a corpus directory (its validation split calibrates, its test split
            verifies), a split TSV (calibrates; the test split beside it, named as MTG-Jamendo
            names it, verifies), or None for the default synthetic corpus.
        test: an explicit test split TSV (overrides the one found).

    Returns:
        {"calibration": tsv, "test": tsv}.
    """
    if calibration is None:
        calibration = default_corpus()
    if os.path.isdir(calibration):
        splits = {
            "calibration": os.path.join(calibration, SPLIT_NAME.format(split="validation")),
            "test": os.path.join(calibration, SPLIT_NAME.format(split="test")),
        }
    elif os.path.isfile(calibration):
        folder, name = os.path.split(calibration)
        sibling = name.replace("-validation", "-test").replace("-train", "-test")
        splits = {"calibration": calibration, "test": os.path.join(folder, sibling)}
    else:
        raise FileNotFoundError(f"{calibration}: no such calibration directory or split file")
    if test is not None:
        splits["test"] = test
    for role, path in splits.items():
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: {role} split file not found")
    return splits


def default_root(tsv: str) -> str:
    """The audio root of a split file in the synthetic-corpus layout: `<its folder>/audio`."""
    return os.path.join(os.path.dirname(os.path.abspath(tsv)), "audio")


def load_mel_split(
    tsv: str, root: str, n_frames: int, source: str = "audio", limit: Optional[int] = None
) -> SplitData:
    """Log-mel inputs and labels of a split, through `tfmood.data.make_dataset` (batch size 1).

    Args:
        tsv: the split file.
        root: its audio root (source "audio") or melspec root (source "npy").
        n_frames: frames per example (the first ones; shorter tracks tiled).
        source: "audio" or "npy".
        limit: keep at most this many examples (the first ones, in TSV order).
    """
    from tfmood.data import make_dataset

    dataset = make_dataset(
        tsv, root, source, training=False, n_frames=n_frames, batch_size=1, progress=False
    )
    if limit is not None:
        dataset = dataset.take(limit)
    mels, labels = [], []
    for mel, label in dataset.as_numpy_iterator():
        mels.append(mel)
        labels.append(label)
    return SplitData(np.concatenate(mels), np.concatenate(labels), tsv)


def load_audio_split(
    tsv: str, root: str, n_samples: int, limit: Optional[int] = None
) -> SplitData:
    """12 kHz waveforms (first `n_samples`, a shorter track tiled) and labels of a split.

    Args:
        tsv: the split file.
        root: its audio root.
        n_samples: samples per example.
        limit: keep at most this many examples (the first ones, in TSV order).
    """
    from tfmood.data import checked_waveform
    from tfmood.metadata import label_matrix, read_split

    tracks = read_split(tsv)[:limit]
    waveforms = []
    for track in tracks:
        waveform = checked_waveform(os.path.join(root, track.path))
        repeats = -(-n_samples // waveform.size)
        waveforms.append(np.tile(waveform, repeats)[:n_samples])
    return SplitData(np.stack(waveforms), label_matrix(tracks).astype(np.float32), tsv)


def representative_dataset(inputs: np.ndarray) -> Callable[[], Iterable[list]]:
    """A converter `representative_dataset`: the examples one at a time, batch size 1.

    Args:
        inputs: float32 (N, ...) calibration examples.
    """

    def examples():
        for example in inputs:
            yield [np.asarray(example[None], dtype=np.float32)]

    return examples


# ----------------------------------------------------------------------------------------------
# Data: windows of unlabelled music


def is_music_folder(path: Optional[str]) -> bool:
    """A folder of audio files to calibrate or verify on (rather than a labelled corpus)."""
    if path is None or not os.path.isdir(path):
        return False
    if os.path.isfile(os.path.join(path, SPLIT_NAME.format(split="validation"))):
        return False
    return bool(music_files(path))


def music_files(folder: str) -> List[str]:
    """The audio files directly in `folder` (WAV, MP3, FLAC, OGG), sorted by name."""
    names = sorted(name for name in os.listdir(folder)
                   if name.lower().endswith(AUDIO_SUFFIXES))  # fmt: skip
    return [os.path.join(folder, name) for name in names
            if os.path.isfile(os.path.join(folder, name))]  # fmt: skip


@dataclasses.dataclass
class MusicWindows:
    """Windows of real music: model inputs (N, ...) float32 and where each came from."""

    inputs: np.ndarray
    tracks: List[str]  # the file names, one per track used
    track_index: np.ndarray  # (N,) index into `tracks`
    start_frames: np.ndarray  # (N,) first mel frame of each window
    skipped: List[Tuple[str, str]]  # (file name, reason) of files that could not be decoded

    def subset(self, keep: Sequence[int]) -> "MusicWindows":
        """The windows of the tracks at the positions `keep` (in `tracks`)."""
        keep = sorted(keep)
        mask = np.isin(self.track_index, keep)
        remap = np.full(len(self.tracks), -1)
        remap[keep] = np.arange(len(keep))
        return MusicWindows(self.inputs[mask], [self.tracks[i] for i in keep],
                            remap[self.track_index[mask]], self.start_frames[mask],
                            self.skipped)  # fmt: skip

    def describe(self, folder: str) -> dict:
        return {
            "folder": folder,
            "tracks": [os.path.basename(track) for track in self.tracks],
            "windows": int(len(self.inputs)),
            "skipped": [f"{os.path.basename(name)}: {reason}" for name, reason in self.skipped],
        }


def track_windows(waveform: np.ndarray, n_frames: int, hop_frames: int, audio_in: bool,
                  n_mels: int = 96) -> Tuple[np.ndarray, np.ndarray]:
    """Consecutive windows of one track, every `hop_frames` mel frames (the last ones that fit).

    A track shorter than one window is tiled to one window.

    Args:
        waveform: the 12 kHz mono waveform.
        n_frames: frames per window.
        hop_frames: frames between window starts.
        audio_in: give waveform windows of `audio_samples_for(n_frames)` samples (window w starts
            at sample w * hop_frames * 256) instead of log-mel windows (n_mels, n_frames).
        n_mels: mel bands.

    Returns:
        (windows, start frames).
    """
    from tfmood.features import waveform_to_mel

    n_samples = audio_samples_for(n_frames)
    waveform = np.asarray(waveform, dtype=np.float32)
    if waveform.size < n_samples:
        waveform = np.tile(waveform, -(-n_samples // waveform.size))
    total_frames = -(-waveform.size // HOP_LENGTH) + 1
    starts = np.arange(0, total_frames - n_frames + 1, hop_frames)
    if audio_in:
        windows = [waveform[s * HOP_LENGTH: s * HOP_LENGTH + n_samples] for s in starts]
        windows = [w for w in windows if w.size == n_samples]
        starts = starts[: len(windows)]
    else:
        mel = waveform_to_mel(waveform, SAMPLE_RATE, n_mels)
        windows = [mel[:, s: s + n_frames] for s in starts]
    return np.stack(windows).astype(np.float32), starts


def music_windows(folder: str, n_frames: int, hop_frames: Optional[int] = None,
                  audio_in: bool = False, n_mels: int = 96,
                  max_seconds: Optional[float] = None) -> MusicWindows:
    """Decode every audio file of a folder and cut it into windows (`track_windows`).

    Files that cannot be decoded are skipped and listed.

    Args:
        folder: a folder of audio files (`music_files`).
        n_frames: frames per window.
        hop_frames: frames between window starts (default DEFAULT_HOP_FRAMES scaled to
            n_frames: n_frames // 8).
        audio_in: waveform windows instead of log-mel ones.
        n_mels: mel bands.
        max_seconds: decode at most the first seconds of each file.
    """
    from tfmood.audio import load_audio

    hop = int(hop_frames or max(1, n_frames * DEFAULT_HOP_FRAMES // 1400))
    if hop < 1:
        raise ValueError(f"hop_frames must be positive, got {hop_frames}")
    inputs, tracks, index, starts, skipped = [], [], [], [], []
    for path in music_files(folder):
        try:
            waveform = load_audio(path, SAMPLE_RATE, max_seconds=max_seconds)
        except (ValueError, RuntimeError, OSError) as error:
            reason = (str(error).splitlines() or [type(error).__name__])[0]
            skipped.append((path, reason.replace(path, os.path.basename(path))))
            continue
        windows, first = track_windows(waveform, n_frames, hop, audio_in, n_mels)
        index.append(np.full(len(windows), len(tracks)))
        tracks.append(path)
        inputs.append(windows)
        starts.append(first)
    if not tracks:
        raise ValueError(f"{folder}: no decodable audio file ({', '.join(AUDIO_SUFFIXES)})")
    return MusicWindows(np.concatenate(inputs), tracks, np.concatenate(index),
                        np.concatenate(starts), skipped)  # fmt: skip


def split_music(windows: MusicWindows) -> Dict[str, MusicWindows]:
    """Calibration and verification parts by track: sorted tracks alternate, first calibrates.

    A folder with one track gives it to both (say so in the report: the windows are shared).
    """
    n = len(windows.tracks)
    if n == 1:
        return {"calibration": windows, "test": windows}
    return {
        "calibration": windows.subset(range(0, n, 2)),
        "test": windows.subset(range(1, n, 2)),
    }


# ----------------------------------------------------------------------------------------------
# The audio-in model


def audio_samples_for(n_frames: int, hop_length: int = HOP_LENGTH) -> int:
    """Waveform length whose LogMel has exactly `n_frames` frames: (n_frames - 1) * hop."""
    return (int(n_frames) - 1) * hop_length


def audio_in_model(mel_model, n_samples: int, batch_size: Optional[int] = 1):
    """One Keras model from a fixed-length 12 kHz waveform to tag scores: LogMel, then the model.

    Args:
        mel_model: a model taking (batch, n_mels, frames) log-mel dB.
        n_samples: the waveform length (`audio_samples_for(frames)` matches a fixed-length model).
        batch_size: static batch size of the input (None: any).

    Returns:
        A chain model (batch, n_samples) -> (batch, tags): `LogMel` then `mel_model`'s layers.
    """
    import keras

    from tfmood.layers.log_mel import LogMel

    n_mels = mel_model.inputs[0].shape[1]
    waveform = keras.Input(shape=(n_samples,), batch_size=batch_size, name="waveform")
    mel = LogMel(n_mels=n_mels, name="log_mel")(waveform)
    frames = mel_model.inputs[0].shape[2]
    if frames is not None and mel.shape[2] != frames:
        raise ValueError(
            f"{n_samples} samples give {mel.shape[2]} frames; the model takes {frames} "
            f"(use {audio_samples_for(frames)} samples)"
        )
    return keras.Model(waveform, mel_model(mel), name=f"{mel_model.name}_audio_in")


# ----------------------------------------------------------------------------------------------
# The whole export


def _model_frames(model, n_frames: Optional[int]) -> int:
    frames = model.inputs[0].shape[-1]
    if frames is not None:
        if n_frames is not None and n_frames != frames:
            raise ValueError(f"the model takes {frames} frames, not n_frames={n_frames}")
        return int(frames)
    return int(n_frames or 1400)


def export_model(
    model,
    target: str,
    out_path: Optional[str],
    calibration: Optional[str] = None,
    n_frames: Optional[int] = None,
    audio_in: bool = False,
    test: Optional[str] = None,
    root: Optional[str] = None,
    limit: Optional[int] = 200,
    progress: bool = True,
    logits: bool = False,
    hop_frames: Optional[int] = None,
) -> dict:
    """Rewrite, convert, verify and (when every check passes) write a TFLite model.

    Args:
        model: a Keras model or the path of a `.keras` file.
        target: one of TARGETS.
        out_path: the .tflite file to write (None: verify only).
        calibration: corpus directory or split TSV (see `resolve_splits`); None: the default
            synthetic corpus; or a folder of unlabelled audio files (`is_music_folder`): its
            tracks are cut into windows (`music_windows`) and split by track into calibration
            and verification parts (`split_music`), and the export is judged by `check_fidelity`
            against the Keras model instead of by ROC-AUC.
        n_frames: input frames (default: the model's, or 1400 for a model of any length).
        audio_in: export the audio-in model (12 kHz waveform of `audio_samples_for(n_frames)`
            samples -> tag scores, LogMel inside), verified against the mel-input Keras model on
            the LogMel of the same audio.
        test: explicit test split TSV for the verification; with a music-folder
            `calibration`, a folder of audio files whose windows (all of them) verify instead of
            the calibration folder's verification part.
        root: the audio root of the splits (default: `<TSV folder>/audio`).
        limit: at most this many examples per split.
        progress: show a progress bar of the stages (data, convert, verify).
        logits: output the tag logits instead of the sigmoid scores (`tfmood.fold.logits_model`;
            the app applies the sigmoid). For int8 the logits get their own calibrated scale,
            finer than the sigmoid output's fixed 1/256 steps where scores bunch near a tag's
            base rate. Verified on the sigmoid of the outputs.
        hop_frames: window step of music folders (default n_frames // 8).

    Returns:
        The report: target, output ("scores" or "logits"), path, written, bytes, ops,
        inputs/outputs (dtype, shape, quantisation), checks (metric, value, limit, passed),
        passed, and the data used.
    """
    from tfmood.fold import inference_model, logits_model
    from tfmood.models import load_model

    _check_target(target)
    if audio_in and target not in AUDIO_IN_TARGETS:
        raise ValueError(
            f"the audio-in model is exported as {' or '.join(AUDIO_IN_TARGETS)}, not {target}: "
            "8-bit weights or activations in the LogMel front-end lose the quiet spectral bins "
            "(export the mel-input model for int8)"
        )
    if isinstance(model, (str, os.PathLike)):
        model = load_model(os.fspath(model))
    from tqdm import tqdm

    frames = _model_frames(model, n_frames)
    music = is_music_folder(calibration)
    stages = tqdm(total=3, desc=f"export {target}", unit="stage", disable=not progress)
    if music:
        data, described = _music_data(calibration, test, frames, audio_in, limit, hop_frames,
                                      model.inputs[0].shape[1])  # fmt: skip
    else:
        splits = resolve_splits(calibration, test)
        data = {role: _load_split(tsv, root, frames, audio_in, limit)
                for role, tsv in splits.items()}  # fmt: skip
        described = {role: {"tsv": splits[role], "examples": len(data[role].inputs)}
                     for role in splits}  # fmt: skip
    stages.update()

    graph = inference_model(model, "int8" if target == "int8" else "float", frames)
    if logits:
        graph, model = logits_model(graph), logits_model(model)
    if audio_in:
        graph = audio_in_model(graph, audio_samples_for(frames))
    representative = representative_dataset(data["calibration"].inputs)
    flatbuffer = convert(graph, target, representative, rewrite=False)
    stages.update()

    test_data = data["test"]
    reference = _keras_scores(model, test_data.inputs, audio_in)
    outputs = run_tflite(flatbuffer, test_data.inputs)
    details = io_details(flatbuffer)
    output = details["outputs"][0]
    grid = output["quantization"]
    numbers = None
    if music:
        output_checks, numbers = check_fidelity(target, reference, outputs, logits)
    else:
        output_checks = check_outputs(
            target, reference, outputs, test_data.labels,
            (grid["scale"], grid["zero_point"]) if output["dtype"] == "int8" and grid else None,
            logits,
        )  # fmt: skip
    checks = check_io(flatbuffer, target, logits) + output_checks
    stages.update()
    stages.close()
    passed = all(check.passed for check in checks)
    if passed and out_path is not None:
        atomic.write_bytes(out_path, flatbuffer)
    return {
        "target": target,
        "output": "logits" if logits else "scores",
        "audio_in": audio_in,
        "path": out_path,
        "written": bool(passed and out_path is not None),
        "bytes": len(flatbuffer),
        "ops": ops_used(flatbuffer),
        **details,
        "checks": [check.as_dict() for check in checks],
        "passed": passed,
        "data": described,
        **({"fidelity": numbers} if numbers is not None else {}),
    }


def _evenly(windows: MusicWindows, limit: Optional[int]) -> MusicWindows:
    """At most `limit` windows, evenly spaced over all of them (every track keeps a share)."""
    if limit is None or len(windows.inputs) <= limit:
        return windows
    keep = np.unique(np.round(np.linspace(0, len(windows.inputs) - 1, limit)).astype(int))
    return dataclasses.replace(windows, inputs=windows.inputs[keep],
                               track_index=windows.track_index[keep],
                               start_frames=windows.start_frames[keep])  # fmt: skip


def _music_data(folder, test, frames, audio_in, limit, hop_frames, n_mels):
    """Calibration and verification windows of a music folder (and an optional test folder)."""
    parts = split_music(music_windows(folder, frames, hop_frames, audio_in, n_mels))
    if test is not None:
        if not is_music_folder(test):
            raise ValueError(f"{test}: with a music-folder calibration, --test is a music folder")
        parts["test"] = music_windows(test, frames, hop_frames, audio_in, n_mels)
    sources = {"calibration": folder, "test": test if test is not None else folder}
    parts = {role: _evenly(part, limit) for role, part in parts.items()}
    hop = int(hop_frames or max(1, frames * DEFAULT_HOP_FRAMES // 1400))
    described = {role: {**part.describe(sources[role]), "hop_frames": hop}
                 for role, part in parts.items()}  # fmt: skip
    return parts, described


def verify_on_music(model, flatbuffer: bytes, target: str, folder: str,
                    audio_in: bool = False, logits: bool = False,
                    hop_frames: Optional[int] = None, limit: Optional[int] = None) -> dict:
    """Fidelity of an exported model to its Keras model on every window of a music folder.

    Args:
        model: the Keras model (mel input, giving scores) or its path.
        flatbuffer: the exported model.
        target: its conversion target (which limits apply).
        folder: a folder of audio files.
        audio_in: the export takes waveforms.
        logits: the export gives logits (compared with the Keras model's, as sigmoids).
        hop_frames: window step (default n_frames // 8).
        limit: at most this many windows (evenly spaced).

    Returns:
        {"data": ..., "fidelity": ..., "checks": [...], "passed": bool}.
    """
    if isinstance(model, (str, os.PathLike)):
        from tfmood.models import load_model

        model = load_model(os.fspath(model))
    if logits:
        from tfmood.fold import logits_model

        model = logits_model(model)
    frames = _model_frames(model, None)
    windows = _evenly(music_windows(folder, frames, hop_frames, audio_in,
                                    model.inputs[0].shape[1]), limit)  # fmt: skip
    reference = _keras_scores(model, windows.inputs, audio_in)
    outputs = run_tflite(flatbuffer, windows.inputs)
    checks, numbers = check_fidelity(target, reference, outputs, logits)
    hop = int(hop_frames or max(1, frames * DEFAULT_HOP_FRAMES // 1400))
    return {
        "data": {**windows.describe(folder), "hop_frames": hop},
        "fidelity": numbers,
        "checks": [check.as_dict() for check in checks],
        "passed": all(check.passed for check in checks),
    }


def _load_split(tsv: str, root: Optional[str], frames: int, audio_in: bool, limit) -> SplitData:
    root = root or default_root(tsv)
    if audio_in:
        return load_audio_split(tsv, root, audio_samples_for(frames), limit)
    return load_mel_split(tsv, root, frames, limit=limit)


def _keras_scores(model, inputs: np.ndarray, audio_in: bool) -> np.ndarray:
    """The Keras model's scores; for audio, on the Keras LogMel of the same waveforms."""
    if audio_in:
        from tfmood.layers.log_mel import LogMel

        log_mel = LogMel(n_mels=model.inputs[0].shape[1])
        inputs = np.concatenate([np.asarray(log_mel(batch)) for batch in np.split(
            inputs, range(8, len(inputs), 8))])  # fmt: skip
    return np.asarray(model.predict(inputs, batch_size=8, verbose=0), dtype=np.float32)
