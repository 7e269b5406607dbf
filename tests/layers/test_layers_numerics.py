"""Each gate against a NumPy reference computed from the layer's own weights."""

import numpy as np
import pytest

from medattn import layers as L


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def relu(z):
    return np.maximum(z, 0)


def conv2d_same(x, k, b=None):
    """Naive 'same' cross-correlation, x (n,h,w,c), k (kh,kw,c,o)."""
    kh, kw = k.shape[:2]
    xp = np.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    n, h, w, _ = x.shape
    out = np.zeros((n, h, w, k.shape[-1]))
    for i in range(h):
        for j in range(w):
            out[:, i, j] = np.einsum("nabc,abco->no", xp[:, i:i + kh, j:j + kw], k)
    return out + (0 if b is None else b)


def layer_norm(x, gamma, beta, eps):
    mu = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * gamma + beta


def mha(layer, q, kv):
    """NumPy multi-head attention with a keras MultiHeadAttention layer's weights."""
    w = {v.path.split("/")[-2] + "/" + v.path.split("/")[-1]: np.asarray(v) for v in layer.weights}
    Q = np.einsum("nsd,dhk->nshk", q, w["query/kernel"]) + w["query/bias"]
    K = np.einsum("nsd,dhk->nshk", kv, w["key/kernel"]) + w["key/bias"]
    V = np.einsum("nsd,dhk->nshk", kv, w["value/kernel"]) + w["value/bias"]
    scores = np.einsum("nqhk,nshk->nhqs", Q, K) / np.sqrt(Q.shape[-1])
    scores = np.exp(scores - scores.max(-1, keepdims=True))
    att = scores / scores.sum(-1, keepdims=True)
    ctx = np.einsum("nhqs,nshk->nqhk", att, V)
    return np.einsum("nqhk,hkd->nqd", ctx, w["attention_output/kernel"]) + w["attention_output/bias"]


@pytest.fixture
def x():
    return np.random.default_rng(0).normal(size=(2, 7, 9, 16)).astype("float32")


def test_channel_attention_matches_numpy(x):
    layer = L.ChannelAttention(reduction=4, return_gate=True)
    y, g = (np.asarray(t) for t in layer(x))
    w1, b1 = (np.asarray(v) for v in layer.mlp_hidden.weights)
    w2, b2 = (np.asarray(v) for v in layer.mlp_out.weights)

    def mlp(v):
        return relu(v @ w1 + b1) @ w2 + b2

    ref_g = sigmoid(mlp(x.mean((1, 2))) + mlp(x.max((1, 2))))[:, None, None, :]
    np.testing.assert_allclose(g, ref_g, atol=1e-5)
    np.testing.assert_allclose(y, x * ref_g, atol=1e-5)
    assert g.min() >= 0 and g.max() <= 1 and g.shape == (2, 1, 1, 16)


def test_spatial_attention_matches_numpy(x):
    layer = L.SpatialAttention(kernel_size=7, return_gate=True)
    y, g = (np.asarray(t) for t in layer(x))
    k, b = (np.asarray(v) for v in layer.conv.weights)
    desc = np.concatenate([x.mean(-1, keepdims=True), x.max(-1, keepdims=True)], -1)
    ref_g = sigmoid(conv2d_same(desc, k, b))
    np.testing.assert_allclose(g, ref_g, atol=1e-5)
    np.testing.assert_allclose(y, x * ref_g, atol=1e-5)
    assert g.shape == (2, 7, 9, 1) and 0 <= g.min() and g.max() <= 1


def test_cbam_is_channel_then_spatial(x):
    layer = L.CBAM(reduction=4, kernel_size=3)
    y = np.asarray(layer(x))
    ref = np.asarray(layer.spatial(layer.channel(x)))
    np.testing.assert_allclose(y, ref, atol=1e-6)
    # and the parallel order with residual is F + F * Mc(F) * Ms(F)
    par = L.CBAM(reduction=4, kernel_size=3, order="parallel", residual=True)
    yp = np.asarray(par(x))
    mc, ms = np.asarray(par.channel.gate(x)), np.asarray(par.spatial.gate(x))
    np.testing.assert_allclose(yp, x + x * mc * ms, atol=1e-5)


@pytest.mark.parametrize("combine", ["add", "max", "mul", "avg"])
def test_scse_matches_numpy(x, combine):
    layer = L.SpatialChannelAttention(reduction=2, combine=combine)
    y = np.asarray(layer(x))
    w1, b1 = (np.asarray(v) for v in layer.fc1.weights)
    w2, b2 = (np.asarray(v) for v in layer.fc2.weights)
    ks, bs = (np.asarray(v) for v in layer.spatial_conv.weights)
    cg = sigmoid(relu(x.mean((1, 2)) @ w1 + b1) @ w2 + b2)[:, None, None, :]
    sg = sigmoid(np.einsum("nhwc,co->nhwo", x, ks[0, 0]) + bs)
    uc, us = x * cg, x * sg
    ref = {"add": uc + us, "max": np.maximum(uc, us), "mul": uc * us, "avg": (uc + us) / 2}[combine]
    np.testing.assert_allclose(y, ref, atol=1e-5)
    g1, g2 = (np.asarray(t) for t in layer.gates(x))
    assert 0 <= g1.min() and g1.max() <= 1 and 0 <= g2.min() and g2.max() <= 1


