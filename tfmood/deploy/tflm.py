"""Microcontroller export: the micro model as int8, run in TensorFlow Lite Micro.

    export_micro(model, out_path, ...) -> report dict     int8, run in TFLM, C array, resolver
    score_clips_tflm(flatbuffer, clips) -> clip scores   the firmware's loop, in TFLM

Every export is run in the real TFLM interpreter (the `tflite-micro` package): it must allocate
within the arena budget (256 KB; the model within 1 MB of flash), and its int8 outputs must
equal those of LiteRT's reference kernels (`tfmood.deploy.runtime`, `BUILTIN_REF`) on the same
model within one quantisation step. The smallest arena that allocates is measured by bisection
and reported. Written beside the .tflite: `model_data.cc`/`model_data.h` (the model as
`alignas(16) const unsigned char g_model[]`) and `ops.txt` (the `MicroMutableOpResolver`
registrations for exactly the ops the model uses, and the arena size).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence

import numpy as np

from tfmood import atomic
from tfmood.models.micro import aggregate_windows, clip_windows

ARENA_BUDGET = 256 * 1024


FLASH_BUDGET = 1024 * 1024


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
    from tfmood.deploy.runtime import io_details

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
    from tfmood.deploy.runtime import run

    outputs = run(flatbuffer, np.asarray(inputs, dtype=np.int8), kernels="reference", raw=True)
    return outputs.reshape(len(outputs), -1).astype(np.int8)


def resolver_methods(ops: Sequence[str]) -> list[str]:
    """The `MicroMutableOpResolver` method of each op (ValueError for one TFLM lacks here).

    Args:
        ops: TFLite builtin op names (CONV_2D, ...), as `tfmood.deploy.convert.ops_used` gives.
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


def _load_inputs(calibration, test, root, n_frames: int, limit) -> dict:
    """Calibration and verification inputs (and test labels when read from a corpus)."""
    if isinstance(calibration, np.ndarray):
        inputs = np.asarray(calibration, dtype=np.float32)
        return {"calibration": inputs, "test": inputs, "labels": None, "splits": None}
    from tfmood.deploy.calibration import default_root, load_mel_split, resolve_splits

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
        calibration: corpus directory or split TSV (as `tfmood.deploy.calibration.resolve_splits`), None for
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
    from tfmood.deploy.convert import convert, model_frames, ops_used, representative_dataset
    from tfmood.deploy.runtime import io_details, quantize
    from tfmood.models.vggish import load_model
    from tfmood.train.precision import as_float32

    if isinstance(model, (str, os.PathLike)):
        model = load_model(os.fspath(model))
    model = as_float32(model)
    frames = model_frames(model, n_frames or (None if model.inputs[0].shape[-1] else 320))
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
    # Over-budget models were refused above (_check_budgets): the budgets are reported, not checks.
    checks = [
        {"metric": "tflm_vs_tflite_int8_steps", "value": steps, "limit": 1, "passed": steps <= 1},
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
        "budgets": {"arena_bytes": arena_budget, "model_bytes": flash_budget},
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


def split_tsv(corpus: str, split: str) -> str:
    from tfmood.deploy.calibration import SPLIT_NAME

    return os.path.join(corpus, SPLIT_NAME.format(split=split))
