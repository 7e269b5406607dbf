"""Worker for the partial-batch test: ``python _partial_batch_worker.py OUT.json`` on two logical CPU replicas.

Nine images in batches of eight leave a final batch of one, which TensorFlow would hand to one replica only (the
other gets an empty batch and the convolution / BatchNorm fails).
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["MEDATTN_CPU_REPLICAS"] = "2"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from medattn.training import fit, get_strategy, set_seed  # noqa: E402

strategy = get_strategy("mirrored")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from medattn.datasets.pipeline import array_dataset  # noqa: E402
from medattn.evaluation.uncertainty import mc_predict  # noqa: E402
from medattn.training.custom_loop import predict  # noqa: E402

set_seed(0)
with strategy.scope():
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3), keras.layers.BatchNormalization(),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
rng = np.random.default_rng(0)
x = rng.random((9, 8, 8, 3)).astype("float32")
y = np.arange(9) % 2
res = fit(model, lambda e: array_dataset(x, y, 8, shuffle=True, epoch=e), epochs=2, strategy=strategy, batch_size=8,
          ckpt_dir=os.path.join(os.path.dirname(sys.argv[1]), "ckpt"), validation_data=array_dataset(x, y, 8),
          verbose=0, restore_best=False)
p_ds = predict(model, array_dataset(x, None, 8), 8)
p_arr = predict(model, x, 8)
p_one = predict(model, x[:1], 8)  # fewer images than replicas: one device predicts
mc = mc_predict(model, x, passes=2, batch_size=8)
with open(sys.argv[1], "w") as f:
    json.dump({"replicas": strategy.num_replicas_in_sync, "epochs": len(res["history"]),
               "val_accuracy": res["history"][-1]["val_accuracy"],
               "accuracy_from_predict": float((p_ds.argmax(1) == y).mean()),
               "predict_rows": len(p_ds), "same": bool(np.allclose(p_ds, p_arr, atol=1e-5)),
               "first_row_alone": bool(np.allclose(p_one[0], p_arr[0], atol=1e-5)),
               "mc_rows": len(mc["mean"])}, f)
