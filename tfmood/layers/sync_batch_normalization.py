import keras
import tensorflow as tf

from tfmood import compat


@keras.saving.register_keras_serializable(package="tfmood")
class SyncBatchNormalization(keras.layers.BatchNormalization):
    """BatchNormalization whose training statistics are those of the global batch.

    Under a `tf.distribute` strategy with several replicas, each replica's per-channel sums,
    squared sums and element count travel in one vector through one all-reduce per layer. Keras's
    own `synchronized=True` issues three independent all-reduces per layer (sums, squared sums,
    counts); nothing orders them within a step, so two replicas can pair different collectives
    and the step aborts ("Shape mismatch in the collective instance") or hangs. With one
    collective per layer, the layers' data dependencies order every collective of the step the
    same way on every replica.

    Outside a strategy, with one replica, or with a mask, it is `keras.layers.BatchNormalization`.

    Args:
        **kwargs: passed to `keras.layers.BatchNormalization` (`synchronized` must stay False:
            this layer synchronises by itself).

    Call arguments:
        inputs: a tensor whose last axis holds the channels.
        training: whether to normalise with the batch statistics and update the moving ones.

    Example:
    >>> layer = SyncBatchNormalization(epsilon=1e-5)
    >>> layer(keras.ops.ones((2, 4, 4, 3)), training=True).shape
    (2, 4, 4, 3)

    Reference:
        Ioffe and Szegedy, "Batch Normalization", 2015 (arXiv:1502.03167); the statistics of the
        global batch as in Zhang et al., "Context Encoding for Semantic Segmentation", 2018.
    """

    def __init__(self, **kwargs):
        if kwargs.get("synchronized"):
            raise ValueError(
                "SyncBatchNormalization synchronises by itself; got synchronized=True, which "
                "would add Keras's unordered all-reduces"
            )
        super().__init__(**kwargs)
        compat.check("batch_norm_moments")

    def _moments(self, inputs, mask):
        context = tf.distribute.get_replica_context()
        if mask is not None or context is None or context.num_replicas_in_sync == 1:
            return super()._moments(inputs, mask)
        return global_moments(inputs, self._reduction_axes, context)


def global_moments(inputs, axes, context):
    """Mean and variance over `axes` of the inputs of every replica, with one all-reduce.

    Args:
        inputs: this replica's float32 inputs.
        axes: the reduction axes (all but the channel axis).
        context: the replica context whose replicas share the statistics.

    Returns:
        (mean, variance), each of the channel shape.
    """
    sums = tf.reduce_sum(inputs, axis=axes)
    squares = tf.reduce_sum(tf.square(inputs), axis=axes)
    count = tf.cast(tf.size(inputs) // tf.size(sums), inputs.dtype)
    channels = sums.shape[0]
    local = tf.concat([sums, squares, tf.reshape(count, [1])], axis=0)
    total = context.all_reduce(tf.distribute.ReduceOp.SUM, local)
    total_sums, total_squares, total_count = tf.split(total, [channels, channels, 1])
    mean = total_sums / total_count
    # E[x^2] - E[x]^2 from the global sums, clipped at 0 against rounding.
    variance = tf.maximum(total_squares / total_count - tf.square(mean), 0.0)
    return mean, variance