def test_bidirectional_cross_attention_matches_numpy():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(2, 3, 5, 6)).astype("float32")
    b = rng.normal(size=(2, 2, 2, 4)).astype("float32")
    layer = L.BidirectionalCrossAttention(dim=8, num_heads=2, output_mode="both")
    ya, yb = (np.asarray(t) for t in layer([a, b]))
    ka, ba = (np.asarray(v) for v in layer.proj_a.weights)
    kb, bb = (np.asarray(v) for v in layer.proj_b.weights)
    ta = (np.einsum("nhwc,cd->nhwd", a, ka[0, 0]) + ba).reshape(2, 15, 8)
    tb = (np.einsum("nhwc,cd->nhwd", b, kb[0, 0]) + bb).reshape(2, 4, 8)
    ga, be_a = (np.asarray(v) for v in layer.norm_a.weights)
    gb, be_b = (np.asarray(v) for v in layer.norm_b.weights)
    ra = layer_norm(ta + mha(layer.attn_ab, ta, tb), ga, be_a, 1e-6)
    rb = layer_norm(tb + mha(layer.attn_ba, tb, ta), gb, be_b, 1e-6)
    np.testing.assert_allclose(ya, ra.reshape(2, 3, 5, 8), atol=1e-4)
    np.testing.assert_allclose(yb, rb.reshape(2, 2, 2, 8), atol=1e-4)


def test_self_attention_matches_numpy():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 3, 5, 8)).astype("float32")
    layer = L.SelfAttention2D(num_heads=2)
    y = np.asarray(layer(x))
    t = x.reshape(2, 15, 8) + np.asarray(layer.pos)[None]
    g, be = (np.asarray(v) for v in layer.norm.weights)
    ref = layer_norm(t + mha(layer.mha, t, t), g, be, 1e-6).reshape(2, 3, 5, 8)
    np.testing.assert_allclose(y, ref, atol=1e-4)


def test_fusions_match_numpy():
    rng = np.random.default_rng(3)
    maps = [rng.normal(size=(2, 8, 8, 3)).astype("float32"), rng.normal(size=(2, 2, 2, 5)).astype("float32")]
    z = np.asarray(L.GlobalPoolFusion()(maps))
    np.testing.assert_allclose(z, np.concatenate([m.mean((1, 2)) for m in maps], -1), atol=1e-6)
    f = L.CrossChannelFusion(filters=(4, 6), batch_norm=False)  # pools 4 and 1 for a 2x2 grid
    out = np.asarray(f(maps))
    k0, b0 = (np.asarray(v) for v in f.convs[0].weights)
    k1, b1 = (np.asarray(v) for v in f.convs[1].weights)
    p0 = maps[0].reshape(2, 2, 4, 2, 4, 3).mean((2, 4))
    ref0 = relu(np.einsum("nhwc,co->nhwo", p0, k0[0, 0]) + b0).mean((1, 2))
    ref1 = relu(np.einsum("nhwc,co->nhwo", maps[1], k1[0, 0]) + b1).mean((1, 2))
    np.testing.assert_allclose(out, np.concatenate([ref0, ref1], -1), atol=1e-5)
    assert f._pools == (4, 1)


@pytest.mark.parametrize("dtype", ["float32", "mixed_bfloat16"])
def test_cross_attention_layer_norm_equals_keras_layer_normalization(dtype):
    """The written-out LayerNorm of BidirectionalCrossAttention (kept for speed) computes what the Keras layer
    whose weights it uses computes, with trained (non-trivial) gamma and beta, in float32 and bfloat16."""
    import keras

    from medattn.layers.bidirectional_cross_attention import _layer_norm

    rng = np.random.default_rng(4)
    norm = keras.layers.LayerNormalization(epsilon=1e-6, dtype=dtype)
    t = rng.normal(2.0, 3.0, size=(2, 5, 8)).astype("float32")
    norm.build(t.shape)
    norm.gamma.assign(rng.normal(size=8))
    norm.beta.assign(rng.normal(size=8))
    x = keras.ops.cast(t, norm.compute_dtype)
    ours, ref = (np.asarray(keras.ops.cast(v, "float32")) for v in (_layer_norm(norm, x), norm(x)))
    np.testing.assert_allclose(ours, ref, atol=1e-5 if dtype == "float32" else 3e-2)
