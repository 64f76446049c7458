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
"""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile
from typing import Callable, Dict, Iterable, List, Optional, Tuple, Union

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
    try:
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
) -> dict:
    """Rewrite, convert, verify and (when every check passes) write a TFLite model.

    Args:
        model: a Keras model or the path of a `.keras` file.
        target: one of TARGETS.
        out_path: the .tflite file to write (None: verify only).
        calibration: corpus directory or split TSV (see `resolve_splits`); None: the default
            synthetic corpus.
        n_frames: input frames (default: the model's, or 1400 for a model of any length).
        audio_in: export the audio-in model (12 kHz waveform of `audio_samples_for(n_frames)`
            samples -> tag scores, LogMel inside), verified against the mel-input Keras model on
            the LogMel of the same audio.
        test: explicit test split TSV for the verification.
        root: the audio root of the splits (default: `<TSV folder>/audio`).
        limit: at most this many examples per split.
        progress: show a progress bar of the stages (data, convert, verify).
        logits: output the tag logits instead of the sigmoid scores (`tfmood.fold.logits_model`;
            the app applies the sigmoid). For int8 the logits get their own calibrated scale,
            finer than the sigmoid output's fixed 1/256 steps where scores bunch near a tag's
            base rate. Verified on the sigmoid of the outputs.

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
    splits = resolve_splits(calibration, test)
    stages = tqdm(total=3, desc=f"export {target}", unit="stage", disable=not progress)
    data = {role: _load_split(tsv, root, frames, audio_in, limit) for role, tsv in splits.items()}
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
    checks = check_io(flatbuffer, target, logits) + check_outputs(
        target, reference, outputs, test_data.labels,
        (grid["scale"], grid["zero_point"]) if output["dtype"] == "int8" and grid else None,
        logits,
    )  # fmt: skip
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
        "data": {
            role: {"tsv": splits[role], "examples": len(data[role].inputs)} for role in splits
        },
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
