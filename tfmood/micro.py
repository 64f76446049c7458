"""Microcontroller export: an int8 model that runs in TensorFlow Lite Micro on a small board.

    build_micro_model(...) -> keras.Model                 a small strided CNN on 96 x 320 windows
    export_micro(model, out_path, ...) -> report dict     int8, run in TFLM, C array, resolver
    train_micro(...) -> report dict                       fit on a corpus (optionally distilled
                                                          from a full model), clip ROC-AUC
    aggregate_windows(window_scores) -> clip scores      mean over windows (as the firmware does)
    score_clips_tflm(flatbuffer, clips) -> clip scores   the firmware's loop, in TFLM

The board class is an Arduino Nano 33 BLE Sense (nRF52840: 256 KB RAM, 1 MB flash): the TFLM
tensor arena must stay within 256 KB and the model within 1 MB, int8 end to end. The full-size
models cannot fit (their first block alone holds several MB of activations), so the micro model
reads a short window (320 frames, 6.8 s) and halves both axes at each of its first convolutions,
so the arena is set by the two largest (early) activations, live together: 48 x 160 x 16 and
24 x 80 x 32 int8, 184,320 bytes (the trained model's arena: 191,280 bytes). Its late layers are
wide (128 channels, an extra convolution at the lowest resolution): on these small maps they cost
little arena, and late capacity is what limits learning on the synthetic corpus (as for the full
models). Global max and mean pooling are concatenated. A clip is scored by running the model on
consecutive windows and averaging their scores.

Every export is run in the real TFLM interpreter (the `tflite-micro` package): it must allocate
within the arena budget, and its int8 outputs must equal those of LiteRT's reference kernels
(`tfmood.interpreter`, `BUILTIN_REF`) on the same model within one quantisation step. The
smallest arena that allocates is measured by bisection and reported. Written beside the
.tflite: `model_data.cc`/`model_data.h` (the model as `alignas(16) const unsigned char
g_model[]`) and `ops.txt` (the `MicroMutableOpResolver` registrations for exactly the ops the
model uses, and the arena size).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence

import numpy as np

from tfmood import atomic

ARENA_BUDGET = 256 * 1024
FLASH_BUDGET = 1024 * 1024
N_MELS = 96
WINDOW_FRAMES = 320  # 320 hops of 256 samples at 12 kHz: 6.8 s
DEFAULT_FILTERS = (16, 32, 64, 128)  # stride-2 convolutions
DEFAULT_HEAD_FILTERS = (128,)  # stride-1 convolutions at the lowest resolution
# Room left above the measured arena in the firmware constant (TFLM's own bookkeeping varies a
# little between builds and targets).
ARENA_MARGIN = 1024
# TFLite builtin operator -> MicroMutableOpResolver method.
RESOLVER_METHODS = {
    "ADD": "AddAdd",
    "AVERAGE_POOL_2D": "AddAveragePool2D",
    "CONCATENATION": "AddConcatenation",
    "CONV_2D": "AddConv2D",
    "DEPTHWISE_CONV_2D": "AddDepthwiseConv2D",
    "DEQUANTIZE": "AddDequantize",
    "EXPAND_DIMS": "AddExpandDims",
    "FULLY_CONNECTED": "AddFullyConnected",
    "LOGISTIC": "AddLogistic",
    "MAXIMUM": "AddMaximum",
    "MAX_POOL_2D": "AddMaxPool2D",
    "MEAN": "AddMean",
    "MINIMUM": "AddMinimum",
    "MUL": "AddMul",
    "PAD": "AddPad",
    "QUANTIZE": "AddQuantize",
    "REDUCE_MAX": "AddReduceMax",
    "RELU": "AddRelu",
    "RESHAPE": "AddReshape",
    "SOFTMAX": "AddSoftmax",
    "SQUEEZE": "AddSqueeze",
    "STRIDED_SLICE": "AddStridedSlice",
    "SUB": "AddSub",
    "TRANSPOSE": "AddTranspose",
}


# ----------------------------------------------------------------------------------------------
# The model


def build_micro_model(
    n_mels: int = N_MELS,
    n_frames: int = WINDOW_FRAMES,
    filters: Sequence[int] = DEFAULT_FILTERS,
    n_tags: int = 56,
    dropout: float = 0.2,
    name: str = "micro_cnn",
    head_filters: Sequence[int] = DEFAULT_HEAD_FILTERS,
):
    """A small CNN for TFLM: strided 3x3 convolutions, 3x3 convolutions at the lowest
    resolution, global max and mean pool, sigmoid dense.

    Each strided convolution (stride 2, BatchNorm folded at conversion, ReLU) halves both axes,
    so the activations shrink as the channels grow; the head convolutions (stride 1) then add
    capacity where the maps are smallest. The input is log-mel dB, normalised by a BatchNorm.
    Every layer converts to a TFLM builtin (CONV_2D, MAX_POOL_2D, AVERAGE_POOL_2D,
    CONCATENATION, ...).

    Args:
        n_mels: mel bands of the input.
        n_frames: frames per window.
        filters: channels of the strided convolutions, one stride-2 convolution each.
        n_tags: outputs (sigmoid scores).
        dropout: before the dense layer (training only).
        name: model name.
        head_filters: channels of the stride-1 convolutions after them (may be empty).

    Returns:
        A Keras model (batch, n_mels, n_frames) -> (batch, n_tags).
    """
    import keras

    for label, values, least in (("filters", filters, 1), ("head_filters", head_filters, 0)):
        if len(values) < least or any(int(f) < 1 for f in values):
            raise ValueError(f"{label} must be positive channel counts, got {list(values)}")
    mel = keras.Input(shape=(n_mels, n_frames), name="mel")
    x = keras.layers.Reshape((n_mels, n_frames, 1), name="channel")(mel)
    x = keras.layers.BatchNormalization(name="input_norm")(x)
    layers = [(int(c), 2) for c in filters] + [(int(c), 1) for c in head_filters]
    for index, (channels, stride) in enumerate(layers):
        x = keras.layers.Conv2D(
            channels, 3, strides=stride, padding="same", use_bias=False, name=f"conv_{index}"
        )(x)
        x = keras.layers.BatchNormalization(name=f"norm_{index}")(x)
        x = keras.layers.ReLU(name=f"relu_{index}")(x)
    # Global max and mean as pools over the whole map (MAX_POOL_2D, AVERAGE_POOL_2D): TFLM's
    # CMSIS-NN build has optimised int8 kernels for pools, not for REDUCE_MAX or MEAN.
    window = tuple(x.shape[1:3])
    pooled = [
        keras.layers.Flatten(name="max_flat")(
            keras.layers.MaxPooling2D(window, name="max_pool")(x)
        ),
        keras.layers.Flatten(name="mean_flat")(
            keras.layers.AveragePooling2D(window, name="mean_pool")(x)
        ),
    ]
    x = keras.layers.Concatenate(name="pool")(pooled)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    scores = keras.layers.Dense(n_tags, activation="sigmoid", name="scores")(x)
    return keras.Model(mel, scores, name=name)


def clip_windows(mel: np.ndarray, n_frames: int = WINDOW_FRAMES) -> np.ndarray:
    """Consecutive non-overlapping windows of a clip's log-mel, as the firmware feeds them.

    A trailing part shorter than a window is dropped; a clip shorter than one window is tiled.

    Args:
        mel: (n_mels, T) log-mel of one clip.
        n_frames: frames per window.

    Returns:
        (n_windows, n_mels, n_frames) float32.
    """
    mel = np.asarray(mel, dtype=np.float32)
    if mel.ndim != 2 or mel.shape[1] == 0:
        raise ValueError(f"expected a (n_mels, frames) log-mel, got shape {mel.shape}")
    if mel.shape[1] < n_frames:
        mel = np.tile(mel, (1, -(-n_frames // mel.shape[1])))
    count = mel.shape[1] // n_frames
    return np.stack([mel[:, i * n_frames : (i + 1) * n_frames] for i in range(count)])


def aggregate_windows(window_scores: np.ndarray) -> np.ndarray:
    """Clip scores: the mean of its window scores (the firmware keeps a running sum).

    Args:
        window_scores: (n_windows, tags), or (clips, n_windows, tags) for several clips.

    Returns:
        (tags,) or (clips, tags) float32.
    """
    scores = np.asarray(window_scores, dtype=np.float32)
    if scores.ndim not in (2, 3) or scores.shape[-2] == 0:
        raise ValueError(f"expected (windows, tags) or (clips, windows, tags), got {scores.shape}")
    return scores.mean(axis=-2)


# ----------------------------------------------------------------------------------------------
# TFLM


def _tflm_interpreter(flatbuffer: bytes, arena_size: int):
    from tflite_micro.python.tflite_micro import runtime

    return runtime.Interpreter.from_bytes(flatbuffer, arena_size=int(arena_size))


@contextlib.contextmanager
def _quiet_stderr():
    """Silence file descriptor 2: TFLM prints every failed allocation of the search there."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _allocates(flatbuffer: bytes, arena_size: int) -> bool:
    try:
        with _quiet_stderr():
            _tflm_interpreter(flatbuffer, arena_size)
    except RuntimeError:  # how TFLM reports a failed AllocateTensors
        return False
    return True


