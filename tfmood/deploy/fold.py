"""Export-time graph rewrites: an inference graph equal to a trained model, fast in TFLite.

`inference_model(model)` rebuilds a trained chain model (the VGG-ish family of `tfmood.models.vggish`,
optionally behind a `LogMel` front-end) from its weights, with the same outputs in exact
arithmetic and a graph the TFLite runtime (XNNPACK) runs well:

- static shapes, batch size 1: no SHAPE/PACK ops computing the reshape at run time, which also
  kept the graph from being delegated in one piece;
- BatchNormalization after a convolution folded into its kernel and bias;
- AReLU folded: `beta' * relu(x) - alpha' * relu(-x) = beta' * LeakyReLU(x, alpha'/beta')` with
  `beta' = 1 + sigmoid(beta) > 0`, so `beta'` joins the folded BatchNorm scale and the activation
  becomes LEAKY_RELU, a builtin on the fast float and int8 paths (the original relu/neg/mul/sub
  chain is four ops and leaves the int8 fast path);
- monotone activations (ELU, LeakyReLU) moved after the max pooling that follows them: max
  commutes with a non-decreasing function, so the activation runs on 8-20x fewer values;
- GlobalMaxPooling2D as a MaxPooling2D over the whole (static) map; Dropout removed;
- LocalSelfAttention (one head per channel, or `heads` groups) as `ExportLocalSelfAttention`,
  which computes the same function with ops that stay on the fast path and in cache (see its
  docstring).

Every rewrite is checked against the original Keras model in tests/test_export.py.
"""

from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import keras
import numpy as np

from tfmood import compat
from tfmood.layers import AReLU, ExportLocalSelfAttention, LocalSelfAttention
from tfmood.layers.export_local_self_attention import ATTENTION_MODES

# ----------------------------------------------------------------------------------------------
# Weight folding (pure numpy, so each fold is testable on its own)


def batch_norm_affine(layer: keras.layers.BatchNormalization) -> Tuple[np.ndarray, np.ndarray]:
    """The inference-mode BatchNorm as `scale * x + shift`, per channel.

    Args:
        layer: a built BatchNormalization over the last axis.
    """
    if layer.axis not in (-1, len(layer.input.shape) - 1) and layer.axis != [-1]:
        raise ValueError(f"{layer.name}: only BatchNorm over the last axis can be folded")
    variance = np.asarray(layer.moving_variance, dtype=np.float64)
    mean = np.asarray(layer.moving_mean, dtype=np.float64)
    gamma = np.asarray(layer.gamma, np.float64) if layer.scale else np.ones_like(mean)
    beta = np.asarray(layer.beta, np.float64) if layer.center else np.zeros_like(mean)
    scale = gamma / np.sqrt(variance + layer.epsilon)
    return scale, beta - mean * scale


def arelu_gain_and_slope(layer: AReLU) -> Tuple[float, float]:
    """`(beta', alpha' / beta')`: AReLU(x) = beta' * LeakyReLU(x, alpha' / beta').

    Args:
        layer: a built AReLU.
    """
    alpha = float(np.clip(np.asarray(layer.alpha), 0.01, 0.99))
    beta = 1.0 + 1.0 / (1.0 + math.exp(-float(np.asarray(layer.beta))))
    return beta, alpha / beta


def fold_conv(
    conv: keras.layers.Conv2D, scale: np.ndarray, shift: np.ndarray
) -> Tuple[np.ndarray, np.ndarray]:
    """Kernel and bias of `scale * conv(x) + shift` (scale and shift per output channel).

    Args:
        conv: a built Conv2D (any bias setting, linear activation).
        scale: per-channel multiplier.
        shift: per-channel offset.
    """
    kernel = np.asarray(conv.kernel, dtype=np.float64)
    bias = np.asarray(conv.bias, np.float64) if conv.use_bias else np.zeros(kernel.shape[-1])
    return (kernel * scale).astype(np.float32), (bias * scale + shift).astype(np.float32)


