"""`ExportLocalSelfAttention`: the TFLite form of `LocalSelfAttention`, for exports.

`tfmood.deploy.fold.inference_model` puts it in place of a trained `LocalSelfAttention` (with the
following BatchNorm and AReLU gain folded into its output affine); it computes the same function
with ops that stay on TFLite's fast path and in cache (see the class docstring).
"""

from __future__ import annotations

from typing import Optional, Sequence

import keras
import numpy as np

# Softmax forms of ExportLocalSelfAttention: both take exp as EXP (XNNPACK delegates float EXP
# since LiteRT 2.3 / TF 2.21; TF 2.17's did not, so "float" used ELU + 1; on LiteRT 2.3 EXP was
# 0.45 ms faster on block 3). "float" takes the max as MAXIMUM and divides; "int8" takes the
# max via sub/relu (int8 MAXIMUM is not delegated) and multiplies by the reciprocal of the
# sum (int8 DIV is not delegated); its EXP is an int8 lookup table on the builtin kernel.
ATTENTION_MODES = ("float", "int8")


# Output rows per strip (None: the whole map at once). Float tensors of a 2-row strip stay in
# cache: the block-3 attention took 8.4 ms in 2-row strips and 10.1 ms whole (TF 2.17, minimum
# over 200 runs on the 2-core AMD EPYC it was measured on; LiteRT 2.3: 7.0 and 8.8 ms, medians
# of 150 interleaved runs), at the cost of a 12x longer op list and a slower conversion. int8
# tensors are 4x smaller; strips gave nothing there (LiteRT 2.3: 5.5 ms whole, 6.0 ms in
# 4-row strips, 6.2 ms in 2-row strips).
DEFAULT_STRIP_ROWS = {"float": 2, "int8": None}


