import keras
from keras import ops


@keras.saving.register_keras_serializable(package="tfmood")
class AReLU(keras.layers.Layer):
    """Attention-based rectified linear unit with two learnable scalars.

    `y = (1 + sigmoid(beta)) * relu(x) - clip(alpha, 0.01, 0.99) * relu(-x)`: the positive part
    is amplified and the negative part kept with a learned small slope.

    Args:
        alpha_initializer: initial value of `alpha` (the negative-part slope before clipping).
        beta_initializer: initial value of `beta` (the positive-part gain before `1 + sigmoid`).
        **kwargs: passed to `keras.layers.Layer`.

    Call arguments:
        inputs: a tensor of any shape.

    Example:
    >>> layer = AReLU()
    >>> layer(keras.ops.convert_to_tensor([[-1.0, 2.0]])).shape
    (1, 2)

    Reference:
        Chen, Li and Xu, "AReLU: Attention-based Rectified Linear Unit", 2020 (arXiv:2006.13858).
    """

    def __init__(self, alpha_initializer: float = 0.90, beta_initializer: float = 2.0, **kwargs):
        super().__init__(**kwargs)
        self.alpha_initializer = float(alpha_initializer)
        self.beta_initializer = float(beta_initializer)

    def build(self, input_shape):
        self.alpha = self.add_weight(
            name="alpha",
            shape=(),
            initializer=keras.initializers.Constant(self.alpha_initializer),
        )
        self.beta = self.add_weight(
            name="beta",
            shape=(),
            initializer=keras.initializers.Constant(self.beta_initializer),
        )
        self.built = True

    def effective_slopes(self):
        """The clipped `alpha'` and the gain `beta' = 1 + sigmoid(beta)` actually applied."""
        alpha = ops.clip(self.alpha, 0.01, 0.99)
        beta = 1.0 + ops.sigmoid(self.beta)
        return alpha, beta

    def call(self, inputs):
        alpha, beta = self.effective_slopes()
        return beta * ops.relu(inputs) - alpha * ops.relu(-inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            alpha_initializer=self.alpha_initializer,
            beta_initializer=self.beta_initializer,
        )
        return config