def fold_attention(
    layer: LocalSelfAttention, scale: np.ndarray, shift: np.ndarray
) -> List[np.ndarray]:
    """Weights of `ExportLocalSelfAttention` computing `scale * layer(x) + shift`.

    The softmax weights of every channel sum to one, so `scale * sum(w * v) + shift` equals
    `sum(w * (scale * v)) + shift`: the scale goes into the value kernel.

    Args:
        layer: a built LocalSelfAttention.
        scale: per-channel multiplier.
        shift: per-channel offset.

    Returns:
        [qkv_kernel, relative, bias] in the order of `ExportLocalSelfAttention.weights`.
    """
    value = np.asarray(layer.value_kernel, np.float64) * scale
    qkv = np.concatenate(
        [np.asarray(layer.query_kernel), np.asarray(layer.key_kernel), value], axis=-1
    )
    rel_h, rel_w = np.asarray(layer.rel_h), np.asarray(layer.rel_w)
    size = layer.kernel_size
    relative = np.stack(
        [np.concatenate([rel_h[:, r], rel_w[:, c]]) for r in range(size) for c in range(size)]
    )
    return [qkv.astype(np.float32), relative.astype(np.float32), shift.astype(np.float32)]


# ----------------------------------------------------------------------------------------------
# The chain of layers and its rewrite


def chain_layers(model: keras.Model) -> List[keras.layers.Layer]:
    """The layers of a single-input, single-output chain model in order, nested models inlined.

    Args:
        model: a functional or Sequential model in which every layer takes the previous output.

    Raises:
        ValueError: the model is not a chain (several inputs or outputs, branches, merges).
    """
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(f"model {model.name!r}: only single-input single-output chains convert")
    layers = []
    previous = model.inputs[0]
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        node = _node_taking(layer, previous)
        if node is None:
            raise ValueError(
                f"model {model.name!r}: layer {layer.name!r} does not take the previous "
                "layer's output (only chains of layers are rewritten)"
            )
        if isinstance(layer, keras.Model):
            layers.extend(chain_layers(layer))
        else:
            layers.append(layer)
        previous = node.outputs[0]
    if previous is not model.outputs[0]:
        raise ValueError(f"model {model.name!r}: the last layer is not the model output")
    return layers


def _node_taking(layer: keras.layers.Layer, tensor):
    """The call of `layer` whose only input is `tensor` and which has one output, or None.

    A layer called in several graphs (a nested model inside a wrapper) has one node per call,
    so the calls are searched rather than `layer.input` read.
    """
    for node in compat.inbound_nodes(layer):
        inputs = node.input_tensors
        if len(inputs) == 1 and inputs[0] is tensor and len(node.outputs) == 1:
            return node
    return None


def _is_monotone(layer: keras.layers.Layer) -> bool:
    """True for activations that are non-decreasing (so they commute with max pooling)."""
    if isinstance(layer, keras.layers.ELU):
        return layer.alpha >= 0
    if isinstance(layer, keras.layers.LeakyReLU):
        return layer.negative_slope >= 0
    return isinstance(layer, keras.layers.ReLU)


def _static_target(layer: keras.layers.Reshape, x) -> Tuple[int, ...]:
    """The target shape of a Reshape with its -1 resolved for the (static) input `x`."""
    target = list(layer.target_shape)
    if -1 in target:
        known = math.prod(dim for dim in target if dim != -1)
        target[target.index(-1)] = math.prod(x.shape[1:]) // known
    return tuple(target)


def _is_window_pool(layer) -> bool:
    """A MaxPooling2D with valid padding and strides equal to its window (no overlap)."""
    return (
        isinstance(layer, keras.layers.MaxPooling2D)
        and layer.padding == "valid"
        and tuple(layer.strides) == tuple(layer.pool_size)
        and layer.data_format == "channels_last"
    )


def _copy_later(layer: keras.layers.Layer) -> keras.layers.Layer:
    """A fresh copy of a weightless layer, to be applied later."""
    if layer.weights:
        raise ValueError(f"{layer.name}: only weightless activations are moved")
    return layer.__class__.from_config(layer.get_config())


