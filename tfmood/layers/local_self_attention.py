"""Stand-alone local self-attention (Ramachandran et al.), written for fast training on CPU.

The softmax over the k*k neighbours is computed without stacking them into a 5-D tensor: the
neighbours are k*k shifted slices of the zero-padded keys and values, and the softmax is a
running maximum, one `exp` per neighbour and `add_n` sums, all vectorised over the channels. The
backward pass is written by hand (`tf.custom_gradient`): automatic differentiation of that graph
would also differentiate the maximum (whose gradient is zero, the softmax being shift-invariant)
and keep many more intermediate tensors. Measured forward + backward on CPU, see
bench/bench_attention.py.
"""

import functools

import keras
import tensorflow as tf
from keras import ops


def _neighbours(padded, kernel_size: int):
    """The k*k shifted (batch, height, width, ...) views of a padded map, row-major."""
    last = kernel_size - 1
    return [
        padded[:, row : (row - last) or None, col : (col - last) or None]
        for row in range(kernel_size)
        for col in range(kernel_size)
    ]


def _place(parts, kernel_size: int):
    """Sum of per-neighbour gradients, each zero-padded back to its offset in the padded map."""
    last = kernel_size - 1
    offsets = [(row, col) for row in range(kernel_size) for col in range(kernel_size)]
    rank = len(parts[0].shape)
    return tf.add_n(
        [
            tf.pad(part, [[0, 0], [row, last - row], [col, last - col]] + [[0, 0]] * (rank - 3))
            for part, (row, col) in zip(parts, offsets)
        ]
    )


@functools.cache
def _attention_core(kernel_size: int, grouped: bool):
    """Softmax attention of each query over its k*k neighbours, with a hand-written gradient.

    The returned function takes `query` (batch, height, width, *channels), `keys` and `values`
    zero-padded by k // 2 on both spatial axes, and `relative` (k*k, *channels), one embedding
    per neighbour (row-major). `channels` is (filters,) for one head per channel, or
    (heads, filters // heads) when `grouped`: then the logits are summed over the last axis and
    the weights broadcast back over it.
    """

    def head_sum(tensor):
        return tf.reduce_sum(tensor, axis=-1, keepdims=True) if grouped else tensor

    def forward(query, keys, values, relative):
        shifted_keys = [
            key + rel for key, rel in zip(_neighbours(keys, kernel_size), tf.unstack(relative))
        ]
        shifted_values = _neighbours(values, kernel_size)
        logits = [head_sum(query * key) for key in shifted_keys]
        top = logits[0]
        for logit in logits[1:]:
            top = tf.maximum(top, logit)
        scores = [tf.exp(logit - top) for logit in logits]
        total = tf.add_n(scores)
        outputs = tf.add_n([s * v for s, v in zip(scores, shifted_values)]) / total
        return outputs, (shifted_keys, shifted_values, scores, total)

    @tf.custom_gradient
    def attend(query, keys, values, relative):
        outputs, (shifted_keys, shifted_values, scores, total) = forward(
            query, keys, values, relative
        )

        def gradient(upstream):
            # With w = scores / total: d values_n = w_n * g and
            # d logit_n = w_n * sum_head(g * (values_n - outputs)).
            scaled = upstream / total
            value_grads, key_grads, query_grads = [], [], []
            for score, key, value in zip(scores, shifted_keys, shifted_values):
                value_grad = score * scaled
                logit_grad = head_sum(value_grad * (value - outputs))
                value_grads.append(value_grad)
                key_grads.append(logit_grad * query)
                query_grads.append(logit_grad * key)
            relative_grad = tf.stack([tf.reduce_sum(g, axis=[0, 1, 2]) for g in key_grads])
            return (
                tf.add_n(query_grads),
                _place(key_grads, kernel_size),
                _place(value_grads, kernel_size),
                relative_grad,
            )

        return outputs, gradient

    return attend


