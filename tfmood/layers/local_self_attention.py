import keras
from keras import ops


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

    Only pad, strided slices, 1x1 convolutions, mul/add, softmax and reductions are used, so the
    layer converts to TFLite builtin ops, and it works for any height and width.

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

    def _neighbours(self, padded):
        """The k*k shifted views of a padded map, row-major over the neighbourhood."""
        last = self.kernel_size - 1
        views = []
        for row in range(self.kernel_size):
            for col in range(self.kernel_size):
                views.append(padded[:, row : (row - last) or None, col : (col - last) or None, :])
        return views

    def _relative_embeddings(self):
        """One (filters,) vector per neighbour: rel_h[:, row] then rel_w[:, col]."""
        return [
            ops.concatenate([self.rel_h[:, row], self.rel_w[:, col]], axis=0)
            for row in range(self.kernel_size)
            for col in range(self.kernel_size)
        ]

    def _group_matrix(self):
        """(filters, heads) 0/1 matrix that sums channels within a head."""
        size = self.filters // self.heads
        channel_head = ops.arange(self.filters) // size
        return ops.cast(ops.equal(channel_head[:, None], ops.arange(self.heads)[None, :]), "float32")

    def call(self, inputs):
        pad = self.kernel_size // 2
        padding = [[0, 0], [pad, pad], [pad, pad], [0, 0]]
        # The projections have no bias, so projecting then padding equals padding then projecting.
        query = ops.conv(inputs, self.query_kernel)
        keys = self._neighbours(ops.pad(ops.conv(inputs, self.key_kernel), padding))
        values = self._neighbours(ops.pad(ops.conv(inputs, self.value_kernel), padding))

        logits = [query * (key + rel) for key, rel in zip(keys, self._relative_embeddings())]
        if self.heads is not None:
            groups = self._group_matrix()
            logits = [ops.matmul(logit, groups) for logit in logits]
        weights = ops.softmax(ops.stack(logits, axis=-1), axis=-1)
        if self.heads is not None:
            # Back from (..., heads, k*k) to one weight per channel.
            weights = ops.einsum("bhwnk,cn->bhwck", weights, groups)
        return ops.sum(weights * ops.stack(values, axis=-1), axis=-1)

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