def _copy(layer: keras.layers.Layer, x):
    """Apply a fresh copy of `layer` (same config and weights) to `x`."""
    clone = layer.__class__.from_config(layer.get_config())
    y = clone(x)
    clone.set_weights(layer.get_weights())
    return y


class _Rewriter:
    """Walks the layer chain once, emitting the folded inference layers."""

    def __init__(
        self, layers: Sequence[keras.layers.Layer], mode: str, strip_rows: Optional[int]
    ):
        self.layers = list(layers)
        self.mode = mode
        self.strip_rows = strip_rows
        self.position = 0

    def peek(self, offset: int = 0) -> Optional[keras.layers.Layer]:
        index = self.position + offset
        return self.layers[index] if index < len(self.layers) else None

    def take(self) -> keras.layers.Layer:
        layer = self.layers[self.position]
        self.position += 1
        return layer

    def run(self, x):
        while self.peek() is not None:
            x = self.step(x)
        return x

    def step(self, x):
        layer = self.take()
        if isinstance(layer, keras.layers.Dropout):
            return x
        if isinstance(layer, keras.layers.Reshape):
            return keras.layers.Reshape(_static_target(layer, x), name=layer.name)(x)
        if type(layer) is keras.layers.Conv2D:
            return self.spatial_block(layer, x)
        if isinstance(layer, LocalSelfAttention):
            return self.spatial_block(layer, x)
        if isinstance(layer, keras.layers.GlobalMaxPooling2D) and not layer.keepdims:
            return self.global_max_pool(layer, x)
        return _copy(layer, x)

    def _affine_after(self, channels: int) -> Tuple[np.ndarray, np.ndarray, Optional[float]]:
        """Take a following BatchNorm and AReLU gain: (scale, shift, LeakyReLU slope or None)."""
        scale, shift = np.ones(channels), np.zeros(channels)
        if isinstance(self.peek(), keras.layers.BatchNormalization):
            scale, shift = batch_norm_affine(self.take())
        slope = None
        if isinstance(self.peek(), AReLU):
            gain, slope = arelu_gain_and_slope(self.take())
            scale, shift = scale * gain, shift * gain
        return scale, shift, slope

    def spatial_block(self, layer: keras.layers.Layer, x):
        """Conv or attention, folded with its BatchNorm (and AReLU gain), then pool, then act."""
        linear = getattr(layer, "activation", keras.activations.linear) is keras.activations.linear
        if not linear:
            return _copy(layer, x)
        scale, shift, slope = self._affine_after(layer.filters)
        if slope is not None:
            activation = keras.layers.LeakyReLU(negative_slope=slope, name=f"{layer.name}_act")
        elif self.peek() is not None and _is_monotone(self.peek()):
            activation = _copy_later(self.take())
        else:
            activation = None
        # max(f(a), f(b)) = f(max(a, b)) for a non-decreasing f: pool first, on more values.
        pool = self.peek() if activation is not None else None
        if isinstance(layer, keras.layers.Conv2D):
            config = layer.get_config()
            config.update(use_bias=True)
            folded = keras.layers.Conv2D.from_config(config)
            weights = list(fold_conv(layer, scale, shift))
        else:
            fuse_pool = _is_window_pool(pool)
            if fuse_pool:
                self.take()
            folded = ExportLocalSelfAttention(
                layer.filters, layer.kernel_size, self.strip_rows, self.mode,
                pool_size=pool.pool_size if fuse_pool else None, heads=layer.heads,
                name=layer.name,
            )  # fmt: skip
            weights = fold_attention(layer, scale, shift)
        x = folded(x)
        folded.set_weights(weights)
        if activation is None:
            return x
        if isinstance(self.peek(), (keras.layers.MaxPooling2D, keras.layers.GlobalMaxPooling2D)):
            x = self.step(x)
        return activation(x)

    def global_max_pool(self, layer: keras.layers.GlobalMaxPooling2D, x):
        height, width = x.shape[1], x.shape[2]
        if height is None or width is None:
            return _copy(layer, x)
        x = keras.layers.MaxPooling2D((height, width), name=layer.name)(x)
        return keras.layers.Flatten(name=f"{layer.name}_flat")(x)