def measure_arena(flatbuffer: bytes, limit: int = 4 * ARENA_BUDGET, step: int = 16) -> int:
    """The smallest TFLM tensor arena (bytes, a multiple of `step`) that allocates the model.

    Args:
        flatbuffer: the int8 model bytes.
        limit: the largest arena tried; ValueError when even that does not allocate.
        step: the granularity of the search (TFLM aligns its buffers to 16 bytes).
    """
    if not _allocates(flatbuffer, limit):
        raise ValueError(f"the model does not allocate in a {limit}-byte TFLM arena")
    low, high = 0, limit // step  # low fails (0 bytes), high allocates
    while high - low > 1:
        middle = (low + high) // 2
        if _allocates(flatbuffer, middle * step):
            high = middle
        else:
            low = middle
    return high * step


def run_tflm(flatbuffer: bytes, inputs: np.ndarray, arena_size: int) -> np.ndarray:
    """Raw int8 outputs of the TFLM interpreter, one example at a time.

    Args:
        flatbuffer: the int8 model bytes (input batch size 1).
        inputs: int8 (N, ...) quantised examples.
        arena_size: the tensor arena in bytes.

    Returns:
        int8 (N, tags).
    """
    interpreter = _tflm_interpreter(flatbuffer, arena_size)
    outputs = []
    for example in np.asarray(inputs, dtype=np.int8):
        interpreter.set_input(example[None], 0)
        interpreter.invoke()
        outputs.append(np.array(interpreter.get_output(0), dtype=np.int8).reshape(1, -1))
    return np.concatenate(outputs)


