"""SyncBatchNormalization's fused training path on one device (FusedBatchNormV3) against numpy:
outputs, gradients and moving statistics, also with unknown spatial sizes and under bf16."""

import keras
import numpy as np
import tensorflow as tf

from tfmood.layers import SyncBatchNormalization

EPSILON, MOMENTUM = 1e-5, 0.8


def numpy_batch_norm(x, gamma, beta, upstream):
    """Training-mode batch norm over all but the last axis and the gradients of
    sum(outputs * upstream), from the textbook formulas (biased batch variance)."""
    axes = tuple(range(x.ndim - 1))
    mean, variance = x.mean(axis=axes), x.var(axis=axes)
    inverse = 1.0 / np.sqrt(variance + EPSILON)
    normalised = (x - mean) * inverse
    outputs = gamma * normalised + beta
    d_beta = upstream.sum(axis=axes)
    d_gamma = (upstream * normalised).sum(axis=axes)
    d_x = (
        gamma
        * inverse
        * (
            upstream
            - upstream.mean(axis=axes)
            - normalised * (upstream * normalised).mean(axis=axes)
        )
    )
    return outputs, mean, variance, (d_x, d_gamma, d_beta)


def op_types(layer, shape, training: bool) -> set:
    """The op types of the graph of one call of `layer` on a float32 input of `shape`."""
    call = tf.function(lambda x: layer(x, training=training))
    graph = call.get_concrete_function(tf.TensorSpec(shape, tf.float32)).graph
    return {op.type for op in graph.get_operations()}


def layer_with_weights(channels: int, rng) -> SyncBatchNormalization:
    layer = SyncBatchNormalization(epsilon=EPSILON, momentum=MOMENTUM)
    layer.build((None, None, None, channels))
    layer.gamma.assign(rng.uniform(0.5, 2.0, channels).astype("float32"))
    layer.beta.assign(rng.normal(size=channels).astype("float32"))
    layer.moving_mean.assign(rng.normal(size=channels).astype("float32"))
    layer.moving_variance.assign(rng.uniform(0.5, 2.0, channels).astype("float32"))
    return layer


def test_fused_training_step_equals_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, (4, 6, 7, 5)).astype("float32")
    upstream = rng.normal(size=x.shape).astype("float32")
    layer = layer_with_weights(5, rng)
    gamma, beta = layer.gamma.numpy(), layer.beta.numpy()
    moving = layer.moving_mean.numpy(), layer.moving_variance.numpy()
    assert "FusedBatchNormV3" in op_types(layer, (None, None, None, 5), training=True)
    assert "FusedBatchNormV3" not in op_types(layer, (None, None, None, 5), training=False)
    inputs = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        outputs = layer(inputs, training=True)
        loss = tf.reduce_sum(outputs * upstream)
    gradients = tape.gradient(loss, [inputs, layer.gamma, layer.beta])

    expected, mean, variance, expected_gradients = numpy_batch_norm(x, gamma, beta, upstream)
    np.testing.assert_allclose(outputs, expected, atol=2e-5)
    for gradient, reference in zip(gradients, expected_gradients, strict=True):
        np.testing.assert_allclose(gradient, reference, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(
        layer.moving_mean, MOMENTUM * moving[0] + (1 - MOMENTUM) * mean, rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        layer.moving_variance, MOMENTUM * moving[1] + (1 - MOMENTUM) * variance, rtol=1e-5
    )


def test_fused_path_in_a_graph_of_unknown_spatial_size():
    rng = np.random.default_rng(1)
    layer = layer_with_weights(3, rng)
    gamma, beta = layer.gamma.numpy(), layer.beta.numpy()
    call = tf.function(
        lambda x: layer(x, training=True),
        input_signature=[tf.TensorSpec((None, None, None, 3), tf.float32)],
    )
    x = rng.normal(-1.0, 4.0, (2, 5, 9, 3)).astype("float32")
    expected = numpy_batch_norm(x, gamma, beta, np.zeros_like(x))[0]
    np.testing.assert_allclose(call(tf.constant(x)), expected, atol=2e-5)


def test_inference_and_other_ranks_keep_keras_path():
    rng = np.random.default_rng(2)
    image_layer = layer_with_weights(4, rng)
    x = rng.normal(size=(3, 2, 2, 4)).astype("float32")
    mean, variance = image_layer.moving_mean.numpy(), image_layer.moving_variance.numpy()
    gamma, beta = image_layer.gamma.numpy(), image_layer.beta.numpy()
    expected = (x - mean) / np.sqrt(variance + EPSILON) * gamma + beta
    np.testing.assert_allclose(image_layer(x, training=False), expected, atol=1e-5)

    vector_layer = SyncBatchNormalization(epsilon=EPSILON, momentum=MOMENTUM)
    vector_layer.build((None, 4))
    assert "FusedBatchNormV3" not in op_types(vector_layer, (None, 4), training=True)
    vectors = rng.normal(size=(6, 4)).astype("float32")
    expected = numpy_batch_norm(vectors, np.ones(4), np.zeros(4), np.zeros_like(vectors))[0]
    np.testing.assert_allclose(vector_layer(vectors, training=True), expected, atol=1e-5)


def test_fused_path_under_bf16_keeps_float32_statistics():
    rng = np.random.default_rng(3)
    layer = SyncBatchNormalization(epsilon=EPSILON, momentum=MOMENTUM, dtype="mixed_bfloat16")
    x = rng.normal(2.0, 3.0, (4, 5, 6, 3)).astype("float32")
    outputs = layer(x, training=True)
    assert outputs.dtype == "bfloat16"
    assert {variable.dtype for variable in layer.weights} == {"float32"}
    rounded = keras.ops.convert_to_numpy(keras.ops.cast(keras.ops.cast(x, "bfloat16"), "float32"))
    expected = numpy_batch_norm(rounded, np.ones(3), np.zeros(3), np.zeros_like(x))[0]
    np.testing.assert_allclose(np.asarray(outputs, dtype="float32"), expected, atol=0.03)
    np.testing.assert_allclose(
        layer.moving_mean, (1 - MOMENTUM) * rounded.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6
    )
