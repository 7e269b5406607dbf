"""Monte-Carlo dropout prediction and predictive entropy (Gal & Ghahramani, ICML 2016).

:func:`mc_predict` runs ``T`` stochastic forward passes of a model whose dropout stays active at inference
(:class:`medattn.layers.MCDropout`) and returns the mean probabilities and their uncertainty:
``predictive_entropy = -sum_c p_c log p_c`` of the mean, ``expected_entropy`` (the mean of each pass's entropy,
aleatoric) and ``mutual_information = predictive - expected`` (epistemic, BALD).
"""

from __future__ import annotations

import numpy as np

__all__ = ["entropy", "mc_predict", "uncertainty_from_samples"]


def entropy(p, axis: int = -1) -> np.ndarray:
    """Shannon entropy in nats; ``0 log 0 = 0``."""
    p = np.asarray(p, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.sum(np.where(p > 0, p * np.log(p), 0.0), axis=axis)


def uncertainty_from_samples(samples) -> dict[str, np.ndarray]:
    """``samples`` of shape ``(T, n, n_classes)`` -> mean, predictive entropy, expected entropy, mutual information."""
    s = np.asarray(samples, dtype=np.float64)
    if s.ndim != 3:
        raise ValueError(f"samples must have shape (T, n, n_classes), got {s.shape}")
    mean = s.mean(0)
    pred = entropy(mean)
    exp = entropy(s).mean(0)
    return {"mean": mean, "std": s.std(0), "predictive_entropy": pred, "expected_entropy": exp,
            "mutual_information": pred - exp}


def mc_predict(model, x, passes: int = 30, batch_size: int = 32) -> dict[str, np.ndarray]:
    """``passes`` stochastic predictions of ``model`` on ``x`` (array or dataset) summarised by
    :func:`uncertainty_from_samples`. The model's dropout must be active at inference (MCDropout)."""
    if passes < 1:
        raise ValueError(f"passes must be >= 1, got {passes!r}")
    from ..training.custom_loop import predict  # any strategy, and batches every replica gets a share of

    samples = np.stack([np.asarray(predict(model, x, batch_size)) for _ in range(passes)])
    return uncertainty_from_samples(samples)
