"""TFLite conversion: one list of targets, the converter, and the ops a flatbuffer uses.

    convert(model, target, representative_data) -> bytes        float32 | float16 | dynamic | int8

The converter is TensorFlow's (`tf.lite.TFLiteConverter`), builtin ops only (no Flex /
SELECT_TF_OPS), so an exported model runs in the standard TFLite/LiteRT runtime; the int8 target
is full-integer (int8 input and output). `TARGETS` is the one list of conversion targets (the
command line adds "micro", the microcontroller export of `tfmood.deploy.tflm`).
"""

from __future__ import annotations

import contextlib
import io
import re
from typing import Callable, Iterable, List, Optional

import numpy as np

# Phone-class targets (the converter's); MICRO_TARGET is the int8 build for TensorFlow Lite Micro.
TARGETS = ("float32", "float16", "dynamic", "int8")
MICRO_TARGET = "micro"


def check_target(target: str) -> None:
    if target not in TARGETS:
        raise ValueError(f"unknown TFLite target {target!r}; valid: {', '.join(TARGETS)}")


def convert(
    model,
    target: str,
    representative_data: Optional[Callable[[], Iterable[list]]] = None,
    rewrite: bool = True,
    n_frames: Optional[int] = None,
) -> bytes:
    """Convert a Keras model to a TFLite flatbuffer with builtin ops only.

    Args:
        model: a Keras model (for `rewrite`, a chain such as `tfmood.models.vggish.build_model` gives).
        target: "float32", "float16" (float16 weights), "dynamic" (int8 weights, float
            activations) or "int8" (full integer: int8 weights, activations, input and output).
        representative_data: for "int8", a callable returning an iterable of `[input]` lists,
            each input a float32 array with batch size 1 (real pipeline data).
        rewrite: first rebuild the model with `tfmood.deploy.fold.inference_model` (static shapes,
            folded BatchNorm/AReLU, fast attention); False converts `model` as it is.
        n_frames: input length for `rewrite` when the model takes any length.

    Returns:
        The flatbuffer bytes.

    Raises:
        ValueError: an unknown target, "int8" without representative data, or an op that is not
            a TFLite builtin ("unsupported TFLite op ...").
    """
    import tensorflow as tf

    check_target(target)
    if target == "int8" and representative_data is None:
        raise ValueError("target 'int8' needs representative_data (calibration inputs)")
    if rewrite:
        from tfmood.deploy.fold import inference_model

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


def representative_dataset(inputs: np.ndarray) -> Callable[[], Iterable[list]]:
    """A converter `representative_dataset`: the examples one at a time, batch size 1.

    Args:
        inputs: float32 (N, ...) calibration examples.
    """

    def examples():
        for example in inputs:
            yield [np.asarray(example[None], dtype=np.float32)]

    return examples


def model_frames(model, n_frames: Optional[int]) -> int:
    frames = model.inputs[0].shape[-1]
    if frames is not None:
        if n_frames is not None and n_frames != frames:
            raise ValueError(f"the model takes {frames} frames, not n_frames={n_frames}")
        return int(frames)
    return int(n_frames or 1400)
