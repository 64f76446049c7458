from functools import partial

import numpy as np
import pytest
from layer_checks import run_layer_checks

from tfmood.layers import AReLU, LocalSelfAttention


def reference_arelu(x, alpha, beta):
    alpha = np.clip(alpha, 0.01, 0.99)
    beta = 1.0 + 1.0 / (1.0 + np.exp(-beta))
    return beta * np.maximum(x, 0) - alpha * np.maximum(-x, 0)


def reference_attention(x, wq, wk, wv, rel_h, rel_w, heads=None):
    """numpy port of the released PyTorch AttentionConv (NCHW, unfold into 3x3 patches)."""
    x = np.transpose(x, (0, 3, 1, 2))  # NHWC -> NCHW
    batch, _, height, width = x.shape
    channels = wq.shape[1]
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    q = np.einsum("bihw,ic->bchw", x, wq)
    k = np.einsum("bihw,ic->bchw", padded, wk)
    v = np.einsum("bihw,ic->bchw", padded, wv)
    # unfold(2, 3, 1).unfold(3, 3, 1): (B, C, H, W, 3, 3)
    k_patches = np.stack([np.stack([k[:, :, r:r + height, c:c + width] for c in range(3)], -1)
                          for r in range(3)], -2)
    v_patches = np.stack([np.stack([v[:, :, r:r + height, c:c + width] for c in range(3)], -1)
                          for r in range(3)], -2)
    half = channels // 2
    k_patches[:, :half] += rel_h[None, :, None, None, :, None]
    k_patches[:, half:] += rel_w[None, :, None, None, None, :]
    k_flat = k_patches.reshape(batch, channels, height, width, 9)
    v_flat = v_patches.reshape(batch, channels, height, width, 9)
    logits = q[..., None] * k_flat
    if heads is not None:
        size = channels // heads
        logits = logits.reshape(batch, heads, size, height, width, 9).sum(2, keepdims=True)
        logits = np.repeat(logits, size, axis=2).reshape(batch, channels, height, width, 9)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    out = (weights * v_flat).sum(-1)
    return np.transpose(out, (0, 2, 3, 1))


def test_arelu_matches_formula():
    layer = AReLU(alpha_initializer=0.3, beta_initializer=-0.5)
    x = np.linspace(-3, 3, 13, dtype="float32").reshape(1, 13)
    np.testing.assert_allclose(layer(x), reference_arelu(x, 0.3, -0.5), rtol=1e-6)


def test_arelu_clips_alpha_and_uses_paper_initial_values():
    layer = AReLU()
    x = np.array([[-2.0, 1.0]], dtype="float32")
    y = np.asarray(layer(x))
    assert float(layer.alpha.numpy()) == pytest.approx(0.90)
    assert float(layer.beta.numpy()) == pytest.approx(2.0)
    gain = 1 + 1 / (1 + np.exp(-2.0))
    np.testing.assert_allclose(y, [[-2.0 * 0.90, gain]], rtol=1e-6)
    layer.alpha.assign(5.0)
    assert float(np.asarray(layer(x))[0, 0]) == pytest.approx(-2.0 * 0.99)


def test_arelu_layer_checks(tmp_path):
    run_layer_checks(AReLU, {}, (4, 5, 3), (4, 5, 3), 2, tmp_path)