def score_clips_tflm(flatbuffer: bytes, clips, arena_size: int = ARENA_BUDGET) -> np.ndarray:
    """Clip scores as the firmware computes them, in the TFLM interpreter.

    Each clip is cut into consecutive windows (`clip_windows`), every window is quantised with
    the input tensor's scale and zero point and run in TFLM, its int8 scores are dequantised
    with the output's, and the clip's scores are their mean (`aggregate_windows`).

    Args:
        flatbuffer: the int8 micro model bytes (input (1, n_mels, window frames)).
        clips: float32 log-mel clips, (clips, n_mels, T) or a sequence of (n_mels, T_i).
        arena_size: the tensor arena in bytes.

    Returns:
        float32 (clips, tags).
    """
    from tfmood.interpreter import io_details

    details = io_details(flatbuffer)
    input_scale, input_zero = _quant_pair(details["inputs"][0])
    output_scale, output_zero = _quant_pair(details["outputs"][0])
    n_frames = details["inputs"][0]["shape"][-1]
    windows = [clip_windows(clip, n_frames) for clip in clips]
    quantized = np.clip(np.round(np.concatenate(windows) / input_scale) + input_zero, -128, 127)
    raw = run_tflm(flatbuffer, quantized.astype(np.int8), arena_size).astype(np.float32)
    window_scores = (raw - output_zero) * output_scale
    ends = np.cumsum([len(w) for w in windows])[:-1]
    return np.stack([aggregate_windows(part) for part in np.split(window_scores, ends)])


def run_tflite_int8(flatbuffer: bytes, inputs: np.ndarray) -> np.ndarray:
    """Raw int8 outputs of LiteRT's reference kernels (`BUILTIN_REF`) on int8 inputs.

    The reference kernels do the arithmetic TFLM's do; the optimised builtin kernels and the
    XNNPACK delegate requantise differently and can move outputs by a step or more.

    Args:
        flatbuffer: the int8 model bytes.
        inputs: int8 (N, ...) quantised examples.

    Returns:
        int8 (N, outputs).
    """
    from tfmood.interpreter import run

    outputs = run(flatbuffer, np.asarray(inputs, dtype=np.int8), kernels="reference", raw=True)
    return outputs.reshape(len(outputs), -1).astype(np.int8)


