"""The same weights give the same outputs on TensorFlow and JAX (and PyTorch when installed)."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medattn import layers as L

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

CASES = [
    (L.ChannelAttention, {"reduction": 4}, [(2, 7, 9, 16)], False),
    (L.SpatialAttention, {"kernel_size": 7}, [(2, 7, 9, 16)], False),
    (L.CBAM, {"reduction": 4, "kernel_size": 5}, [(2, 7, 9, 16)], False),
    (L.SpatialChannelAttention, {"reduction": 2, "combine": "max"}, [(2, 7, 9, 16)], False),
    (L.SelfAttention2D, {"num_heads": 2}, [(2, 7, 9, 16)], True),
    (L.BidirectionalCrossAttention, {"dim": 16, "num_heads": 4, "output_mode": "both"},
     [(2, 7, 9, 24), (2, 3, 5, 12)], True),
    (L.CrossChannelFusion, {"filters": (4, 6)}, [(2, 8, 8, 3), (2, 2, 2, 5)], True),
    (L.GlobalPoolFusion, {"mode": "avgmax"}, [(2, 8, 8, 3), (2, 2, 2, 5)], False),
]


def _reference(tmp_path):
    rng = np.random.default_rng(0)
    blob, meta, expected = {}, [], {}
    for i, (cls, kw, shapes, training_arg) in enumerate(CASES):
        xs = [rng.normal(size=s).astype("float32") for s in shapes]
        is_list = len(shapes) > 1
        layer = cls(**kw)
        inp = xs if is_list else xs[0]
        y = layer(inp, training=False) if training_arg else layer(inp)
        # non-trivial BatchNorm statistics so inference mode is really compared
        weights = [np.asarray(w) + (0.1 * rng.normal(size=np.shape(w))).astype("float32") for w in layer.get_weights()]
        weights = [np.abs(w) + 0.5 if "variance" in v.path else w for w, v in zip(weights, layer.weights)]
        layer.set_weights(weights)
        y = layer(inp, training=False) if training_arg else layer(inp)
        ys = y if isinstance(y, (list, tuple)) else [y]
        for j, x in enumerate(xs):
            blob[f"c{i}_x{j}"] = x
        for j, w in enumerate(weights):
            blob[f"c{i}_w{j}"] = w
        for j, v in enumerate(ys):
            expected[f"c{i}_y{j}"] = np.asarray(v)
        meta.append({"cls": cls.__name__, "config": layer.get_config(), "n_inputs": len(xs), "is_list": is_list,
                     "n_weights": len(weights), "training_arg": training_arg})
    blob["cases"] = np.array(json.dumps(meta))
    path = tmp_path / "in.npz"
    np.savez(path, **blob)
    return path, expected


def _run_backend(backend, inp, out):
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2",
           "JAX_PLATFORMS": "cpu"}
    r = subprocess.run([sys.executable, str(HERE / "_backend_worker.py"), str(inp), str(out)], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return np.load(out)


@pytest.mark.subprocess
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_same_weights_same_outputs(backend, tmp_path):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    inp, expected = _reference(tmp_path)
    got = _run_backend(backend, inp, tmp_path / f"{backend}.npz")
    assert str(got["backend"]) == backend
    for key, ref in expected.items():
        np.testing.assert_allclose(got[key], ref, atol=1e-5, rtol=1e-5, err_msg=f"{key} ({backend})")