@pytest.mark.parametrize("heads", [None, 1, 4])
@pytest.mark.parametrize("shape", [(5, 7), (1, 1), (2, 9)])
def test_local_self_attention_matches_reference(heads, shape):
    rng = np.random.default_rng(1)
    in_channels, channels = 3, 8
    layer = LocalSelfAttention(channels, heads=heads)
    x = rng.normal(size=(2,) + shape + (in_channels,)).astype("float32")
    layer(x)
    wq, wk, wv = (rng.normal(size=(in_channels, channels)).astype("float32") for _ in range(3))
    rel_h, rel_w = (rng.normal(size=(channels // 2, 3)).astype("float32") for _ in range(2))
    layer.set_weights([w.reshape(1, 1, in_channels, channels) for w in (wq, wk, wv)]
                      + [rel_h, rel_w])
    expected = reference_attention(x, wq, wk, wv, rel_h, rel_w, heads)
    np.testing.assert_allclose(np.asarray(layer(x)), expected, atol=1e-5)


def numerical_vjp(function, arrays, cotangent, eps=1e-6):
    """Gradients of sum(cotangent * function(*arrays)) by central differences, in float64."""
    grads = []
    for index, array in enumerate(arrays):
        grad = np.zeros_like(array)
        for position in np.ndindex(array.shape):
            shifted = [a.copy() for a in arrays]
            shifted[index][position] += eps
            plus = np.sum(cotangent * function(*shifted))
            shifted[index][position] -= 2 * eps
            minus = np.sum(cotangent * function(*shifted))
            grad[position] = (plus - minus) / (2 * eps)
        grads.append(grad)
    return grads


@pytest.mark.parametrize("heads", [None, 2])
@pytest.mark.parametrize("shape", [(4, 5), (1, 1), (2, 3)])
def test_local_self_attention_gradients_match_finite_differences(heads, shape):
    import tensorflow as tf

    rng = np.random.default_rng(2)
    in_channels, channels = 3, 4
    x = rng.normal(size=(2,) + shape + (in_channels,))
    wq, wk, wv = (rng.normal(size=(in_channels, channels)) for _ in range(3))
    rel_h, rel_w = (rng.normal(size=(channels // 2, 3)) for _ in range(2))
    cotangent = rng.normal(size=(2,) + shape + (channels,))
    arrays = [x, wq, wk, wv, rel_h, rel_w]
    expected = numerical_vjp(partial(reference_attention, heads=heads), arrays, cotangent)

    layer = LocalSelfAttention(channels, heads=heads)
    layer.build((None, None, None, in_channels))
    layer.set_weights([w.reshape(1, 1, in_channels, channels).astype("float32")
                       for w in (wq, wk, wv)] + [rel_h.astype("float32"), rel_w.astype("float32")])
    inputs = tf.constant(x, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        loss = tf.reduce_sum(tf.constant(cotangent, tf.float32) * layer(inputs))
    variables = [layer.query_kernel, layer.key_kernel, layer.value_kernel, layer.rel_h,
                 layer.rel_w]
    grads = tape.gradient(loss, [inputs] + [v.value for v in variables])
    for name, grad, want in zip(["x", "wq", "wk", "wv", "rel_h", "rel_w"], grads, expected):
        assert np.abs(want).max() > 1e-3, name  # the comparison below is not vacuous
        np.testing.assert_allclose(np.asarray(grad).reshape(want.shape), want, rtol=1e-4,
                                   atol=1e-4 * np.abs(want).max(), err_msg=name)


def test_local_self_attention_softmax_is_stable_for_large_logits():
    rng = np.random.default_rng(3)
    layer = LocalSelfAttention(4)
    x = rng.normal(size=(1, 3, 4, 2)).astype("float32")
    layer(x)
    wq, wk, wv = (30 * rng.normal(size=(2, 4)).astype("float32") for _ in range(3))
    rel_h, rel_w = (rng.normal(size=(2, 3)).astype("float32") for _ in range(2))
    layer.set_weights([w.reshape(1, 1, 2, 4) for w in (wq, wk, wv)] + [rel_h, rel_w])
    expected = reference_attention(x.astype("float64"), wq, wk, wv, rel_h, rel_w)
    outputs = np.asarray(layer(x))
    assert np.isfinite(outputs).all()
    np.testing.assert_allclose(outputs, expected, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("heads", [None, 2])
def test_local_self_attention_converts_to_tflite_builtins(heads):
    import keras

    from tfmood.deploy import convert, runtime

    rng = np.random.default_rng(4)
    inputs = keras.Input((5, 6, 3), batch_size=1)
    layer = LocalSelfAttention(8, heads=heads)
    model = keras.Model(inputs, layer(inputs))
    wq, wk, wv = (rng.normal(size=(3, 8)).astype("float32") for _ in range(3))
    rel_h, rel_w = (rng.normal(size=(4, 3)).astype("float32") for _ in range(2))
    layer.set_weights([w.reshape(1, 1, 3, 8) for w in (wq, wk, wv)] + [rel_h, rel_w])
    flatbuffer = convert.convert(model, "float32", rewrite=False)  # raises on non-builtin ops
    x = rng.normal(size=(1, 5, 6, 3)).astype("float32")
    expected = reference_attention(x, wq, wk, wv, rel_h, rel_w, heads)
    np.testing.assert_allclose(runtime.run(flatbuffer, x), expected, atol=1e-5)


def test_local_self_attention_parameter_count_is_independent_of_heads():
    x = np.zeros((1, 4, 4, 16), "float32")
    counts = []
    for heads in (None, 2, 8):
        layer = LocalSelfAttention(32, heads=heads)
        layer(x)
        counts.append(sum(int(np.prod(w.shape)) for w in layer.trainable_weights))
    assert counts == [3 * 16 * 32 + 2 * 16 * 3] * 3


@pytest.mark.parametrize("kwargs, message", [
    ({"filters": 7}, "even"),
    ({"filters": 8, "kernel_size": 2}, "odd"),
    ({"filters": 8, "heads": 3}, "divisor"),
])
def test_local_self_attention_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LocalSelfAttention(**kwargs)


@pytest.mark.parametrize("heads", [None, 2])
def test_local_self_attention_layer_checks(tmp_path, heads):
    run_layer_checks(LocalSelfAttention, {"filters": 6, "heads": heads}, (5, 7, 3), (5, 7, 6),
                     5, tmp_path, atol=1e-5)


def test_local_self_attention_counts_its_backward_working_set():
    # Keys, values and softmax scores of the 3 x 3 neighbourhood: 9 of each per output value.
    layer = LocalSelfAttention(filters=8, kernel_size=3)
    assert layer.count_activation_bytes((10, 20, 4)) == 3 * 9 * 10 * 20 * 8 * 4
    assert layer.count_activation_bytes((10, 20, 4), dtype_bytes=2) == 3 * 9 * 10 * 20 * 8 * 2


def test_every_layer_is_registered_for_loading_in_a_fresh_process():
    import subprocess
    import sys

    import tfmood.layers

    code = (
        "import keras, tfmood.layers as L\n"
        "for name in L.__all__:\n"
        "    assert keras.saving.get_registered_object('tfmood>' + name) is getattr(L, name), name\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert {"ExportLocalSelfAttention", "LogMel"} <= set(tfmood.layers.__all__)