# ----------------------------------------------------------------------------------------------
# Firmware files


def resolver_methods(ops: Sequence[str]) -> list[str]:
    """The `MicroMutableOpResolver` method of each op (ValueError for one TFLM lacks here).

    Args:
        ops: TFLite builtin op names (CONV_2D, ...), as `tfmood.export.ops_used` gives.
    """
    missing = [op for op in ops if op not in RESOLVER_METHODS]
    if missing:
        raise ValueError(f"no TFLM resolver registration known for op(s) {', '.join(missing)}")
    return [RESOLVER_METHODS[op] for op in ops]


def resolver_snippet(ops: Sequence[str], arena_bytes: int) -> str:
    """C++ lines registering exactly `ops` and declaring the tensor arena.

    Args:
        ops: TFLite builtin op names.
        arena_bytes: the arena size to declare.
    """
    methods = resolver_methods(ops)
    lines = [
        f"// {len(methods)} ops: {', '.join(ops)}",
        f"constexpr int kTensorArenaSize = {arena_bytes};",
        "alignas(16) static uint8_t tensor_arena[kTensorArenaSize];",
        f"static tflite::MicroMutableOpResolver<{len(methods)}> op_resolver;",
    ]
    lines += [f"op_resolver.{method}();" for method in methods]
    return "\n".join(lines) + "\n"


def c_array_source(flatbuffer: bytes, header_name: str = "model_data.h") -> dict[str, str]:
    """`model_data.h` and `model_data.cc` holding the model as `g_model` / `g_model_len`.

    Args:
        flatbuffer: the model bytes.
        header_name: the header file name the source includes.

    Returns:
        {"header": text, "source": text}.
    """
    header = (
        "#ifndef TFMOOD_MODEL_DATA_H_\n#define TFMOOD_MODEL_DATA_H_\n\n"
        "extern const unsigned char g_model[];\nextern const unsigned int g_model_len;\n\n"
        "#endif  // TFMOOD_MODEL_DATA_H_\n"
    )
    rows = []
    for start in range(0, len(flatbuffer), 12):
        rows.append("  " + ", ".join(f"0x{byte:02x}" for byte in flatbuffer[start : start + 12]))
    source = (
        f'#include "{header_name}"\n\n'
        "// TFLM reads the flatbuffer in place: it must be 16-byte aligned.\n"
        "alignas(16) const unsigned char g_model[] = {\n" + ",\n".join(rows) + "\n};\n"
        f"const unsigned int g_model_len = {len(flatbuffer)};\n"
    )
    return {"header": header, "source": source}


# ----------------------------------------------------------------------------------------------
# Export


def _load_inputs(calibration, test, root, n_frames: int, limit) -> dict:
    """Calibration and verification inputs (and test labels when read from a corpus)."""
    if isinstance(calibration, np.ndarray):
        inputs = np.asarray(calibration, dtype=np.float32)
        return {"calibration": inputs, "test": inputs, "labels": None, "splits": None}
    from tfmood.export import default_root, load_mel_split, resolve_splits

    splits = resolve_splits(calibration, test)
    data = {
        role: load_mel_split(tsv, root or default_root(tsv), n_frames, limit=limit)
        for role, tsv in splits.items()
    }
    return {
        "calibration": data["calibration"].inputs,
        "test": data["test"].inputs,
        "labels": data["test"].labels,
        "splits": splits,
    }


def _check_budgets(flatbuffer: bytes, arena_bytes: int, flash_budget: int, arena_budget: int):
    if len(flatbuffer) > flash_budget:
        raise ValueError(
            f"the int8 model is {len(flatbuffer)} bytes, over the {flash_budget}-byte flash budget"
        )
    if arena_bytes > arena_budget:
        raise ValueError(
            f"the model needs a {arena_bytes}-byte TFLM arena, over the {arena_budget}-byte budget"
        )


