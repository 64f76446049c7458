"""The TFLite runtime, in one place: LiteRT's interpreter (the `ai-edge-litert` package).

    make_interpreter(flatbuffer, num_threads, kernels) -> Interpreter   tensors allocated
    io_details(flatbuffer) -> {"inputs": [...], "outputs": [...]}       dtype, shape, quantisation
    run(flatbuffer, inputs, ...) -> outputs      a batch, one example at a time (int8 (de)quantised)
    time_invokes(flatbuffers, rounds, ...) -> per-round ms      interleaved timing of several models
    measure_latency(flatbuffer, runs, ...) -> {"wall_ms", "cpu_ms", "runs"}    one model
    op_details(flatbuffer) -> [op]                the model's ops with their tensors
    delegated_ops(flatbuffer) -> [(op, bool)]     which ops the default delegate (XNNPACK) takes

TensorFlow converts (`tf.lite.TFLiteConverter`); the models run in LiteRT
(`ai_edge_litert.interpreter.Interpreter`, the runtime that replaces the deprecated
`tf.lite.Interpreter`, same API). Nothing else in `tfmood`, `tflite/` or `bench/` makes an
interpreter. The runtime is imported on first use, so importing this module is cheap.

Kernels (`kernels=`):

- "default": the builtin optimised kernels with LiteRT's default delegate, XNNPACK on CPU, as an
  app gets it. XNNPACK takes float ops and int8 (QS8) ops alike; ops it lacks run on the builtin
  kernels and split the delegated graph. In LiteRT 2.3 (and TF 2.21) it takes float EXP (TF 2.17
  did not); it still does not take int8 EXP, int8 MAXIMUM, int8 DIV or int8 ABS, nor a SLICE
  whose size holds -1 (as in TF 2.17), and refuses int8 ADD/SUB/MUL whose scale ratios are out
  of its range. `delegated_ops` tells which ops of a model it takes.
- "builtin": the builtin optimised kernels, no delegate (`BUILTIN_WITHOUT_DEFAULT_DELEGATES`).
- "reference": the reference kernels (`BUILTIN_REF`), no delegate: the straightforward
  arithmetic TFLite Micro also implements, what `tfmood.deploy.tflm` checks TFLM against. This set
  has no ELU kernel (a model with ELU does not load with it; the same in TF 2.17).
"""

from __future__ import annotations

import time
from typing import Dict, Hashable, List, Mapping, Tuple

import numpy as np

from tfmood import compat

KERNELS = ("default", "builtin", "reference")
_RESOLVERS = {
    "default": "AUTO",
    "builtin": "BUILTIN_WITHOUT_DEFAULT_DELEGATES",
    "reference": "BUILTIN_REF",
}


def make_interpreter(
    flatbuffer: bytes,
    num_threads: int = 1,
    kernels: str = "default",
    allocate: bool = True,
    **options,
):
    """A LiteRT interpreter of a model, its tensors allocated (and so its delegate applied).

    Args:
        flatbuffer: the model bytes.
        num_threads: interpreter threads (one: the interpreter runs on the calling thread).
        kernels: "default" (builtin kernels with the default XNNPACK delegate), "builtin" (no
            delegate) or "reference" (reference kernels, no delegate).
        allocate: call `allocate_tensors` (False: the caller resizes inputs first).
        **options: further `Interpreter` arguments (`experimental_...`).

    Returns:
        An `ai_edge_litert.interpreter.Interpreter`.
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    if kernels not in _RESOLVERS:
        raise ValueError(f"unknown kernels {kernels!r}; valid: {', '.join(KERNELS)}")
    interpreter = Interpreter(
        model_content=bytes(flatbuffer),
        num_threads=int(num_threads),
        experimental_op_resolver_type=getattr(OpResolverType, _RESOLVERS[kernels]),
        **options,
    )
    if allocate:
        interpreter.allocate_tensors()
    return interpreter


# ----------------------------------------------------------------------------------------------
# Inputs and outputs


def _tensor_info(detail: dict) -> dict:
    scale, zero_point = detail["quantization"]
    info = {
        "name": detail["name"],
        "dtype": np.dtype(detail["dtype"]).name,
        "shape": [int(d) for d in detail["shape"]],
    }
    if scale:
        info["quantization"] = {"scale": float(scale), "zero_point": int(zero_point)}
    else:
        info["quantization"] = None
    return info


def io_details(flatbuffer: bytes) -> dict:
    """Input and output tensors: name, dtype, shape and quantisation (scale, zero point).

    Args:
        flatbuffer: the model bytes.

    Returns:
        {"inputs": [...], "outputs": [...]}, each tensor {"name", "dtype" (a numpy name),
        "shape" (list), "quantization" ({"scale", "zero_point"} or None)}.
    """
    interpreter = make_interpreter(flatbuffer, kernels="builtin")
    return {
        "inputs": [_tensor_info(d) for d in interpreter.get_input_details()],
        "outputs": [_tensor_info(d) for d in interpreter.get_output_details()],
    }


def _quantization(detail: dict) -> Tuple[float, int]:
    quantization = detail["quantization"]
    if isinstance(quantization, dict):  # io_details' form
        return quantization["scale"], quantization["zero_point"]
    return quantization


def quantize(values: np.ndarray, detail: dict) -> np.ndarray:
    """Float values in a tensor's dtype: cast for a float tensor; for an integer tensor rounded
    with its scale and zero point and clipped to the dtype's range.

    Args:
        values: float array.
        detail: the tensor, as `Interpreter.get_input_details` or `io_details` gives it (or any
            dict with "dtype" and "quantization" (scale, zero point)).
    """
    dtype = np.dtype(detail["dtype"])
    if dtype.kind == "f":
        return np.asarray(values).astype(dtype)
    scale, zero_point = _quantization(detail)
    info = np.iinfo(dtype)
    return np.clip(np.round(values / scale) + zero_point, info.min, info.max).astype(dtype)


def dequantize(values: np.ndarray, detail: dict) -> np.ndarray:
    """A tensor's values as float32: `(q - zero_point) * scale` for an integer tensor."""
    if np.dtype(detail["dtype"]).kind == "f":
        return np.asarray(values).astype(np.float32)
    scale, zero_point = _quantization(detail)
    return (np.asarray(values).astype(np.float32) - zero_point) * scale


