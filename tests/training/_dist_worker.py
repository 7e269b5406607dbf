"""Worker for the distributed tests: ``python _dist_worker.py MODE OUT.npz`` (TF_CONFIG set by the caller).

MODE is ``mirrored`` (two logical CPU devices in one process) or ``multiworker``.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

mode, out = sys.argv[1], sys.argv[2]
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
    model = toy_model(dropout=0.0)
ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
# medattn's fit: Keras' fit under MirroredStrategy, the custom loop under MultiWorkerMirroredStrategy
res = fit(model, ds, epochs=3, ckpt_dir=os.path.join(os.path.dirname(out), "ckpt"), validation_data=(x, y),
          strategy=strategy, batch_size=16, verbose=0, restore_best=False)
np.savez(out, *model.get_weights(), replicas=strategy.num_replicas_in_sync, strategy=type(strategy).__name__,
         loss=np.array([h["loss"] for h in res["history"]]),
         val_accuracy=np.array([h["val_accuracy"] for h in res["history"]]))
