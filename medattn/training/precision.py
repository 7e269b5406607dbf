"""Per-model precision under ``--mixed-precision auto``: the measured exceptions to "bf16 where native".

``auto`` resolves per machine (:func:`medattn.training.strategy.resolve_mixed_precision`): mixed bfloat16 on a GPU
of compute capability 8.0 or more and on a CPU that computes bf16 natively, float32 elsewhere. On a CPU with
AVX512_BF16 but no AMX (the Zen 4 AMD EPYC this project runs on), some models train *slower* in bf16: those built
on depthwise-separable convolutions (MobileNet, MobileNetV2, EfficientNet); likely (not measured per layer) their
depthwise kernels gain little from bf16 while every layer pays for the casts. ``benchmarks/precision.py`` decided it per model, both
precisions side by side in ABBA rounds, by a rule committed before it ran
(``benchmarks/results/precision_epyc.md``; EMT-Net again at its cpu profile's 160 px in
``precision_epyc_emtnet160.md``): of 23 model/size pairs, bf16 for 10, float32 for 7, a tie for 6 (ties keep bf16).
The float32 ones train in float32 under ``auto`` on such a CPU; everything else is unchanged.

A key names a model as the benchmark does, ``<reproduction>:<model>@<input size>``: the cpu profiles' models at
their sizes. Another size is not covered (at the paper sizes bf16 was faster for most models) and keeps bf16; other
settings at the same size (a width, a decoder, an attention block changed with ``--set``) take the decision of the
profile's model, not measured (DCAT names another backbone pair apart, since its key would otherwise hide it). On a
GPU, on a CPU with AMX (not measured here) and under an explicit ``--mixed-precision bf16`` every model keeps the
run's precision. ``tests/training/test_precision.py`` keeps this set equal to the committed benchmark's float32 decisions.
"""

from __future__ import annotations

import contextlib

__all__ = ["CPU_FLOAT32_FASTER", "model_precision", "precision_key", "policy_scope", "cpu_per_model_precision"]

# benchmarks/results/precision_epyc*.json (2026-12-03, 6 ABBA rounds of 3 steps): the models whose decision was
# float32 (EMT-Net at 128 px in precision_epyc.json, at 160, its cpu profile's size since run emt160, in
# precision_epyc_emtnet160.json, where the multitask model was a tie)
CPU_FLOAT32_FASTER = frozenset({
    "emtnet:mobilenetv2@128",
    "emtnet:mobilenetv2-classifier@128",
    "emtnet:mobilenetv2-classifier@160",
    "brain_tumor_transfer:mobilenetv2@64",
    "dcat:cross_attention@64",
    "dcat:concat@64",
    "mias_fusion:mobilenet:baseline@72",
})


def precision_key(model: str, size: int) -> str:
    return f"{model}@{int(size)}"


def cpu_per_model_precision(cpuinfo: str | None = None, n_gpus: int | None = None) -> bool:
    """Whether the per-model exceptions apply here: no GPU, and a CPU with native bf16 but without AMX (the kind of
    CPU the exceptions were measured on)."""
    from .strategy import cpu_flags

    if n_gpus is None:
        import tensorflow as tf

        n_gpus = len(tf.config.list_physical_devices("GPU"))
    flags = cpu_flags(cpuinfo)
    return not n_gpus and "avx512_bf16" in flags and "amx_bf16" not in flags


def model_precision(run_precision: str, requested: str, key: str, *, per_model: bool) -> str:
    """The precision (``off``/``bf16``/``fp16``) the model ``key`` trains in: ``off`` when the run asked for
    ``auto``, it resolved to ``bf16``, the exceptions apply (``per_model``: :func:`cpu_per_model_precision`) and
    ``key`` is one of :data:`CPU_FLOAT32_FASTER`; otherwise the run's precision."""
    if requested == "auto" and run_precision == "bf16" and per_model and key in CPU_FLOAT32_FASTER:
        return "off"
    return run_precision


@contextlib.contextmanager
def policy_scope(mode: str):
    """Keras' global dtype policy set to ``mode`` (``off``/``bf16``/``fp16``) inside the block, put back after:
    the layers built inside keep it."""
    import keras

    from .strategy import set_mixed_precision

    before = keras.mixed_precision.global_policy()
    set_mixed_precision(mode)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(before)