def inference_model(
    model: keras.Model,
    mode: str = "float",
    n_frames: Optional[int] = None,
    strip_rows: Optional[int] = None,
    batch_size: Optional[int] = 1,
) -> keras.Model:
    """Rebuild a trained chain model as an equivalent, TFLite-friendly inference graph.

    Args:
        model: a trained model whose layers form a chain (`tfmood.models.vggish.build_model`, possibly
            behind a `LogMel` front-end as one nested chain).
        mode: "float" or "int8": the softmax form of the attention layers (see
            `ExportLocalSelfAttention`); use "int8" for full-integer conversion.
        n_frames: the length of the last input axis, required when the model takes any length.
        strip_rows: output rows per strip of the attention layers (None: the mode's default,
            `DEFAULT_STRIP_ROWS`).
        batch_size: the static batch size of the graph (None: any).

    Returns:
        A new model with static shapes whose outputs equal `model(x, training=False)`.

    Raises:
        ValueError: the model is not a chain, or its input length is unknown and `n_frames` is
            not given.
    """
    if mode not in ATTENTION_MODES:
        raise ValueError(f"`mode` must be one of {ATTENTION_MODES}, got {mode!r}")
    layers = chain_layers(model)
    shape = list(model.inputs[0].shape[1:])
    if shape and shape[-1] is None:
        if n_frames is None:
            raise ValueError(f"model {model.name!r} takes any length: pass n_frames")
        shape[-1] = int(n_frames)
    elif n_frames is not None and shape and shape[-1] != n_frames:
        raise ValueError(
            f"model {model.name!r} takes inputs of length {shape[-1]}, not n_frames={n_frames}"
        )
    if any(dim is None for dim in shape):
        raise ValueError(f"model {model.name!r}: input shape {tuple(shape)} is not static")
    inputs = keras.Input(shape=tuple(shape), batch_size=batch_size, name=model.inputs[0].name)
    outputs = _Rewriter(layers, mode, strip_rows).run(inputs)
    return keras.Model(inputs, outputs, name=f"{model.name}_inference")


def logits_model(model: keras.Model) -> keras.Model:
    """The same model with the final sigmoid removed: tag logits out instead of scores.

    An int8 sigmoid output holds 256 steps of 1/256, so scores bunched near a tag's base rate
    tie; the logits of the same model, quantised over their calibrated range, keep more of the
    ranking. The app applies the sigmoid, `score = 1 / (1 + exp(-logit))`.

    Args:
        model: a single-output model ending in a Dense layer with a sigmoid activation, in a
            sigmoid Activation layer, or in a nested model that does.

    Raises:
        ValueError: the model does not end in a sigmoid.
    """
    last = model.layers[-1]
    if isinstance(last, keras.Model):  # a nested chain, e.g. behind a LogMel front-end
        (node,) = [n for n in compat.inbound_nodes(last) if n.outputs[0] is model.outputs[0]]
        outputs = logits_model(last)(node.input_tensors[0])
        return keras.Model(model.inputs, outputs, name=f"{model.name}_logits")
    if isinstance(last, keras.layers.Activation) and last.activation is keras.activations.sigmoid:
        return keras.Model(model.inputs, last.input, name=f"{model.name}_logits")
    if isinstance(last, keras.layers.Dense) and last.activation is keras.activations.sigmoid:
        config = last.get_config()
        config.update(activation="linear", name=f"{last.name}_logits")
        dense = keras.layers.Dense.from_config(config)
        outputs = dense(last.input)
        dense.set_weights(last.get_weights())
        return keras.Model(model.inputs, outputs, name=f"{model.name}_logits")
    raise ValueError(
        f"model {model.name!r} does not end in a sigmoid (its last layer is {last.name!r}, "
        f"{type(last).__name__}): no logits to export"
    )