@keras.saving.register_keras_serializable(package="tfmood")
class LocalSelfAttention(keras.layers.Layer):
    """Stand-alone local self-attention over a k x k neighbourhood, a drop-in for a conv layer.

    For every position, the query (a 1x1 projection of the input) attends to the k x k
    neighbourhood of keys and values (1x1 projections of the zero-padded input). The keys get a
    learned relative position embedding: `rel_h` over neighbourhood rows for the first half of the
    channels, `rel_w` over columns for the second half. With `heads=None` every channel is its own
    head, as in the paper's released code: `logit = q * (k + rel)` element-wise, softmax over the
    k*k neighbours per channel, output = softmax-weighted sum of `v`. With `heads=N` the channels
    are split into N groups and the logits are summed within a group (the dot-product form of
    Ramachandran et al.); the parameter count is the same.

    Only pad, strided slices, 1x1 convolutions, element-wise ops (mul, add, sub, maximum, exp,
    div), add_n and reductions are used, so the layer converts to TFLite builtin ops, and it
    works for any height and width. The softmax is computed per neighbour slice with a
    hand-written gradient (see the module docstring): about 7x faster to train on CPU than a
    softmax over a stacked 5-D tensor.

    Args:
        filters: number of output channels (even, since the relative embedding halves them).
        kernel_size: odd size k of the square neighbourhood.
        heads: None for one head per channel, or a divisor of `filters`.
        kernel_initializer: initializer of the three 1x1 projections.
        embedding_initializer: initializer of `rel_h` and `rel_w`.
        **kwargs: passed to `keras.layers.Layer`.

    Call arguments:
        inputs: a (batch, height, width, channels) tensor.

    Example:
    >>> layer = LocalSelfAttention(filters=8)
    >>> layer(keras.ops.ones((2, 5, 7, 4))).shape
    (2, 5, 7, 8)

    Reference:
        Ramachandran et al., "Stand-Alone Self-Attention in Vision Models", NeurIPS 2019;
        Tirunellai Rajamani et al., "Emotion and Theme Recognition in Music Using Attention-Based
        Methods", MediaEval 2020.
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int = 3,
        heads=None,
        kernel_initializer="glorot_uniform",
        embedding_initializer="random_normal",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if int(filters) <= 0 or int(filters) % 2:
            raise ValueError(f"`filters` must be a positive even number, got {filters}")
        if int(kernel_size) <= 0 or int(kernel_size) % 2 == 0:
            raise ValueError(f"`kernel_size` must be a positive odd number, got {kernel_size}")
        if heads is not None and (int(heads) <= 0 or int(filters) % int(heads)):
            raise ValueError(f"`heads` must be None or a divisor of filters={filters}, got {heads}")
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.heads = None if heads is None else int(heads)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.embedding_initializer = keras.initializers.get(embedding_initializer)

    def build(self, input_shape):
        in_channels = input_shape[-1]
        if in_channels is None:
            raise ValueError("LocalSelfAttention needs a known number of input channels")
        kernel_shape = (1, 1, in_channels, self.filters)
        self.query_kernel = self.add_weight(
            name="query_kernel", shape=kernel_shape, initializer=self.kernel_initializer
        )
        self.key_kernel = self.add_weight(
            name="key_kernel", shape=kernel_shape, initializer=self.kernel_initializer
        )
        self.value_kernel = self.add_weight(
            name="value_kernel", shape=kernel_shape, initializer=self.kernel_initializer
        )
        half = self.filters // 2
        self.rel_h = self.add_weight(
            name="rel_h", shape=(half, self.kernel_size), initializer=self.embedding_initializer
        )
        self.rel_w = self.add_weight(
            name="rel_w", shape=(half, self.kernel_size), initializer=self.embedding_initializer
        )
        self.built = True

    def _relative_embeddings(self):
        """(k*k, filters): row `r * k + c` is rel_h[:, r] then rel_w[:, c]."""
        k = self.kernel_size
        rows = ops.repeat(ops.transpose(self.rel_h), k, axis=0)
        cols = ops.tile(ops.transpose(self.rel_w), (k, 1))
        return ops.concatenate([rows, cols], axis=1)

    def _split_heads(self, tensor):
        """(..., filters) -> (..., heads, filters // heads)."""
        shape = tf.concat([tf.shape(tensor)[:-1], [self.heads, self.filters // self.heads]], 0)
        return tf.reshape(tensor, shape)

    def call(self, inputs):
        pad = self.kernel_size // 2
        padding = [[0, 0], [pad, pad], [pad, pad], [0, 0]]
        # The projections have no bias, so projecting then padding equals padding then projecting.
        query = ops.conv(inputs, self.query_kernel)
        keys = ops.pad(ops.conv(inputs, self.key_kernel), padding)
        values = ops.pad(ops.conv(inputs, self.value_kernel), padding)
        relative = self._relative_embeddings()
        if self.heads is None:
            return _attention_core(self.kernel_size, False)(query, keys, values, relative)
        query, keys, values, relative = map(self._split_heads, (query, keys, values, relative))
        outputs = _attention_core(self.kernel_size, True)(query, keys, values, relative)
        return tf.reshape(outputs, tf.concat([tf.shape(outputs)[:-2], [self.filters]], 0))

    def count_macs(self, input_shape) -> int:
        """Multiply-accumulates for one example of `input_shape` (batch dimension excluded).

        As the reference code computes them: q on the H x W input, k and v on the zero-padded
        input, then per channel and neighbour one product for the logits and one for the
        softmax-weighted sum of v.
        """
        height, width, channels = input_shape[-3:]
        pad = self.kernel_size // 2
        projection = channels * self.filters
        padded_positions = (height + 2 * pad) * (width + 2 * pad)
        per_neighbour = 2 * height * width * self.filters * self.kernel_size**2
        return height * width * projection + 2 * padded_positions * projection + per_neighbour

    def count_activation_bytes(self, input_shape, dtype_bytes: int = 4) -> int:
        """Working set kept for the backward pass, for one example: the shifted keys, shifted
        values and softmax scores, `kernel_size ** 2` of each per output value."""
        height, width = input_shape[-3], input_shape[-2]
        return int(3 * self.kernel_size**2 * height * width * self.filters * dtype_bytes)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.filters,)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            heads=self.heads,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            embedding_initializer=keras.initializers.serialize(self.embedding_initializer),
        )
        return config
