import keras
import numpy as np
import pytest
from layer_checks import run_layer_checks

from tfmood.deploy.runtime import run as run_tflite
from tfmood.layers import AttentionAugmentedConv2D
from tfmood.models.vggish import VGGishConfig, build_model


def numpy_conv_same(x, kernel, bias):
    """'same' convolution of (B, H, W, C) with a (k, k, C, F) kernel, by explicit shifts."""
    size = kernel.shape[0]
    pad = size // 2
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    height, width = x.shape[1:3]
    out = np.zeros(x.shape[:3] + (kernel.shape[-1],))
    for row in range(size):
        for col in range(size):
            out += padded[:, row : row + height, col : col + width, :] @ kernel[row, col]
    return out + bias


def reference_augmented(x, weights, heads, dk, dv, max_height, max_width):
    """Attention-augmented convolution written position pair by position pair.

    Logit of query (i, j) against key (u, v): q . k + q . rel_h[u - i] + q . rel_w[v - j], the
    distances clipped to the largest one with an embedding.
    """
    conv_kernel, conv_bias, qkv_kernel, qkv_bias, out_kernel, out_bias, rel_h, rel_w = weights
    batch, height, width, _ = x.shape
    depth_k, depth_v = dk // heads, dv // heads
    qkv = x @ qkv_kernel[0, 0] + qkv_bias
    q = qkv[..., :dk] * depth_k**-0.5
    k = qkv[..., dk : 2 * dk]
    v = qkv[..., 2 * dk :]
    rows, cols = np.divmod(np.arange(height * width), width)
    dist_h = np.clip(rows[None, :] - rows[:, None], -(max_height - 1), max_height - 1)
    dist_w = np.clip(cols[None, :] - cols[:, None], -(max_width - 1), max_width - 1)
    emb_h = rel_h[dist_h + max_height - 1]  # (query, key, depth)
    emb_w = rel_w[dist_w + max_width - 1]
    attention = np.zeros((batch, height * width, dv))
    for b in range(batch):
        for n in range(heads):
            qn = q[b].reshape(-1, dk)[:, n * depth_k : (n + 1) * depth_k]
            kn = k[b].reshape(-1, dk)[:, n * depth_k : (n + 1) * depth_k]
            vn = v[b].reshape(-1, dv)[:, n * depth_v : (n + 1) * depth_v]
            logits = qn @ kn.T + np.einsum("qd,qkd->qk", qn, emb_h + emb_w)
            probs = np.exp(logits - logits.max(-1, keepdims=True))
            probs /= probs.sum(-1, keepdims=True)
            attention[b, :, n * depth_v : (n + 1) * depth_v] = probs @ vn
    attention = attention.reshape(batch, height, width, dv) @ out_kernel[0, 0] + out_bias
    if conv_kernel is None:
        return attention
    return np.concatenate([numpy_conv_same(x, conv_kernel, conv_bias), attention], axis=-1)


def paper_relative_logits(q, rel_h, rel_w):
    """numpy port of the paper's relative logits (rel_to_abs trick), q (B, Nh, H, W, d)."""

    def rel_to_abs(x):
        batch, heads, length, _ = x.shape
        x = np.concatenate([x, np.zeros((batch, heads, length, 1))], axis=3)
        flat = x.reshape(batch, heads, length * 2 * length)
        flat = np.concatenate([flat, np.zeros((batch, heads, length - 1))], axis=2)
        return flat.reshape(batch, heads, length + 1, 2 * length - 1)[:, :, :length, length - 1 :]

    def relative_logits_1d(q, rel_k, height, width, heads, transpose_mask):
        logits = np.einsum("bhxyd,md->bhxym", q, rel_k)
        logits = logits.reshape(-1, heads * height, width, 2 * width - 1)
        logits = rel_to_abs(logits).reshape(-1, heads, height, width, width)
        logits = np.tile(logits[:, :, :, None], (1, 1, 1, height, 1, 1))
        logits = np.transpose(logits, transpose_mask)
        return logits.reshape(-1, heads, height * width, height * width)

    _, heads, height, width, _ = q.shape
    logits_w = relative_logits_1d(q, rel_w, height, width, heads, (0, 1, 2, 4, 3, 5))
    q_t = np.transpose(q, (0, 1, 3, 2, 4))
    logits_h = relative_logits_1d(q_t, rel_h, width, height, heads, (0, 1, 4, 2, 5, 3))
    return logits_h + logits_w


def random_weights(layer, rng):
    weights = [rng.normal(scale=0.5, size=w.shape).astype("float32") for w in layer.weights]
    layer.set_weights(weights)
    return weights


