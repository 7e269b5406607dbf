"""Worker for the distributed tests: ``python _dist_worker.py MODE OUT.npz`` (TF_CONFIG set by the caller).

MODE is ``mirrored`` (two logical CPU devices in one process) or ``multiworker``. ``mirrored-ema`` trains a toy
model with BatchNormalization under ``mirrored`` with a moving average of the weights (``ema=0.9``) and saves also
the returned model's validation loss, for comparison with the last epoch's logged one. ``mirrored`` also trains
the toy model with medattn's fused Adam and with Keras's and saves the largest difference of their weights.
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


def fused_vs_keras_difference() -> float:
    """Largest difference between weights trained by medattn's fused Adam and Keras's under the strategy, or
    between the fused model's copies on the two replicas."""
    import keras

    from medattn.training.optimizers import FusedAdam

    weights, replica_gap = [], 0.0
    for opt in (FusedAdam, keras.optimizers.Adam):
        keras.utils.set_random_seed(1)
        with strategy.scope():
            m = toy_model(dropout=0.0)
            m.compile(optimizer=opt(1e-2), loss="sparse_categorical_crossentropy")
        m.fit(ds, epochs=2, verbose=0, shuffle=False)
        weights.append(m.get_weights())
        if opt is FusedAdam:
            copies = [[np.asarray(c) for c in v.value.values] for v in m.trainable_variables]
            replica_gap = max(float(np.abs(a - b).max()) for a, b in copies)
    return max([replica_gap] + [float(np.abs(a - b).max()) for a, b in zip(*weights)])


# medattn's fit: Keras' fit under MirroredStrategy, the custom loop under MultiWorkerMirroredStrategy
res = fit(model, ds, epochs=3, ckpt_dir=os.path.join(os.path.dirname(out), "ckpt"), validation_data=(x, y),
          strategy=strategy, batch_size=16, verbose=0, restore_best=False, ema=ema)
np.savez(out, *model.get_weights(), replicas=strategy.num_replicas_in_sync, strategy=type(strategy).__name__,
         loss=np.array([h["loss"] for h in res["history"]]),
         val_accuracy=np.array([h["val_accuracy"] for h in res["history"]]),
         val_loss=np.array([h["val_loss"] for h in res["history"]]),
         # Keras' evaluate does not run under MultiWorkerMirroredStrategy (keras-team/keras#20585)
         eval_loss=model.evaluate(x, y, verbose=0, return_dict=True)["loss"] if ema else np.nan,
         fused_difference=fused_vs_keras_difference() if mode == "mirrored" and not ema else np.nan)
