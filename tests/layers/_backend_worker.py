"""Run a layer on the backend named by KERAS_BACKEND with weights and inputs from an .npz; write outputs.

Usage: KERAS_BACKEND=jax python _backend_worker.py IN.npz OUT.npz
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from medattn import layers as L  # noqa: E402

src = np.load(sys.argv[1], allow_pickle=False)
cases = json.loads(str(src["cases"]))
out = {}
for i, case in enumerate(cases):
    cls = getattr(L, case["cls"])
    layer = cls.from_config(case["config"])
    n_in = case["n_inputs"]
    xs = [src[f"c{i}_x{j}"] for j in range(n_in)]
    inp = xs if case["is_list"] else xs[0]
    layer(inp)  # build
    layer.set_weights([src[f"c{i}_w{j}"] for j in range(case["n_weights"])])
    y = layer(inp, training=False) if case["training_arg"] else layer(inp)
    ys = y if isinstance(y, (list, tuple)) else [y]
    for j, v in enumerate(ys):
        out[f"c{i}_y{j}"] = np.asarray(keras.ops.convert_to_numpy(v))
out["backend"] = np.array(keras.backend.backend())
np.savez(sys.argv[2], **out)
