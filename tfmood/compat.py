"""The internals of Keras, keras-tuner and TFLite that tfmood relies on, in one place.

Each use of a private name goes through a function here, and each has a check that fails with
a clear message when an upgrade removes it (tests/test_compat.py runs every check). Versions
this was written for: TensorFlow 2.21, Keras 3.15, keras-tuner 1.4.8, ai-edge-litert 2.3.
"""

from __future__ import annotations

import importlib

# name -> (object path, attribute, why tfmood needs it)
INTERNALS = {
    "batch_norm_moments": (
        "keras.layers.BatchNormalization", "_moments",
        "SyncBatchNormalization computes global-batch statistics in this hook",
    ),
    "symbolic_build": (
        "keras.Model", "_maybe_symbolic_build",
        "multi-worker fit builds the loss and optimizer from shapes (keras-team/keras#20585)",
    ),
    "inbound_nodes": (
        "keras.layers.Layer", "_inbound_nodes",
        "the export rewrite walks the functional graph node by node",
    ),
    "oracle_random_values": (
        "keras_tuner.Oracle", "_random_values",
        "the architecture search draws candidates under its cost budgets",
    ),
    "oracle_duplicate": (
        "keras_tuner.Oracle", "_duplicate",
        "the architecture search skips candidates it has already tried",
    ),
    "interpreter_ops": (
        "ai_edge_litert.interpreter.Interpreter", "_get_ops_details",
        "op listings and delegation checks read each op's tensors from the interpreter",
    ),
    "tflite_schema": (
        "tensorflow.lite.python.schema_py_generated", "Model",
        "the exports list their operators from the flatbuffer",
    ),
}


def check(name: str) -> None:
    """Raise a clear RuntimeError when the internal `name` of INTERNALS is missing."""
    path, attribute, why = INTERNALS[name]
    module_name, _, object_name = path.rpartition(".")
    try:
        owner = importlib.import_module(path)
    except ImportError:
        try:
            owner = getattr(importlib.import_module(module_name), object_name)
        except (ImportError, AttributeError):
            owner = None
    if owner is None or not (hasattr(owner, attribute) or _instance_has(owner, attribute)):
        raise RuntimeError(
            f"{path}.{attribute} is missing in the installed version; tfmood needs it because "
            f"{why}. Install the versions tfmood supports (see setup.cfg)."
        )


def _instance_has(owner, attribute: str) -> bool:
    """Whether a default instance of the class `owner` has `attribute` (set in __init__)."""
    try:
        return isinstance(owner, type) and hasattr(owner(), attribute)
    except Exception:  # a class that cannot be built without arguments
        return False


def tflite_schema():
    """The generated Python module of the TFLite flatbuffer schema."""
    check("tflite_schema")
    return importlib.import_module("tensorflow.lite.python.schema_py_generated")


def interpreter_ops(interpreter) -> list:
    """The ops of a LiteRT interpreter with their input and output tensor indices."""
    check("interpreter_ops")
    return interpreter._get_ops_details()


def inbound_nodes(layer) -> list:
    """The nodes at which a functional model calls `layer`."""
    check("inbound_nodes")
    return layer._inbound_nodes


def build_from_shapes(model, batch) -> None:
    """Make `model.fit` build its loss and optimizer state from `batch` (arrays of the input
    and target shapes) instead of a first input batch.

    Under MultiWorkerMirroredStrategy Keras reduces that first batch across workers, which
    fails ("Attempt to convert a value (PerReplica...) to a Tensor", keras-team/keras#20585;
    still so in Keras 3.15).
    """
    check("symbolic_build")
    build = model._maybe_symbolic_build
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: build(data_batch=batch)


def scalar_logs_as_vectors(model) -> None:
    """Make the train and test steps return their logs as 1-element vectors.

    Under MultiWorkerMirroredStrategy Keras averages each step's logs over the replicas with
    `strategy.reduce("MEAN", value, axis=0)`, which fails on a scalar ("Invalid reduction
    dimension 0 for input with 0 dimensions"; still so in Keras 3.15).
    """
    import tensorflow as tf

    def as_vectors(logs: dict) -> dict:
        return {name: tf.reshape(value, [1]) for name, value in logs.items()}

    train_step, test_step = model.train_step, model.test_step
    model.train_step = lambda data: as_vectors(train_step(data))
    model.test_step = lambda data: as_vectors(test_step(data))