def _write_outputs(out_path: str, flatbuffer: bytes, snippet: str) -> dict[str, str]:
    folder = os.path.dirname(os.path.abspath(out_path))
    arrays = c_array_source(flatbuffer)
    paths = {
        "tflite": os.path.abspath(out_path),
        "header": os.path.join(folder, "model_data.h"),
        "source": os.path.join(folder, "model_data.cc"),
        "ops": os.path.join(folder, "ops.txt"),
    }
    atomic.write_bytes(paths["tflite"], flatbuffer)
    atomic.write_text(paths["header"], arrays["header"])
    atomic.write_text(paths["source"], arrays["source"])
    atomic.write_text(paths["ops"], snippet)
    return paths


def export_micro(
    model,
    out_path: str | None,
    calibration: str | np.ndarray | None = None,
    n_frames: int | None = None,
    test: str | None = None,
    root: str | None = None,
    limit: int | None = 200,
    arena_budget: int = ARENA_BUDGET,
    flash_budget: int = FLASH_BUDGET,
) -> dict:
    """Convert to full int8, check it in TFLM against TFLite, and write the firmware files.

    TFLM's int8 outputs must be within one step of LiteRT's reference kernels' on the test
    inputs (`run_tflite_int8`; check "tflm_vs_tflite_int8_steps").

    Args:
        model: a Keras model or the path of a `.keras` file (fixed input length).
        out_path: the .tflite file; `model_data.cc`, `model_data.h` and `ops.txt` go beside it
            (None: check only).
        calibration: corpus directory or split TSV (as `tfmood.export.resolve_splits`), None for
            the default synthetic corpus, or a float32 array (N, n_mels, frames) of log-mel
            inputs that both calibrates and verifies.
        n_frames: input frames, when the model takes any length (default 320).
        test: explicit test split TSV.
        root: audio root of the splits (default `<TSV folder>/audio`).
        limit: at most this many examples per split.
        arena_budget: largest TFLM tensor arena allowed, bytes.
        flash_budget: largest model allowed, bytes.

    Returns:
        The report: path, files, bytes, arena_bytes, ops, resolver, inputs/outputs, checks,
        passed (and tflm_roc_auc with labelled test data).

    Raises:
        ValueError: the model is over the flash budget or its arena over the arena budget (the
            message names both numbers), or an op has no TFLM registration.
    """
    from tfmood.export import _model_frames, convert, ops_used, representative_dataset
    from tfmood.interpreter import io_details, quantize
    from tfmood.models import load_model

    if isinstance(model, (str, os.PathLike)):
        model = load_model(os.fspath(model))
    frames = _model_frames(model, n_frames or (None if model.inputs[0].shape[-1] else 320))
    data = _load_inputs(calibration, test, root, frames, limit)
    graph = _batch_one(model, frames)
    flatbuffer = convert(graph, "int8", representative_dataset(data["calibration"]), rewrite=False)
    ops = ops_used(flatbuffer)
    arena_bytes = measure_arena(flatbuffer, limit=max(4 * arena_budget, 1 << 20))
    _check_budgets(flatbuffer, arena_bytes, flash_budget, arena_budget)
    details = io_details(flatbuffer)
    input_detail = {"dtype": np.int8, "quantization": _quant_pair(details["inputs"][0])}
    quantized = quantize(data["test"], input_detail)
    micro = run_tflm(flatbuffer, quantized, arena_budget)
    reference = run_tflite_int8(flatbuffer, quantized)
    steps = int(np.max(np.abs(micro.astype(np.int32) - reference.astype(np.int32))))
    checks = [
        {"metric": "tflm_vs_tflite_int8_steps", "value": steps, "limit": 1, "passed": steps <= 1},
        {"metric": "arena_bytes", "value": arena_bytes, "limit": arena_budget, "passed": True},
        {"metric": "model_bytes", "value": len(flatbuffer), "limit": flash_budget, "passed": True},
    ]
    passed = all(check["passed"] for check in checks)
    snippet = resolver_snippet(ops, arena_bytes + ARENA_MARGIN)
    files = _write_outputs(out_path, flatbuffer, snippet) if passed and out_path else None
    report = {
        "target": "micro",
        "path": out_path,
        "files": files,
        "written": files is not None,
        "bytes": len(flatbuffer),
        "arena_bytes": arena_bytes,
        "ops": ops,
        "resolver": resolver_methods(ops),
        **details,
        "checks": checks,
        "passed": passed,
        "data": data["splits"],
    }
    if data["labels"] is not None:
        report["tflm_roc_auc"] = _roc_auc(data["labels"], micro, details["outputs"][0])
    return report


