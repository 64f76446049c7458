import keras
from keras import ops

# Heads of a VGG-ish "augmented" block when the model config leaves them open (the paper's Nh).
DEFAULT_BLOCK_HEADS = 8


def _depth(explicit, fraction, filters: int, heads: int, name: str) -> int:
    """An explicit depth, or `fraction * filters` rounded to a positive multiple of `heads`."""
    if explicit is not None:
        return int(explicit)
    if not 0.0 < float(fraction) <= 1.0:
        raise ValueError(f"`{name}` must be in (0, 1], got {fraction}")
    return heads * max(1, round(float(fraction) * filters / heads))


@keras.saving.register_keras_serializable(package="tfmood")
class AttentionAugmentedConv2D(keras.layers.Layer):
    """A convolution whose output channels are augmented with global multi-head self-attention.

    The output concatenates `filters - dv` channels of a k x k 'same' convolution with `dv`
    channels of multi-head self-attention over all H x W positions. A bias-carrying 1x1
    projection of the input gives queries, keys (`dk` channels each) and values (`dv`), split
    into `heads` heads. The logit of query position (x, y) against key position (x', y') is

        q . k + q . rel_h[x' - x] + q . rel_w[y' - y]      (q scaled by (dk / heads) ** -0.5)

    with relative height and width embeddings shared by the heads; the softmax-weighted sum of
    the values goes through a 1x1 projection (dv -> dv) before the concatenation.

    Relative embeddings: `rel_h` has `2 * max_height - 1` rows (distances -(max_height - 1) ..
    max_height - 1), `rel_w` likewise for widths. They are looked up with a gather of constant
    clipped indices instead of the paper's pad-reshape-slice "relative to absolute" trick, which
    gives the same logits for inputs up to `max_height` x `max_width` and also runs on larger
    inputs: longer distances share the embedding of the largest one (clipped, as in Shaw et al.).
    With `max_height=None` / `max_width=None` the extent of the input at build time is used, so
    a model built at its input size gets the paper's layer exactly. Only 1x1/kxk convolutions,
    reshape, transpose, gather, (batch) matmul, add, softmax and concatenation are used, all
    TFLite builtins.

    Memory grows with the square of the positions: the logits hold `heads * (H * W) ** 2`
    numbers per example (4.4 M per head at 24 x 87), see `count_activation_bytes`.

    Args:
        filters: output channels (convolution plus attention).
        kernel_size: odd size of the convolution kernel.
        dk: key (and query) depth, a multiple of `heads`; None: from `kappa`.
        dv: value depth (attention output channels), a multiple of `heads`, at most `filters`
            (`dv == filters` leaves out the convolution: a fully attentional layer); None: from
            `nu`.
        heads: number of attention heads.
        kappa: dk as a fraction of `filters` when `dk` is None (rounded to a multiple of heads).
        nu: dv as a fraction of `filters` when `dv` is None (rounded to a multiple of heads).
        max_height: largest height with its own relative embeddings (None: at build time).
        max_width: largest width with its own relative embeddings (None: at build time).
        kernel_initializer: initializer of the convolution and the projections.
        bias_initializer: initializer of their biases.
        embedding_initializer: initializer of `rel_h` and `rel_w` (None: normal with standard
            deviation `(dk / heads) ** -0.5`, as in the paper's code).
        **kwargs: passed to `keras.layers.Layer`.

    Call arguments:
        inputs: a (batch, height, width, channels) tensor.

    Example:
    >>> layer = AttentionAugmentedConv2D(filters=16, dk=8, dv=4, heads=2)
    >>> layer(keras.ops.ones((2, 5, 7, 3))).shape
    (2, 5, 7, 16)

    Reference:
        Bello, Zoph, Vaswani, Shlens and Le, "Attention Augmented Convolutional Networks",
        ICCV 2019 (arXiv:1904.09925).
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int = 3,
        dk=None,
        dv=None,
        heads: int = 8,
        kappa: float = 0.2,
        nu: float = 0.1,
        max_height=None,
        max_width=None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        embedding_initializer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if int(filters) <= 0:
            raise ValueError(f"`filters` must be positive, got {filters}")
        if int(kernel_size) <= 0 or int(kernel_size) % 2 == 0:
            raise ValueError(f"`kernel_size` must be a positive odd number, got {kernel_size}")
        if int(heads) <= 0:
            raise ValueError(f"`heads` must be positive, got {heads}")
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.heads = int(heads)
        self.kappa = float(kappa)
        self.nu = float(nu)
        self.dk = _depth(dk, kappa, self.filters, self.heads, "kappa")
        self.dv = _depth(dv, nu, self.filters, self.heads, "nu")
        if self.dk <= 0 or self.dk % self.heads:
            raise ValueError(f"`dk` must be a positive multiple of heads={heads}, got {self.dk}")
        if self.dv <= 0 or self.dv % self.heads:
            raise ValueError(f"`dv` must be a positive multiple of heads={heads}, got {self.dv}")
        if self.dv > self.filters:
            raise ValueError(f"`dv` must be at most filters={filters}, got {self.dv}")
        for name, value in (("max_height", max_height), ("max_width", max_width)):
            if value is not None and int(value) <= 0:
                raise ValueError(f"`{name}` must be None or positive, got {value}")
        self.max_height = None if max_height is None else int(max_height)
        self.max_width = None if max_width is None else int(max_width)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.embedding_initializer = (
            None if embedding_initializer is None
            else keras.initializers.get(embedding_initializer)
        )

    @classmethod
    def for_block(cls, filters: int, config, name: str) -> "AttentionAugmentedConv2D":
        """The layer of an "augmented" VGG-ish block: the paper's kappa = 0.2, nu = 0.1, 3x3
        kernel, `config.heads` heads (None: `DEFAULT_BLOCK_HEADS`); relative embeddings sized
        at build time from the block's input."""
        return cls(filters, heads=config.heads or DEFAULT_BLOCK_HEADS, name=name)

    @property
    def conv_filters(self) -> int:
        return self.filters - self.dv

    @property
    def head_depth(self) -> int:
        return self.dk // self.heads

    def build(self, input_shape):
        height, width, channels = input_shape[-3:]
        if channels is None:
            raise ValueError("AttentionAugmentedConv2D needs a known number of input channels")
        for name, size in (("max_height", height), ("max_width", width)):
            if getattr(self, name) is None:
                if size is None:
                    raise ValueError(f"`{name}` is needed when the input {name[4:]} is unknown")
                setattr(self, name, int(size))
        if self.conv_filters:
            self.conv_kernel = self._kernel(
                "conv_kernel", (self.kernel_size, self.kernel_size, channels, self.conv_filters)
            )
            self.conv_bias = self._bias("conv_bias", self.conv_filters)
        qkv_depth = 2 * self.dk + self.dv
        self.qkv_kernel = self._kernel("qkv_kernel", (1, 1, channels, qkv_depth))
        self.qkv_bias = self._bias("qkv_bias", qkv_depth)
        self.output_kernel = self._kernel("output_kernel", (1, 1, self.dv, self.dv))
        self.output_bias = self._bias("output_bias", self.dv)
        embedding_initializer = self.embedding_initializer or keras.initializers.RandomNormal(
            stddev=self.head_depth**-0.5
        )
        self.rel_h = self.add_weight(
            name="rel_h",
            shape=(2 * self.max_height - 1, self.head_depth),
            initializer=embedding_initializer,
        )
        self.rel_w = self.add_weight(
            name="rel_w",
            shape=(2 * self.max_width - 1, self.head_depth),
            initializer=embedding_initializer,
        )
        self.built = True

    def _kernel(self, name, shape):
        return self.add_weight(name=name, shape=shape, initializer=self.kernel_initializer)

    def _bias(self, name, size):
        return self.add_weight(name=name, shape=(size,), initializer=self.bias_initializer)

    def _split_heads(self, x, height, width, depth):
        """(batch, H, W, heads * depth) -> (batch, heads, H, W, depth)."""
        x = ops.reshape(x, (-1, height, width, self.heads, depth))
        return ops.transpose(x, (0, 3, 1, 2, 4))

    @staticmethod
    def _relative_table(embeddings, length, max_length):
        """(length, length, depth): entry [i, j] is the embedding of distance j - i (clipped)."""
        positions = ops.arange(length)
        distance = positions[None, :] - positions[:, None]
        index = ops.clip(distance, -(max_length - 1), max_length - 1) + (max_length - 1)
        return ops.take(embeddings, index, axis=0)

    def _attention_logits(self, q, k, height, width):
        """(batch, heads, H*W, H*W) content plus relative logits; q, k (batch, heads, H, W, d)."""
        positions = height * width
        depth = self.head_depth
        q_flat = ops.reshape(q, (-1, self.heads, positions, depth))
        k_flat = ops.reshape(k, (-1, self.heads, positions, depth))
        content = ops.matmul(q_flat, ops.transpose(k_flat, (0, 1, 3, 2)))
        table_h = self._relative_table(self.rel_h, height, self.max_height)
        table_w = self._relative_table(self.rel_w, width, self.max_width)
        # rel_h[b, n, x, y, x'] = q[b, n, x, y] . table_h[x, x']; rel_w likewise over y'.
        rel_h = ops.einsum("bnxyd,xud->bnxyu", q, table_h)
        rel_w = ops.einsum("bnxyd,yvd->bnxyv", q, table_w)
        logits = (
            ops.reshape(content, (-1, height, width, height, width))
            + ops.reshape(rel_h, (-1, height, width, height, 1))
            + ops.reshape(rel_w, (-1, height, width, 1, width))
        )
        return ops.reshape(logits, (-1, self.heads, positions, positions))

    def _attention(self, inputs, height, width):
        qkv = ops.conv(inputs, self.qkv_kernel) + self.qkv_bias
        q = qkv[..., : self.dk] * self.head_depth**-0.5
        k = qkv[..., self.dk : 2 * self.dk]
        v = qkv[..., 2 * self.dk :]
        q = self._split_heads(q, height, width, self.head_depth)
        k = self._split_heads(k, height, width, self.head_depth)
        v = self._split_heads(v, height, width, self.dv // self.heads)
        weights = ops.softmax(self._attention_logits(q, k, height, width), axis=-1)
        values = ops.reshape(v, (-1, self.heads, height * width, self.dv // self.heads))
        heads_out = ops.matmul(weights, values)  # (batch, heads, H*W, dv / heads)
        combined = ops.reshape(ops.transpose(heads_out, (0, 2, 1, 3)), (-1, height, width, self.dv))
        return ops.conv(combined, self.output_kernel) + self.output_bias

    def call(self, inputs):
        shape = ops.shape(inputs)
        height, width = shape[1], shape[2]
        attention = self._attention(inputs, height, width)
        if not self.conv_filters:
            return attention
        conv = ops.conv(inputs, self.conv_kernel, padding="same") + self.conv_bias
        return ops.concatenate([conv, attention], axis=-1)

    def count_macs(self, input_shape) -> int:
        """Multiply-accumulates for one example of `input_shape` (batch dimension excluded).

        The convolution, the qkv and output projections, the content logits (q . k for every
        pair of positions), the relative logits (every query against H height and W width
        embeddings) and the softmax-weighted sum of the values.
        """
        height, width, channels = input_shape[-3:]
        positions = height * width
        conv = positions * self.conv_filters * channels * self.kernel_size**2
        projections = positions * channels * (2 * self.dk + self.dv) + positions * self.dv**2
        relative = positions * (height + width) * self.dk
        attention = positions**2 * (self.dk + self.dv)
        return int(conv + projections + relative + attention)

    def count_activation_bytes(self, input_shape, dtype_bytes: int = 4) -> int:
        """Largest input-plus-output size of one operation inside the layer, for one example.

        The softmax over the logits dominates: `2 * heads * (H * W) ** 2` numbers. The layer's
        own input plus output is returned if larger (tiny inputs).
        """
        height, width, channels = input_shape[-3:]
        positions = height * width
        softmax = 2 * self.heads * positions**2
        boundary = positions * (channels + self.filters)
        return int(max(softmax, boundary) * dtype_bytes)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.filters,)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            dk=self.dk,
            dv=self.dv,
            heads=self.heads,
            kappa=self.kappa,
            nu=self.nu,
            max_height=self.max_height,
            max_width=self.max_width,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
            embedding_initializer=(
                None if self.embedding_initializer is None
                else keras.initializers.serialize(self.embedding_initializer)
            ),
        )
        return config