@keras.saving.register_keras_serializable(package="tfmood")
class ExportLocalSelfAttention(keras.layers.Layer):
    """Inference form of `LocalSelfAttention` with a folded affine output.

    Computes `scale * LocalSelfAttention(x) + bias` (the per-channel affine of a following
    BatchNorm, times an AReLU gain) from the trained weights, for static spatial shapes only.
    The formulation is chosen for the TFLite runtime rather than for training:

    - q, k and v come from one 1x1 convolution (the output scale folded into the value kernel,
      since the softmax weights sum to one), zero-padded once;
    - no 5-D tensors and no softmax over a length-9 last axis (XNNPACK's softmax pays per row):
      the 3x3 neighbours are 9 SLICEs of the padded map, each (1, rows, W, C), and the softmax
      over them is written with element-wise ops that are vectorised over the channels;
    - the output rows are computed in strips of `strip_rows` rows, so the ~90 element-wise ops
      of a strip work on cache-resident tensors (float: 2 rows by default);
    - with `pool_size`, the max pooling that follows (after the monotone activation was moved
      behind it) is applied per strip, and rows and columns that valid pooling drops are not
      computed; the bias is added after pooling (max commutes with adding a constant);
    - the softmax is `exp(l - max l)` (EXP) over the 9 logits, normalised by their sum;
    - mode "float": the max is MAXIMUM, the normalisation a DIV;
    - mode "int8": `exp` is an int8 lookup table, the running max is `m + relu(l - m)` (SUB
      with fused RELU, then ADD), the relative embedding is the bias of a unit 1x1 depthwise
      convolution (see `_add_relative`), and the normalisation is a MUL by the reciprocal of
      the sum, `exp(-log(sum))` (see `_reciprocal`): an int8 DIV is not delegated;
    - with `heads`, the per-channel products are summed within each head by a 1x1 convolution
      with a constant 0/1 kernel (GEMM-fast, and exact in int8), the softmax runs on the
      `heads` head logits, and its weights go back to the channels by the transposed 0/1 kernel.

    Args:
        filters: output channels.
        kernel_size: odd size k of the neighbourhood.
        strip_rows: output rows per strip (None: `DEFAULT_STRIP_ROWS[mode]`; whole height when
            that is None).
        mode: "float" or "int8" (the softmax form, see above).
        pool_size: (rows, cols) of a non-overlapping valid max pooling applied to the output,
            or None.
        heads: None for one head per channel, or a divisor of `filters`: the channels split
            into `heads` contiguous groups, as `LocalSelfAttention(heads=...)` splits them.
        **kwargs: passed to `keras.layers.Layer`.

    Call arguments:
        inputs: a (batch, height, width, channels) tensor with static height and width.

    Example:
    >>> layer = ExportLocalSelfAttention(filters=8)
    >>> layer(np.zeros((1, 6, 7, 4), "float32")).shape
    (1, 6, 7, 8)

    Reference:
        Ramachandran et al., "Stand-Alone Self-Attention in Vision Models", NeurIPS 2019.
    """

    def __init__(
        self, filters: int, kernel_size: int = 3, strip_rows: Optional[int] = None,
        mode: str = "float", pool_size: Optional[Sequence[int]] = None,
        heads: Optional[int] = None, **kwargs,
    ):  # fmt: skip
        super().__init__(**kwargs)
        if heads is not None and (int(heads) <= 0 or int(filters) % int(heads)):
            raise ValueError(f"`heads` must be None or a divisor of filters={filters}, got {heads}")
        if int(kernel_size) <= 0 or int(kernel_size) % 2 == 0:
            raise ValueError(f"`kernel_size` must be a positive odd number, got {kernel_size}")
        if strip_rows is not None and int(strip_rows) < 1:
            raise ValueError(f"`strip_rows` must be None or >= 1, got {strip_rows}")
        if mode not in ATTENTION_MODES:
            raise ValueError(f"`mode` must be one of {ATTENTION_MODES}, got {mode!r}")
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.mode = mode
        if strip_rows is None:
            strip_rows = DEFAULT_STRIP_ROWS[mode]
        self.strip_rows = None if strip_rows is None else int(strip_rows)
        self.pool_size = None if pool_size is None else tuple(int(p) for p in pool_size)
        # One head per channel needs no grouping.
        self.heads = None if heads is None or int(heads) == self.filters else int(heads)
        if self.pool_size is not None and (len(self.pool_size) != 2 or min(self.pool_size) < 1):
            raise ValueError(f"`pool_size` must be None or two positive sizes, got {pool_size}")

    def build(self, input_shape):
        in_channels = input_shape[-1]
        if in_channels is None:
            raise ValueError("ExportLocalSelfAttention needs a known number of input channels")
        self.qkv_kernel = self.add_weight(
            name="qkv_kernel", shape=(1, 1, in_channels, 3 * self.filters), initializer="zeros"
        )
        self.relative = self.add_weight(
            name="relative", shape=(self.kernel_size**2, self.filters), initializer="zeros"
        )
        self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros")
        self.built = True

    def call(self, inputs):
        import tensorflow as tf

        height, width = inputs.shape[1], inputs.shape[2]
        if height is None or width is None:
            raise ValueError("ExportLocalSelfAttention needs static height and width")
        pad = self.kernel_size // 2
        qkv = tf.nn.conv2d(inputs, self.qkv_kernel, strides=1, padding="VALID")
        # The projections have no bias, so padding after projecting equals projecting the padded
        # input (zero keys and values at the border), as the training layer computes it.
        qkv = tf.pad(qkv, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
        pool_rows, pool_cols = self.pool_size or (1, 1)
        # Valid pooling reads whole windows only: the rows and columns past them are not needed.
        rows, cols = height // pool_rows * pool_rows, width // pool_cols * pool_cols
        step = -(-(self.strip_rows or rows) // pool_rows) * pool_rows
        strips = []
        for top in range(0, rows, step):
            strip = self._strip(qkv, top, min(step, rows - top), cols)
            if self.pool_size is not None:
                strip = tf.nn.max_pool2d(strip, self.pool_size, self.pool_size, "VALID")
            strips.append(strip)
        outputs = strips[0] if len(strips) == 1 else tf.concat(strips, axis=1)
        return outputs + self.bias

    def _slice(self, qkv, row: int, col: int, rows: int, width: int, part: int):
        """Rows [row, row+rows) and columns [col, col+width) of q (0), k (1) or v (2).

        The size holds the batch size where it is static (the export graph's 1), not -1:
        XNNPACK does not take a SLICE whose size holds -1, and those SLICEs ran on the builtin
        kernel between delegated parts (block 3 at 24 x 87 x 128: 3.2 ms more in float32, in
        2-row strips, 0.3-0.6 ms more in int8).
        """
        import tensorflow as tf

        batch = -1 if qkv.shape[0] is None else int(qkv.shape[0])
        begin = [0, row, col, part * self.filters]
        return tf.slice(qkv, begin, [batch, rows, width, self.filters])

    def _strip(self, qkv, top: int, rows: int, width: int):
        """Attention output of output rows [top, top + rows)."""
        logits, values = self._neighbours(qkv, top, rows, width)
        top_logit = self._max(logits)
        weights = self._weights(logits, top_logit)
        return self._weighted_mean(weights, values)

    def _neighbours(self, qkv, top: int, rows: int, width: int):
        """The 9 logits `q * (k_m + rel_m)` (head sums with `heads`) and the 9 values v_m."""
        size, pad = self.kernel_size, self.kernel_size // 2
        query = self._slice(qkv, top + pad, pad, rows, width, 0)
        offsets = [(r, c) for r in range(size) for c in range(size)]
        logits = [
            query * self._add_relative(self._slice(qkv, top + r, c, rows, width, 1), i)
            for i, (r, c) in enumerate(offsets)
        ]
        values = [self._slice(qkv, top + r, c, rows, width, 2) for r, c in offsets]
        if self.heads is not None:
            logits = [self._head_sum(logit) for logit in logits]
        return logits, values

    def _max(self, logits):
        """Element-wise maximum of the logits."""
        import tensorflow as tf

        top_logit = logits[0]
        for logit in logits[1:]:
            if self.mode == "float":
                top_logit = tf.maximum(top_logit, logit)
            else:
                top_logit = top_logit + tf.nn.relu(logit - top_logit)
        return top_logit

    def _weights(self, logits, top_logit):
        """Unnormalised softmax weights `exp(l - max)`: EXP, delegated in float (since LiteRT
        2.3), an int8 lookup table on the builtin kernel in int8."""
        import tensorflow as tf

        return [tf.exp(logit - top_logit) for logit in logits]

    def _weighted_mean(self, weights, values):
        """`sum(w_m v_m) / sum(w_m)`: a DIV in float; in int8 a product with the reciprocal of
        the sum (see `_reciprocal`)."""
        numerator, denominator = self._to_channels(weights[0]) * values[0], weights[0]
        for weight, value in zip(weights[1:], values[1:]):
            numerator = numerator + self._to_channels(weight) * value
            denominator = denominator + weight
        if self.mode == "int8":
            return numerator * self._to_channels(self._reciprocal(denominator))
        return numerator / self._to_channels(denominator)

    @staticmethod
    def _reciprocal(denominator):
        """`1 / denominator` for the int8 graph, as `exp(-log(denominator))`.

        TF 2.21's converter quantises a DIV to an int8 DIV (TF 2.17's left a float DIV island,
        DEQUANTIZE -> DIV -> QUANTIZE, all delegated), which XNNPACK does not take: LiteRT's
        builtin int8 DIV took 8.4 ms on block 3's 24 x 84 x 128 map, and refuses a zero divisor
        (the int8 sum can be 0 when the running max overshoots the largest logit). LOG and EXP
        are int8 lookup tables (builtin kernels, about 0.1 ms each at that size), the negation
        is an int8 MUL by -1 and the product with the numerator an int8 MUL, both delegated.
        `bench/bench_tflite_block.py`'s int8 "attention + pool" went from 14.6 to 6.5 ms (with
        the SLICEs delegated too, see `_slice`), and int8 sa3 from 2.0x the baseline's latency
        to 1.3x. A lookup table is defined for every input, so no floor is needed.

        The reciprocal is quantised on [0, 1 / s0], s0 >= 1 the smallest sum in calibration
        (the largest logit contributes exp(0) = 1): an int8 sum below s0 gets 1 / s0, as if
        floored there. On a model trained as the slow test trains it (int8 logits against
        Keras on all 90 clips of its corpus) the error was the same as with the int8 DIV and
        its 1/16 floor (mean |error| 0.103 against 0.107, rms 0.237 against 0.240), and the
        same with `max(sum, 1)` before the DIV (0.101, 0.236); the ROC-AUC differences between
        these forms (0.001-0.007) are within the noise of 36-90 clips. Other forms measured on
        block 3: `pow(sum, -1)` stays a float POW island on the builtin kernel (1.3 ms);
        `reciprocal` and `rsqrt` become int8 DIV and int8 RSQRT (not delegated, 8.7 and 15.5
        ms); ELU weights (a delegated float island) with this reciprocal made the attention
        slower (6.4 against 5.7 ms) and less exact.
        """
        import tensorflow as tf

        return tf.exp(tf.math.log(denominator) * -1.0)

    def _add_relative(self, keys, index: int):
        """`keys + relative[index]`; in int8 as a 1x1 depthwise convolution with that bias.

        An int8 ADD of a small constant to a large tensor has an input-to-output scale ratio
        below what XNNPACK's int8 ADD takes (1/1024), so it fell back to the builtin kernel and
        split the delegated graph (block 3 of a model with small relative embeddings: about
        6 ms more than the conv it replaces, instead of 1-2.5 ms). The bias of a depthwise
        convolution with unit weights is an int32 at the input's scale: exact enough, and
        always delegated.
        """
        import tensorflow as tf

        if self.mode == "float":
            return keys + self.relative[index]
        ones = tf.ones((1, 1, self.filters, 1), keys.dtype)
        shifted = tf.nn.depthwise_conv2d(keys, ones, [1, 1, 1, 1], "VALID")
        return tf.nn.bias_add(shifted, self.relative[index])

    def _grouping(self) -> np.ndarray:
        """(filters, heads) 0/1 matrix: channel c belongs to head c // (filters // heads)."""
        depth = self.filters // self.heads
        return np.repeat(np.eye(self.heads, dtype=np.float32), depth, axis=0)

    def _head_sum(self, products):
        """Per-channel products summed within each head: (..., filters) -> (..., heads)."""
        import tensorflow as tf

        return tf.nn.conv2d(products, self._grouping()[None, None], 1, "VALID")

    def _to_channels(self, tensor):
        """Head values repeated over their channels: (..., heads) -> (..., filters)."""
        import tensorflow as tf

        if self.heads is None:
            return tensor
        return tf.nn.conv2d(tensor, self._grouping().T[None, None], 1, "VALID")

    def compute_output_shape(self, input_shape):
        batch, height, width = input_shape[:3]
        if self.pool_size is not None:
            height, width = height // self.pool_size[0], width // self.pool_size[1]
        return (batch, height, width, self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            strip_rows=self.strip_rows,
            mode=self.mode,
            pool_size=self.pool_size,
            heads=self.heads,
        )
        return config
