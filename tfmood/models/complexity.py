"""Trainable parameters, FLOPs and activation memory of a Keras model, layer by layer.

GFLOPs are 2 x the multiply-accumulates of one example through the convolutions, the dense
layers and the attention layers (batch norm, activations and pooling are not counted), the
definition behind the paper's Table 1. A custom layer counts its own work with a
`count_macs(input_shape)` method.
"""

from __future__ import annotations

import dataclasses
import math
from typing import List, Optional, Union

import keras
import numpy as np


@dataclasses.dataclass
class LayerComplexity:
    name: str
    kind: str
    output_shape: tuple
    trainable_params: int
    macs: int


@dataclasses.dataclass
class ModelComplexity:
    layers: List[LayerComplexity]
    trainable_params: int
    macs: int
    peak_activation_bytes: int

    @property
    def gflops(self) -> float:
        return 2 * self.macs / 1e9

    def as_dict(self) -> dict:
        return {
            "trainable_params": self.trainable_params,
            "macs": self.macs,
            "gflops": round(self.gflops, 2),
            "peak_activation_bytes": self.peak_activation_bytes,
        }

    def table(self) -> str:
        """The per-layer breakdown as a Markdown table."""
        rows = ["| layer | kind | output | params | MMACs |", "|---|---|---|---:|---:|"]
        for layer in self.layers:
            shape = "x".join(str(d) for d in layer.output_shape)
            rows.append(
                f"| {layer.name} | {layer.kind} | {shape} | {layer.trainable_params:,} "
                f"| {layer.macs / 1e6:,.2f} |"
            )
        rows.append(
            f"| total | | | {self.trainable_params:,} | {self.macs / 1e6:,.2f} "
            f"({self.gflops:.2f} GFLOPs) |"
        )
        return "\n".join(rows)


def _shape(tensor) -> tuple:
    return tuple(tensor.shape[1:])


def layer_macs(layer: keras.layers.Layer, input_shape: tuple, output_shape: tuple) -> int:
    """Multiply-accumulates of one layer for one example (batch dimension excluded)."""
    if hasattr(layer, "count_macs"):
        return int(layer.count_macs(input_shape))
    if isinstance(layer, keras.layers.Conv2D):
        kernel_h, kernel_w, in_channels, out_channels = layer.kernel.shape
        out_h, out_w = output_shape[0], output_shape[1]
        return int(out_h * out_w * out_channels * in_channels * kernel_h * kernel_w)
    if isinstance(layer, keras.layers.Dense):
        in_units, out_units = layer.kernel.shape
        positions = math.prod(output_shape[:-1]) if len(output_shape) > 1 else 1
        return int(positions * in_units * out_units)
    return 0


def _activation_bytes(shapes, dtype_bytes: int) -> int:
    return sum(math.prod(shape) for shape in shapes) * dtype_bytes


def model_complexity(model: keras.Model, dtype_bytes: int = 4) -> ModelComplexity:
    """Per-layer parameters and MACs of a functional model with a fully known input shape.

    `peak_activation_bytes` is the largest input-plus-output activation size of any one layer
    for one example: a lower bound on the working memory an inference engine needs.
    """
    rows, total_macs, peak = [], 0, 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        inputs = layer.input if isinstance(layer.input, (list, tuple)) else [layer.input]
        in_shapes = [_shape(t) for t in inputs]
        out_shape = _shape(layer.output)
        if any(d is None for shape in in_shapes + [out_shape] for d in shape):
            raise ValueError(
                f"layer {layer.name!r} has an unknown dimension: build the model with a fixed "
                "input length (n_frames) to count its complexity"
            )
        macs = layer_macs(layer, in_shapes[0], out_shape)
        params = int(sum(np.prod(w.shape) for w in layer.trainable_weights))
        rows.append(LayerComplexity(layer.name, type(layer).__name__, out_shape, params, macs))
        total_macs += macs
        peak = max(peak, _activation_bytes(in_shapes + [out_shape], dtype_bytes))
    params = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    return ModelComplexity(rows, params, total_macs, peak)


def preset_complexity(
    preset: Union[str, "VGGishConfig"], n_frames: Optional[int] = 1400, **overrides  # noqa: F821
) -> ModelComplexity:
    """Complexity of a preset (or config) at a fixed input length, without training anything."""
    from tfmood.models.vggish import build_model

    return model_complexity(build_model(preset, n_frames=n_frames, **overrides))