def run(
    flatbuffer: bytes,
    inputs: np.ndarray,
    num_threads: int = 1,
    kernels: str = "default",
    raw: bool = False,
) -> np.ndarray:
    """Outputs of a single-input, single-output model for a batch, one example at a time.

    Float inputs are quantised with the input tensor's parameters for an integer (int8) input,
    and integer outputs are dequantised, so the result compares directly with the Keras model's.

    Args:
        flatbuffer: the model bytes (input batch size 1).
        inputs: float32 array (N, ...) of examples; with `raw`, values in the input's own dtype
            (e.g. int8 already quantised).
        num_threads: interpreter threads.
        kernels: see `make_interpreter`.
        raw: pass the inputs as they are (cast to the input dtype) and return the outputs in the
            output dtype, neither quantised nor dequantised.

    Returns:
        float32 array (N, ...) of outputs (with `raw`, in the output tensor's dtype).
    """
    interpreter = make_interpreter(flatbuffer, num_threads, kernels)
    (input_detail,) = interpreter.get_input_details()
    (output_detail,) = interpreter.get_output_details()
    if raw:
        examples = np.asarray(inputs).astype(input_detail["dtype"], copy=False)
    else:
        examples = np.asarray(inputs, dtype=np.float32)
    outputs = []
    for example in examples:
        example = example[None] if raw else quantize(example[None], input_detail)
        interpreter.set_tensor(input_detail["index"], example)
        interpreter.invoke()
        output = interpreter.get_tensor(output_detail["index"])
        outputs.append(output.copy() if raw else dequantize(output, output_detail))
    if not outputs:
        dtype = output_detail["dtype"] if raw else np.float32
        return np.zeros((0, *output_detail["shape"][1:]), dtype)
    result = np.concatenate(outputs)
    return result if raw else result.astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Latency


def time_invokes(
    flatbuffers: Mapping[Hashable, bytes],
    rounds: int,
    warmup: int = 1,
    num_threads: int = 1,
    kernels: str = "default",
    progress: bool = False,
) -> Dict[Hashable, Dict[str, np.ndarray]]:
    """Time one `invoke` of each model per round, the models interleaved in every round.

    Each model runs on zeros. Interleaving puts a change in machine load on all the models
    alike. Both the wall time and the CPU time of the calling thread are recorded: with one
    thread the interpreter runs on the caller, so the CPU time leaves out time lost to other
    processes on a shared machine.

    Args:
        flatbuffers: {key: model bytes}.
        rounds: timed rounds.
        warmup: untimed invokes of each model first.
        num_threads: interpreter threads.
        kernels: see `make_interpreter`.
        progress: show a progress bar over the rounds.

    Returns:
        {key: {"cpu": ms per round, "wall": ms per round}} (float arrays of `rounds` values).
    """
    interpreters = {}
    for key, flatbuffer in flatbuffers.items():
        interpreter = make_interpreter(flatbuffer, num_threads, kernels)
        for detail in interpreter.get_input_details():
            interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
        for _ in range(warmup):
            interpreter.invoke()
        interpreters[key] = interpreter
    cpu = {key: [] for key in interpreters}
    wall = {key: [] for key in interpreters}
    steps = range(int(rounds))
    if progress:
        from tqdm import tqdm

        steps = tqdm(steps, desc="timing")
    for _ in steps:
        for key, interpreter in interpreters.items():
            wall_start, cpu_start = time.perf_counter(), time.thread_time()
            interpreter.invoke()
            cpu[key].append(time.thread_time() - cpu_start)
            wall[key].append(time.perf_counter() - wall_start)
    return {key: {"cpu": 1e3 * np.array(cpu[key]), "wall": 1e3 * np.array(wall[key])}
            for key in interpreters}  # fmt: skip