def _batch_one(model, n_frames: int):
    """The model on a static (1, n_mels, n_frames) input: no shape ops in the converted graph."""
    import keras

    mel = keras.Input(shape=(model.inputs[0].shape[1], n_frames), batch_size=1, name="mel")
    return keras.Model(mel, model(mel), name=model.name)


def _quant_pair(tensor: dict) -> tuple:
    quantization = tensor["quantization"]
    if tensor["dtype"] != "int8" or quantization is None:
        raise ValueError(f"expected an int8 quantised tensor, got {tensor}")
    return quantization["scale"], quantization["zero_point"]


def _roc_auc(labels: np.ndarray, outputs: np.ndarray, output_tensor: dict) -> float | None:
    from tfmood.metrics import defined_columns, macro_roc_auc

    columns = defined_columns(labels)
    if columns.size == 0:
        return None
    scale, zero_point = _quant_pair(output_tensor)
    scores = (outputs.astype(np.float32) - zero_point) * scale
    return float(macro_roc_auc(labels[:, columns], scores[:, columns]))


# ----------------------------------------------------------------------------------------------
# Training


def _split_tsv(corpus: str, split: str) -> str:
    from tfmood.export import SPLIT_NAME

    return os.path.join(corpus, SPLIT_NAME.format(split=split))


def distillation_targets(labels, teacher_scores, weight: float):
    """Training targets mixed from the labels and a teacher's scores: (1 - w) y + w t.

    Args:
        labels: (batch, tags) 0/1 labels.
        teacher_scores: (batch, tags) sigmoid scores of the teacher on the same inputs.
        weight: the teacher's share, in [0, 1] (0: the labels only).
    """
    return (1.0 - weight) * labels + weight * teacher_scores


def _check_distill_weight(weight: float) -> float:
    weight = float(weight)
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"distill_weight must be in [0, 1], got {weight}")
    return weight


def distillation_model(student, teacher, weight: float = 0.5):
    """The student wrapped for training on soft targets from a frozen teacher.

    The loss compiled into the wrapper is taken against `distillation_targets` of the batch's
    labels and the teacher's scores on the same (randomly cropped) inputs, so the teacher runs
    inside the training step and no scores are stored. Compiled metrics still see the labels.
    The student's layers are shared: after `fit`, save or export `student` itself.

    Args:
        student: the Keras model trained.
        teacher: a Keras model taking the same inputs (e.g. a full VGG-ish model of any length).
        weight: the teacher's share of the targets, in [0, 1].
    """
    import keras

    weight = _check_distill_weight(weight)
    teacher.trainable = False

    class Distiller(keras.Model):
        def __init__(self):
            super().__init__(name=f"{student.name}_distilled")
            self.student = student
            self.teacher = teacher

        def call(self, inputs, training=False):
            return self.student(inputs, training=training)

        def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
            soft = self.teacher(x, training=False)
            target = distillation_targets(y, keras.ops.cast(soft, y_pred.dtype), weight)
            return super().compute_loss(x, target, y_pred, sample_weight, training=training)

    return Distiller()


def _load_teacher(teacher):
    if isinstance(teacher, (str, os.PathLike)):
        from tfmood.models import load_model

        return load_model(os.fspath(teacher))
    return teacher


def _split_sources(corpus: str, shards: str | None) -> dict:
    """{split: (tsv, root)} and the source: the corpus audio, or shard folders per split."""
    from tfmood.export import default_root

    splits = {split: _split_tsv(corpus, split) for split in ("train", "validation", "test")}
    if shards is None:
        return {"source": "audio", **{k: (tsv, default_root(tsv)) for k, tsv in splits.items()}}
    for split in splits:
        if not os.path.isdir(os.path.join(shards, split)):
            raise FileNotFoundError(
                f"{os.path.join(shards, split)}: no shard directory (tfmood.data.write_shards "
                f"of the {split} split)"
            )
    return {"source": "tfrecord", **{k: (t, os.path.join(shards, k)) for k, t in splits.items()}}


