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

from medattn.training import get_strategy, set_seed  # noqa: E402
from medattn.training.custom_loop import distributed_fit, needs_custom_loop  # noqa: E402
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
if mode == "multiworker":
    opts = tf.data.Options()
    opts.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    ds = ds.with_options(opts)
if needs_custom_loop(strategy):
    import keras

    loss_fn = keras.losses.SparseCategoricalCrossentropy(reduction=None)
    hist = distributed_fit(model, ds, epochs=3, strategy=strategy, loss_fn=loss_fn, verbose=0)
else:
    hist = model.fit(ds, epochs=3, verbose=0).history
np.savez(out, *model.get_weights(), replicas=strategy.num_replicas_in_sync, strategy=type(strategy).__name__,
         loss=np.array(hist["loss"]))
