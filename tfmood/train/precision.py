"""Mixed-precision training: the `TrainConfig.precision` option.

Under "mixed_bfloat16" or "mixed_float16" the layers keep float32 variables and compute in
bfloat16 / float16; the output layer (the dense sigmoid) stays float32, so the scores and the
loss are float32. The policy is set only while the model is built (each layer keeps the policy
it was built with) and the previous global policy is restored at once, so nothing else in the
process is affected. The saved best model is a float32 copy of the trained one: loading,
predicting and exporting it builds the float32 graph of any float32-trained model.

    with dtype_policy("mixed_bfloat16"):
        model = build_model("sa3")
    keep_output_float32(model)
    float32_copy(model)            # same weights, every layer float32
"""

from __future__ import annotations

import contextlib
import os
import warnings

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
# CPU flags of native bfloat16 arithmetic (AVX-512 BF16, AMX); elsewhere bf16 is emulated.
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def check_precision(precision: str, cpuinfo: str = "/proc/cpuinfo") -> None:
    """Refuse a precision this machine cannot train with; warn where it would be slow.

    "mixed_float16" needs a GPU: TensorFlow's CPU float16 convolutions are slower than its
    float32 ones (block 2's forward convolution 1.4x slower on an AVX-512 BF16 CPU, where bf16 is
    1.9x faster), so on a CPU it would lose speed and precision both, and the loss scaling it
    needs exists only to serve GPUs' float16 units. "mixed_bfloat16" runs anywhere but is fast
    only on CPUs with native bf16 (AVX-512 BF16, AMX) or on GPUs/TPUs: elsewhere it warns.

    Args:
        precision: one of `PRECISIONS`.
        cpuinfo: the Linux CPU description read for the bf16 flags (absent: no warning).

    Raises:
        ValueError: an unknown precision, or "mixed_float16" without a visible GPU.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "float32":
        return
    import tensorflow as tf

    has_gpu = bool(tf.config.list_logical_devices("GPU"))
    if precision == "mixed_float16" and not has_gpu:
        raise ValueError(
            "precision mixed_float16 needs a GPU and none is visible; on a CPU use "
            "mixed_bfloat16 (fast with AVX-512 BF16 or AMX) or float32"
        )
    if precision == "mixed_bfloat16" and not has_gpu and not has_native_bf16(cpuinfo):
        warnings.warn(
            "precision mixed_bfloat16 on a CPU without AVX-512 BF16 or AMX: bfloat16 is "
            "emulated there and usually trains slower than float32",
            stacklevel=2,
        )


def has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether the CPU flags list a native bfloat16 instruction set (False when unreadable)."""
    if not os.path.exists(cpuinfo):
        return False
    with open(cpuinfo) as handle:
        flags = set(handle.read().split())
    return any(flag in flags for flag in NATIVE_BF16_FLAGS)


@contextlib.contextmanager
def dtype_policy(precision: str):
    """Keras' global dtype policy set to `precision` inside the block, restored after it.

    Layers take the global policy when they are created, so a model built inside the block
    keeps it after the block ends.

    Args:
        precision: one of `PRECISIONS`.
    """
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def keep_output_float32(model, layer_name: str = "dense") -> None:
    """Run the output layer in float32 (its bf16/f16 inputs are cast up), so the model's scores,
    and the loss on them, are float32: a sigmoid in bfloat16 has 8 bits of mantissa.

    Args:
        model: a model built under a mixed policy.
        layer_name: its output layer.
    """
    model.get_layer(layer_name).dtype_policy = "float32"


def loss_scaled(optimizer, precision: str):
    """The optimizer wrapped in dynamic loss scaling for "mixed_float16" (float16 gradients
    underflow without it); unchanged otherwise (bfloat16 has float32's exponent range)."""
    import keras

    if precision == "mixed_float16":
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def is_float32(model) -> bool:
    """Whether every layer of `model` (and the model itself) computes in float32."""
    return all(layer.compute_dtype == "float32" for layer in [model, *model.layers])


def as_float32(model):
    """`model` itself when it computes in float32, else its `float32_copy`: what exports take
    (a checkpoint of a mixed-precision run still holds its layers' bf16/f16 policies)."""
    return model if is_float32(model) else float32_copy(model)


def float32_copy(model):
    """A copy of `model` whose every layer computes in float32, with the same weights, compiled
    with the same loss and an optimizer of the same settings and state (without loss scaling).

    Args:
        model: a functional model, possibly with mixed-precision layers.

    Returns:
        The float32 model.
    """
    import keras

    def float32_layer(layer):
        return layer.__class__.from_config({**layer.get_config(), "dtype": "float32"})

    copy = keras.models.clone_model(model, clone_function=float32_layer)
    copy.set_weights(model.get_weights())
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        return copy
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        optimizer = optimizer.inner_optimizer
    copy.compile(optimizer=optimizer.__class__.from_config(optimizer.get_config()),
                 loss=model.loss)  # fmt: skip
    if optimizer.built:
        copy.optimizer.build(copy.trainable_variables)
        for target, source in zip(copy.optimizer.variables, optimizer.variables, strict=True):
            target.assign(source)
    return copy


def save_float32(path: str) -> None:
    """Rewrite the `.keras` model at `path` as its float32 copy (atomically); a float32 model
    is left as it is.

    Args:
        path: a `.keras` model file.
    """
    from tfmood import atomic
    from tfmood.models.vggish import load_model

    model = load_model(path)
    if not is_float32(model):
        atomic.save_model(float32_copy(model), path)