def train_micro(
    corpus: str | None = None,
    out_path: str | None = None,
    epochs: int = 30,
    batch_size: int = 16,
    learning_rate: float = 3e-3,
    filters: Sequence[int] = DEFAULT_FILTERS,
    test_windows: int = 4,
    seed: int = 0,
    head_filters: Sequence[int] = DEFAULT_HEAD_FILTERS,
    dropout: float = 0.1,
    random_crop: bool = True,
    shards: str | None = None,
    teacher=None,
    distill_weight: float = 0.5,
) -> dict:
    """Train the micro model on a corpus and score its test split clip by clip.

    Training reads 320-frame crops (random ones with `random_crop`) through
    `tfmood.data.make_dataset`; Adam's learning rate decays to 0 over the epochs (cosine) and the
    output biases start at the tags' training log-odds. A test clip is scored as the firmware
    does: `test_windows` consecutive windows from its start (a shorter clip is tiled from its
    start, as `clip_windows` does), the mean of their scores (`aggregate_windows`).

    Args:
        corpus: a corpus directory in the MTG-Jamendo layout (default: the synthetic corpus of
            `tfmood.export.default_corpus`).
        out_path: where to save the trained `.keras` model (None: not saved).
        epochs: training epochs.
        batch_size: training batch size.
        learning_rate: Adam's initial learning rate.
        filters: strided convolution channels (see `build_micro_model`).
        test_windows: windows per test clip (>= 1).
        seed: random seed.
        head_filters: stride-1 convolution channels (see `build_micro_model`).
        dropout: before the dense layer.
        random_crop: train on random 320-frame crops instead of each track's first frames.
        shards: a folder with `train`, `validation` and `test` shard directories written by
            `tfmood.data.write_shards` from the corpus, read instead of decoding its audio.
        teacher: a full model (Keras model or `.keras` path) to distil from, or None.
        distill_weight: the teacher's share of the training targets (see
            `distillation_targets`).

    Returns:
        {"model", "roc_auc" (macro, tags with positives and negatives), "tags", "history",
        "path", "train_seconds"}.
    """
    import math
    import time

    import keras

    from tfmood.data import make_dataset
    from tfmood.export import default_corpus, load_mel_split
    from tfmood.metadata import read_split
    from tfmood.metrics import defined_columns, macro_roc_auc
    from tfmood.training import tag_prior_bias

    if int(test_windows) < 1:
        raise ValueError(f"test_windows must be >= 1, got {test_windows}")
    distill_weight = _check_distill_weight(distill_weight)
    keras.utils.set_random_seed(seed)
    corpus = corpus or default_corpus()
    splits = _split_sources(corpus, shards)
    source = splits["source"]
    options = {"source": source, "n_frames": WINDOW_FRAMES, "batch_size": batch_size}
    train_data = make_dataset(
        *splits["train"], training=True, random_crop=random_crop, seed=seed, **options
    )
    valid_data = make_dataset(*splits["validation"], training=False, **options)
    model = build_micro_model(filters=filters, head_filters=head_filters, dropout=dropout)
    model.get_layer("scores").bias.assign(tag_prior_bias(splits["train"][0]))
    steps = epochs * math.ceil(len(read_split(splits["train"][0])) / batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=max(1, steps))
    fitted = model
    if teacher is not None and distill_weight > 0:
        fitted = distillation_model(model, _load_teacher(teacher), distill_weight)
    fitted.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss="binary_crossentropy",
        metrics=[keras.metrics.AUC(multi_label=True, name="roc_auc")],
    )
    started = time.time()
    history = fitted.fit(train_data, validation_data=valid_data, epochs=epochs, verbose=2)
    seconds = time.time() - started
    test_tsv, test_root = splits["test"]
    test = load_mel_split(test_tsv, test_root, WINDOW_FRAMES * test_windows, source=source)
    windows = np.stack([clip_windows(mel) for mel in test.inputs])
    flat = windows.reshape(-1, *windows.shape[2:])
    scores = model.predict(flat, batch_size=32, verbose=0).reshape(len(windows), test_windows, -1)
    clip_scores = aggregate_windows(scores)
    columns = defined_columns(test.labels)
    roc_auc = float(macro_roc_auc(test.labels[:, columns], clip_scores[:, columns]))
    if out_path:
        atomic.save_model(model, out_path)
    return {
        "model": model,
        "roc_auc": roc_auc,
        "tags": int(columns.size),
        "history": {key: [float(v) for v in values] for key, values in history.history.items()},
        "path": out_path,
        "train_seconds": seconds,
    }
