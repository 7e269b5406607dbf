"""Fit-loop glue: epoch-wise training with checkpoints that resume exactly, logs, best-model selection.

:func:`fit` runs ``model.fit`` one epoch at a time so that it can

* take the training data as a function of the epoch (``data(epoch)``), so shuffling and augmentation are
  seeded by epoch and a resumed run sees the same batches as an uninterrupted one;
* after every epoch save ``last.keras`` (weights, optimizer state and RNG state) and ``state.json`` (epochs
  done, history, best value), so ``resume=True`` continues where a killed run stopped and ends with the same
  weights as an uninterrupted run with the same seed;
* keep the best weights by a monitored validation metric (``best.weights.h5``) and stop early;
* append every epoch to ``log.csv`` and ``log.json``.

Keras' own progress bar shows each epoch; a one-line summary with the epoch number follows it.
"""

from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np

__all__ = ["fit", "FitResult"]


class FitResult(dict):
    """``history`` (list of per-epoch dicts), ``best_epoch``, ``best_value``, ``epochs_run``, ``resumed_from``,
    ``wall_time_s``, ``stopped_early``."""


def _write_logs(ckpt_dir: Path, history: list[dict]) -> None:
    (ckpt_dir / "log.json").write_text(json.dumps(history, indent=1) + "\n")
    cols = list(dict.fromkeys(k for h in history for k in h))
    with open(ckpt_dir / "log.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(history)


def _rng_states(model) -> list:
    """States of the model's Keras SeedGenerators (dropout, noise, augmentation); ``.keras`` files omit them."""
    return [v for v in model.variables if v.path.endswith("seed_generator_state")]


def fit(
    model,
    data: Callable[[int], object] | object,
    *,
    epochs: int,
    ckpt_dir,
    validation_data=None,
    resume: bool = False,
    monitor: str = "val_loss",
    mode: str = "min",
    patience: int | None = None,
    restore_best: bool = True,
    callbacks=None,
    steps_per_epoch: int | None = None,
    class_weight: dict | None = None,
    verbose: int = 1,
    stop_after: int | None = None,
) -> FitResult:
    """Train ``model`` (already compiled, built inside the strategy scope) for ``epochs`` epochs.

    Args:
        data: a dataset, or a function ``epoch -> dataset`` (preferred: seed shuffles with the epoch).
        ckpt_dir: folder for ``last.keras``, ``state.json``, ``best.weights.h5``, ``log.csv``, ``log.json``.
        resume: continue from ``ckpt_dir`` if it holds a checkpoint (else start fresh).
        monitor, mode: metric for best-model selection and early stopping (``min`` or ``max``); when the
            metric is missing from the logs (no validation data), the last epoch is the best.
        patience: stop after this many epochs without improvement (None: never).
        restore_best: load the best weights at the end.
        stop_after: end after this epoch index (for tests that simulate an interruption).
    """
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    state_path, last_path, best_path = ckpt_dir / "state.json", ckpt_dir / "last.keras", ckpt_dir / "best.weights.h5"
    history: list[dict] = []
    start_epoch = 0
    best_value = math.inf if mode == "min" else -math.inf
    best_epoch = -1
    wait = 0
    resumed_from = None
    if resume and state_path.exists() and last_path.exists():
        state = json.loads(state_path.read_text())
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        model.load_weights(last_path)
        rng_vars = _rng_states(model)
        if len(rng_vars) != len(state.get("rng_states", [])):
            raise ValueError(f"{state_path}: checkpoint has {len(state.get('rng_states', []))} RNG states but the "
                             f"model has {len(rng_vars)}; was it made by a different model?")
        for v, val in zip(rng_vars, state["rng_states"]):
            v.assign(np.asarray(val, dtype=v.dtype))
        history = state["history"]
        start_epoch = state["epochs_done"]
        best_value, best_epoch, wait = state["best_value"], state["best_epoch"], state["wait"]
        resumed_from = start_epoch
        if verbose:
            print(f"[medattn] resuming from {last_path} after epoch {start_epoch}/{epochs}")
    t0 = time.time()
    # a checkpoint that had already stopped early is finished: resuming it must not train further
    stopped_early = resumed_from is not None and patience is not None and wait >= patience
    end_epoch = start_epoch if stopped_early else epochs
    for epoch in range(start_epoch, end_epoch):
        ds = data(epoch) if callable(data) else data
        if verbose:
            print(f"Epoch {epoch + 1}/{epochs}")
        h = model.fit(ds, validation_data=validation_data, epochs=epoch + 1, initial_epoch=epoch,
                      steps_per_epoch=steps_per_epoch, class_weight=class_weight, callbacks=callbacks,
                      verbose=verbose, shuffle=False)  # datasets are shuffled per epoch by `data(epoch)`
        logs = {k: float(v[-1]) for k, v in h.history.items()}
        logs = {"epoch": epoch + 1, **logs, "time_s": round(time.time() - t0, 3)}
        history.append(logs)
        value = logs.get(monitor, None)
        improved = value is None or (value < best_value if mode == "min" else value > best_value)
        if value is not None and np.isnan(value):
            improved = False
        if improved:
            best_value = value if value is not None else best_value
            best_epoch = epoch + 1
            wait = 0
            model.save_weights(best_path)
        else:
            wait += 1
        model.save(last_path)
        state = {"epochs_done": epoch + 1, "history": history, "best_value": best_value, "best_epoch": best_epoch,
                 "wait": wait, "monitor": monitor, "mode": mode,
                 "rng_states": [np.asarray(v).tolist() for v in _rng_states(model)]}
        state_path.write_text(json.dumps(state, indent=1) + "\n")
        _write_logs(ckpt_dir, history)
        if verbose:
            print(f"[medattn] epoch {epoch + 1}: {monitor}={value if value is not None else 'n/a'} "
                  f"best={best_value} (epoch {best_epoch})")
        if patience is not None and wait >= patience:
            stopped_early = True
            if verbose:
                print(f"[medattn] early stop: no improvement of {monitor} for {wait} epochs")
            break
        if stop_after is not None and epoch + 1 >= stop_after:
            break
    if restore_best and best_path.exists():
        model.load_weights(best_path)
    return FitResult(history=history, best_epoch=best_epoch, best_value=best_value,
                     epochs_run=len(history) - (resumed_from or 0), resumed_from=resumed_from,
                     wall_time_s=time.time() - t0, stopped_early=stopped_early)