def measure_latency(
    flatbuffer: bytes,
    runs: int = 20,
    warmup: int = 2,
    num_threads: int = 1,
    kernels: str = "default",
) -> dict:
    """Latency of one `invoke` on zeros (XNNPACK applied by default), as `time_invokes` times it.

    Args:
        flatbuffer: the model bytes.
        runs: timed invokes.
        warmup: untimed invokes first.
        num_threads: interpreter threads.
        kernels: see `make_interpreter`.

    Returns:
        {"wall_ms": {"median", "min"}, "cpu_ms": {"median", "min"}, "runs"}.
    """
    times = time_invokes({0: flatbuffer}, runs, warmup, num_threads, kernels)[0]

    def summary(values):
        return {"median": float(np.median(values)), "min": float(np.min(values))}

    return {"wall_ms": summary(times["wall"]), "cpu_ms": summary(times["cpu"]), "runs": runs}


# ----------------------------------------------------------------------------------------------
# The graph as the runtime sees it


def op_details(flatbuffer: bytes) -> List[dict]:
    """The model's ops in execution order, each with its tensors (no delegate applied).

    Args:
        flatbuffer: the model bytes.

    Returns:
        [{"index", "op_name", "inputs": [tensor], "outputs": [tensor]}], a tensor as
        `Interpreter.get_tensor_details` gives it ("index", "name", "shape", "dtype",
        "quantization", ...); optional inputs that are absent are left out.
    """
    interpreter = make_interpreter(flatbuffer, kernels="builtin")
    tensors = {tensor["index"]: tensor for tensor in interpreter.get_tensor_details()}

    def listed(indices):
        return [tensors[int(i)] for i in indices if int(i) >= 0 and int(i) in tensors]

    return [
        {"index": op["index"], "op_name": op["op_name"], "inputs": listed(op["inputs"]),
         "outputs": listed(op["outputs"])}
        for op in compat.interpreter_ops(interpreter)
    ]  # fmt: skip


def delegated_ops(flatbuffer: bytes, num_threads: int = 1) -> List[Tuple[str, bool]]:
    """Whether the default delegate (XNNPACK) takes each op of the model, in execution order.

    The interpreter is made with delegate node fusion disabled, so every op the delegate takes
    becomes a delegate node of its own, writing that op's outputs: an op is delegated when a
    delegate node writes its outputs.

    Args:
        flatbuffer: the model bytes.
        num_threads: interpreter threads.

    Returns:
        [(op name, delegated)].
    """
    interpreter = make_interpreter(
        flatbuffer, num_threads, experimental_disable_delegate_node_fusion=True
    )
    nodes = compat.interpreter_ops(interpreter)
    delegated = set()
    for node in nodes:
        if node["op_name"] == "DELEGATE":
            delegated.add(tuple(int(i) for i in node["outputs"]))
    return [
        (node["op_name"], tuple(int(i) for i in node["outputs"]) in delegated)
        for node in nodes
        if node["op_name"] != "DELEGATE"
    ]


def undelegated_ops(flatbuffer: bytes, num_threads: int = 1) -> Dict[str, int]:
    """{op name: count} of the ops the default delegate leaves to the builtin kernels."""
    counts: Dict[str, int] = {}
    for name, delegated in delegated_ops(flatbuffer, num_threads):
        if not delegated:
            counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))


def delegate_partitions(flatbuffer: bytes, num_threads: int = 1) -> int:
    """How many partitions the default delegate cuts the model into (0: nothing delegated).

    The delegate replaces each partition by one node appended after the model's ops.
    """
    plain = len(compat.interpreter_ops(make_interpreter(flatbuffer, num_threads, "builtin")))
    delegated = len(compat.interpreter_ops(make_interpreter(flatbuffer, num_threads)))
    return delegated - plain


# Ops that pass a value on unchanged but for its type or shape.
_PASS_THROUGH_OPS = ("QUANTIZE", "DEQUANTIZE", "RESHAPE")


def outputs_logits(flatbuffer: bytes) -> bool:
    """Whether a single-output model ends in logits rather than sigmoid scores.

    An export with `--logits` stops before the sigmoid; the op behind the output (past
    quantise/dequantise/reshape) then is not LOGISTIC. Apps and `tfmood predict` apply the
    sigmoid to such outputs.
    """
    ops = op_details(flatbuffer)
    interpreter = make_interpreter(flatbuffer, kernels="builtin")
    (output,) = interpreter.get_output_details()
    producers = {tensor["index"]: op for op in ops for tensor in op["outputs"]}
    op = producers.get(output["index"])
    while op is not None and op["op_name"] in _PASS_THROUGH_OPS and op["inputs"]:
        op = producers.get(op["inputs"][0]["index"])
    return op is None or op["op_name"] != "LOGISTIC"