@pytest.mark.parametrize(
    "kwargs, shape",
    [
        (dict(filters=16, dk=8, dv=4, heads=2), (5, 7)),
        (dict(filters=12, dk=6, dv=6, heads=3, max_height=3, max_width=4), (5, 7)),  # clipped
        (dict(filters=8, dk=4, dv=8, heads=4), (3, 4)),  # fully attentional
        (dict(filters=8, dk=4, dv=4, heads=1), (1, 1)),
    ],
)
def test_matches_numpy_reference(kwargs, shape):
    rng = np.random.default_rng(0)
    layer = AttentionAugmentedConv2D(**kwargs)
    x = rng.normal(size=(2,) + shape + (3,)).astype("float32")
    layer(x)
    weights = random_weights(layer, rng)
    if layer.conv_filters == 0:
        weights = [None, None] + weights
    expected = reference_augmented(
        x.astype("float64"), [None if w is None else w.astype("float64") for w in weights],
        layer.heads, layer.dk, layer.dv, layer.max_height, layer.max_width,
    )
    np.testing.assert_allclose(np.asarray(layer(x)), expected, atol=2e-4)


def test_relative_logits_follow_the_paper_rel_to_abs():
    rng = np.random.default_rng(1)
    heads, height, width, depth = 2, 4, 6, 3
    q = rng.normal(size=(2, heads, height, width, depth))
    rel_h = rng.normal(size=(2 * height - 1, depth))
    rel_w = rng.normal(size=(2 * width - 1, depth))
    layer = AttentionAugmentedConv2D(8, dk=heads * depth, dv=heads, heads=heads)
    layer.build((None, height, width, 1))
    layer.rel_h.assign(rel_h.astype("float32"))
    layer.rel_w.assign(rel_w.astype("float32"))
    zeros = np.zeros_like(q, dtype="float32")
    logits = layer._attention_logits(q.astype("float32"), zeros, height, width)
    np.testing.assert_allclose(
        np.asarray(logits), paper_relative_logits(q, rel_h, rel_w), atol=1e-4
    )


def test_layer_checks(tmp_path):
    kwargs = dict(filters=8, dk=4, dv=4, heads=2)
    run_layer_checks(AttentionAugmentedConv2D, kwargs, (4, 5, 3), (4, 5, 8), 8, tmp_path)


def test_depths_from_fractions_and_config():
    layer = AttentionAugmentedConv2D(128, heads=8)  # kappa 0.2, nu 0.1 rounded to heads
    assert (layer.dk, layer.dv, layer.conv_filters) == (24, 16, 112)
    layer.build((None, 24, 87, 128))
    assert tuple(layer.rel_h.shape) == (47, 3) and tuple(layer.rel_w.shape) == (173, 3)
    config = layer.get_config()
    assert config["max_height"] == 24 and config["max_width"] == 87 and config["dk"] == 24


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(filters=0), "filters"),
        (dict(filters=8, kernel_size=2), "kernel_size"),
        (dict(filters=8, heads=0), "heads"),
        (dict(filters=8, dk=3, heads=2), "dk"),
        (dict(filters=8, dv=3, dk=4, heads=2), "dv"),
        (dict(filters=8, dv=10, dk=4, heads=2), "at most filters"),
        (dict(filters=8, kappa=1.5), "kappa"),
        (dict(filters=8, max_width=0), "max_width"),
    ],
)
def test_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AttentionAugmentedConv2D(**kwargs)


def test_unknown_extent_needs_a_maximum():
    with pytest.raises(ValueError, match="max_width"):
        AttentionAugmentedConv2D(8, dk=4, dv=4, heads=2)(keras.Input((5, None, 3)))
    layer = AttentionAugmentedConv2D(8, dk=4, dv=4, heads=2, max_width=6)
    model = keras.Sequential([keras.Input((5, None, 3)), layer])
    # Wider than max_width: distances beyond 5 share the edge embedding.
    assert model(np.ones((1, 5, 11, 3), "float32")).shape == (1, 5, 11, 8)


def test_count_macs_and_activation_bytes_by_hand():
    layer = AttentionAugmentedConv2D(16, dk=8, dv=4, heads=2)
    height, width, channels = 6, 10, 3
    positions = 60
    conv = positions * 12 * channels * 9
    qkv = positions * channels * 20
    content = positions * positions * 8  # q . k for every pair, all heads
    relative = positions * (height + width) * 8
    weighted = positions * positions * 4
    output = positions * 4 * 4
    expected = conv + qkv + content + relative + weighted + output
    assert layer.count_macs((height, width, channels)) == expected
    assert layer.count_activation_bytes((height, width, channels)) == 2 * 2 * 60 * 60 * 4


def test_vggish_block_and_tflite_builtins():
    import tensorflow as tf

    layers = ("conv", "conv", "conv", "augmented", "conv")
    model = build_model(VGGishConfig(layers=layers, width=0.25, n_frames=320))
    layer = model.get_layer("conv_4")
    assert isinstance(layer, AttentionAugmentedConv2D)
    # Block 4 sees 96 / 8 x 320 / 64 positions; heads default to the paper's 8.
    assert layer.heads == 8 and (layer.max_height, layer.max_width) == (12, 5)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    x = np.random.default_rng(2).normal(-40, 20, size=(1, 96, 320)).astype("float32")
    got = run_tflite(converter.convert(), x)
    np.testing.assert_allclose(got, model.predict(x, verbose=0), atol=1e-5)
