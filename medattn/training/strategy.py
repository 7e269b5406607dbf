"""tf.distribute strategy choice and mixed precision.

``auto`` picks, in order: TPUStrategy when a TPU resolver is configured (``TPU_NAME`` or
``COLAB_TPU_ADDR`` set, or ``tpu=`` given), MultiWorkerMirroredStrategy when ``TF_CONFIG`` names more than
one worker, MirroredStrategy when more than one GPU is visible, else the default (one-device) strategy.
Build models, optimizers and metrics inside ``strategy.scope()``; the batch size in configs is the *global*
batch, which tf.distribute splits across replicas.

On a machine without GPUs, ``MEDATTN_CPU_REPLICAS=N`` splits the CPU into N logical devices before TensorFlow
starts and ``mirrored`` mirrors over them: the same code path as N GPUs, for tests and dry runs on a laptop.
"""

from __future__ import annotations

import json
import os
from typing import Mapping

__all__ = ["resolve_strategy_name", "get_strategy", "set_mixed_precision", "workers_in_tf_config",
           "resolve_mixed_precision", "native_bf16", "cpu_flags"]


def workers_in_tf_config(env: Mapping[str, str] | None = None) -> int:
    """Number of workers (chief included) that ``TF_CONFIG`` names; 0 when it is unset."""
    env = os.environ if env is None else env
    raw = env.get("TF_CONFIG")
    if not raw:
        return 0
    try:
        cluster = json.loads(raw).get("cluster", {})
    except json.JSONDecodeError as e:
        raise ValueError(f"TF_CONFIG is not valid JSON: {raw!r} ({e})") from e
    return len(cluster.get("worker", [])) + len(cluster.get("chief", []))


def resolve_strategy_name(name: str = "auto", *, env: Mapping[str, str] | None = None, n_gpus: int = 0,
                          tpu: str | None = None) -> str:
    """The strategy ``auto`` resolves to (``tpu``, ``multiworker``, ``mirrored`` or ``default``), pure logic."""
    valid = ("auto", "default", "mirrored", "multiworker", "tpu")
    if name not in valid:
        raise ValueError(f"strategy must be one of {valid}, got {name!r}")
    if name != "auto":
        return name
    env = os.environ if env is None else env
    if tpu or env.get("TPU_NAME") or env.get("COLAB_TPU_ADDR"):
        return "tpu"
    if workers_in_tf_config(env) > 1:
        return "multiworker"
    if n_gpus > 1:
        return "mirrored"
    return "default"


def get_strategy(name: str = "auto", tpu: str | None = None):
    """Create the tf.distribute strategy that ``name`` resolves to (see the module docstring)."""
    import tensorflow as tf

    n_gpus = len(tf.config.list_physical_devices("GPU"))
    resolved = resolve_strategy_name(name, n_gpus=n_gpus, tpu=tpu)
    if resolved == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or os.environ.get("TPU_NAME", ""))
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    if resolved == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if resolved == "mirrored":
        n_cpu = int(os.environ.get("MEDATTN_CPU_REPLICAS", "0") or 0)
        if n_gpus == 0 and n_cpu > 1:
            cpu = tf.config.list_physical_devices("CPU")[0]
            try:
                tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n_cpu)
            except RuntimeError as e:
                raise RuntimeError(f"MEDATTN_CPU_REPLICAS={n_cpu}: TensorFlow was initialised before the strategy "
                                   f"was chosen ({e})") from e
            return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(n_cpu)])
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512_BF16 or AMX-BF16). Without them oneDNN emulates bf16
    and convolutions run many times slower than in float32 (full-width VGG16: 16x slower on an AMD EPYC without
    them, 2.8x faster on a Xeon with AMX; benchmarks/throughput.py)."""
    return bool(cpu_flags(cpuinfo) & {"avx512_bf16", "amx_bf16"})


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU's feature flags from ``cpuinfo`` (default: ``/proc/cpuinfo``; none where it cannot be read)."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            return set()
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
    return flags


def resolve_mixed_precision(mode: str, n_gpus: int | None = None, gpu_capability=None,
                            cpuinfo: str | None = None) -> str:
    """``auto`` -> ``bf16`` on a GPU of compute capability 8.0 or more, or on a CPU with native bf16, else ``off``;
    other modes unchanged."""
    if mode != "auto":
        return mode
    if n_gpus is None:
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        n_gpus = len(gpus)
        if gpus and gpu_capability is None:
            gpu_capability = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability")
    if n_gpus:
        return "bf16" if gpu_capability and tuple(gpu_capability) >= (8, 0) else "off"
    return "bf16" if native_bf16(cpuinfo) else "off"


def set_mixed_precision(mode: str = "off") -> str:
    """Set the Keras global dtype policy: ``off`` float32, ``bf16`` mixed_bfloat16, ``fp16`` mixed_float16."""
    import keras

    policies = {"off": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}
    if mode not in policies:
        raise ValueError(f"mixed_precision must be one of {tuple(policies)}, got {mode!r}")
    keras.mixed_precision.set_global_policy(policies[mode])
    return policies[mode]
