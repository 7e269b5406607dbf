"""Worker for the distributed tests: ``python _dist_worker.py MODE OUT.npz`` (TF_CONFIG set by the caller).

MODE is ``mirrored`` (two logical CPU devices in one process) or ``multiworker``. ``mirrored-ema`` trains a toy
model with BatchNormalization under ``mirrored`` with a moving average of the weights (``ema=0.9``) and saves also
the returned model's validation loss, for comparison with the last epoch's logged one.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

mode, out = sys.argv[1], sys.argv[2]
ema = 0.9 if mode == "mirrored-ema" else 0.0
mode = "mirrored" if ema else mode
if mode == "mirrored":
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from medattn.training import fit, get_strategy, set_seed  # noqa: E402
from tests.training._toy import toy_data, toy_model  # noqa: E402

set_seed(0)
if mode == "mirrored":
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
else:
    strategy = get_strategy("auto")
x, y = toy_data(64)
with strategy.scope():
    if ema:
        import keras

        model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(16), keras.layers.BatchNormalization(),
                                  keras.layers.ReLU(), keras.layers.Dense(2, activation="softmax")])
        model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
    else:
        model = toy_model(dropout=0.0)
ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
# medattn's fit: Keras' fit under MirroredStrategy, the custom loop under MultiWorkerMirroredStrategy
res = fit(model, ds, epochs=3, ckpt_dir=os.path.join(os.path.dirname(out), "ckpt"), validation_data=(x, y),
          strategy=strategy, batch_size=16, verbose=0, restore_best=False, ema=ema)
np.savez(out, *model.get_weights(), replicas=strategy.num_replicas_in_sync, strategy=type(strategy).__name__,
         loss=np.array([h["loss"] for h in res["history"]]),
         val_accuracy=np.array([h["val_accuracy"] for h in res["history"]]),
         val_loss=np.array([h["val_loss"] for h in res["history"]]),
         # Keras' evaluate does not run under MultiWorkerMirroredStrategy (keras-team/keras#20585)
         eval_loss=model.evaluate(x, y, verbose=0, return_dict=True)["loss"] if ema else np.nan)
