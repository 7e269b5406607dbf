"""Reuse one compiled model for every model of the same architecture in a run.

Keras traces a model's train, test and predict steps on first use; for the small models of the cpu and synthetic
profiles that tracing (about 5 s on 2 cores) costs more than their training. A run that trains the same
architecture several times (cross-fit folds, cross-validation folds, protocols) can build and trace it once:
:class:`ModelPool` keeps the first compiled model under a key and, for every later request with that key, builds
a fresh model under the caller's seed only to copy its initial variables into the kept one, puts the optimizer's
variables back to their values before the first step, and sets the learning-rate schedule's length for the new
training set. The result is the model a fresh build would have given (same initial weights, same optimizer state,
same schedule; ``tests/training/test_reuse.py`` checks the weights after training are identical) without
tracing again.
"""

from __future__ import annotations

from typing import Any, Callable, Hashable

import keras

__all__ = ["ModelPool", "CosineDecaySteps"]


@keras.saving.register_keras_serializable(package="medattn")
class CosineDecaySteps(keras.optimizers.schedules.CosineDecay):
    """Keras' ``CosineDecay`` whose length (``decay_steps``) is a variable: a traced train step reads it, so
    :meth:`set_decay_steps` changes the schedule of a model that is already traced. Same values as ``CosineDecay``
    with the same arguments (tested)."""

    def __init__(self, initial_learning_rate, decay_steps, alpha=0.0, name="CosineDecay", **kwargs):
        super().__init__(initial_learning_rate, decay_steps, alpha=alpha, name=name, **kwargs)
        self.decay_steps = keras.Variable(float(decay_steps), dtype="float32", trainable=False, name="decay_steps")
        if self.warmup_target is not None:  # linear warm-up from initial_learning_rate, then the cosine
            self.warmup_steps = keras.Variable(float(self.warmup_steps), dtype="float32", trainable=False,
                                               name="warmup_steps")

    def set_decay_steps(self, steps: int, warmup_steps: int | None = None) -> None:
        """``steps`` of cosine decay (after ``warmup_steps`` of warm-up, when the schedule has one)."""
        if steps <= 0:
            raise ValueError(f"decay_steps must be > 0, got {steps}")
        self.decay_steps.assign(float(steps))
        if warmup_steps is not None and self.warmup_target is not None:
            self.warmup_steps.assign(float(warmup_steps))

    def get_config(self):
        cfg = {**super().get_config(), "decay_steps": int(round(float(self.decay_steps.numpy())))}
        if self.warmup_target is not None:
            cfg["warmup_steps"] = int(round(float(self.warmup_steps.numpy())))
        return cfg


class ModelPool:
    """Compiled models kept by key; see the module docstring."""

    def __init__(self):
        self._models: dict[Hashable, tuple[Any, list]] = {}
        self.reused = 0

    def __contains__(self, key) -> bool:
        return key in self._models

    def get(self, key: Hashable, builder: Callable[[], Any], compile_fn: Callable[[Any], None],
            decay_steps: int | None = None, warmup_steps: int | None = None):
        """The model for ``key``: ``builder()`` compiled by ``compile_fn(model)`` the first time; afterwards the
        kept model with ``builder()``'s initial variables, a reset optimizer and ``decay_steps`` set. Call inside
        the strategy's scope, after seeding."""
        fresh = builder()
        if key not in self._models:
            compile_fn(fresh)
            opt = fresh.optimizer
            if not opt.built:
                opt.build(fresh.trainable_variables)
            self._models[key] = (fresh, [v.numpy() for v in opt.variables])
            return fresh
        model, opt_init = self._models[key]
        if len(model.variables) != len(fresh.variables) or any(
                tuple(a.shape) != tuple(b.shape) for a, b in zip(model.variables, fresh.variables)):
            raise ValueError(f"model pool key {key!r}: the builder made a model with different variables than the "
                             f"kept one; give different architectures different keys")
        for dst, src in zip(model.variables, fresh.variables):
            dst.assign(src.value)
        for v, init in zip(model.optimizer.variables, opt_init):
            v.assign(init)
        sched = getattr(model.optimizer, "_learning_rate", None)
        if decay_steps is not None and hasattr(sched, "set_decay_steps"):
            sched.set_decay_steps(decay_steps, warmup_steps)
        model.stop_training = False
        self.reused += 1
        return model
