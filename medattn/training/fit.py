"""Fit-loop glue: epoch-wise training with checkpoints that resume exactly, logs, best-model selection, any
tf.distribute strategy.

:func:`fit` trains one epoch at a time so that it can

* take the training data as a function of the epoch (``data(epoch)``), so shuffling and augmentation are
  seeded by epoch and a resumed run sees the same batches as an uninterrupted one;
* after every epoch save ``last.npz`` (every variable of the model and its optimizer: weights, BatchNorm
  statistics, RNG states, optimizer step and slots) and ``state.json`` (epochs done, history, best value), each
  written to a temporary file and renamed, so a kill mid-write never leaves a broken
  checkpoint; ``resume=True`` continues where a killed run stopped and ends with the same weights as an
  uninterrupted run with the same seed; an unreadable checkpoint is reported with its path and the stage starts
  over;
* keep the best weights by a monitored validation metric (``best.npz``) and stop early;
* with ``ema`` > 0, keep an exponential moving average of the model's weights (:class:`WeightEma`), updated after
  every batch: validation, ``best.npz`` and the model ``fit`` returns use the averaged weights, training the raw
  ones, and ``last.npz`` holds both, so a resumed run continues the average exactly;
* append every epoch to ``log.csv`` / ``log.json`` and, with ``tensorboard=True``, TensorBoard scalars in
  ``ckpt_dir/tensorboard``;
* print one line per epoch (``verbose=2``), with a progress bar over the batches on a terminal (``verbose=1``).

Under the default strategy and ``MirroredStrategy`` each epoch is Keras' ``model.fit``; under
``MultiWorkerMirroredStrategy``, where Keras 3's ``fit`` fails (keras-team/keras#20585), the same model, compiled
loss, metrics, optimizer and class weights run in :mod:`medattn.training.custom_loop`. Every worker writes its
checkpoints to its own folder (the chief to ``ckpt_dir``, worker ``i`` to ``ckpt_dir/worker{i}``).
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

from ..utils import atomic_write_text

__all__ = ["fit", "FitResult", "WeightEma", "TrainingDiverged", "ReplicaSplitError", "atomic_write_text",
           "training_seconds"]


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite: the run stops at that epoch (its checkpoints keep the last finite
    epoch) and the message says where, in one line."""


class ReplicaSplitError(ValueError):
    """The validation data cannot be batched so that every replica gets a part of every batch (too few images for
    the replicas): the run stops before training, in one line, naming the stage."""


class FitResult(dict):
    """``history`` (list of per-epoch dicts), ``best_epoch``, ``best_value``, ``epochs_run``, ``resumed_from``,
    ``wall_time_s``, ``stopped_early``, ``restarted`` (the checkpoint was unreadable)."""


def training_seconds(history: list[dict]) -> float:
    """Seconds spent training the epochs of ``history`` (a :func:`fit` history), over every process that trained
    them: the sum of ``epoch_s``; for epochs logged before ``epoch_s`` existed, from the cumulative ``time_s`` of each
    process (a resumed process starts its clock again, seen as a drop in ``time_s``)."""
    total, prev = 0.0, 0.0
    for h in history:
        t = float(h.get("time_s", 0.0))
        if "epoch_s" in h:
            total += float(h["epoch_s"])
        else:
            total += t - prev if t >= prev else t
        prev = t
    return total


def _write_logs(ckpt_dir: Path, history: list[dict]) -> None:
    atomic_write_text(ckpt_dir / "log.json", json.dumps(history, indent=1) + "\n")
    cols = list(dict.fromkeys(k for h in history for k in h))
    tmp = ckpt_dir / ".log.csv.tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(history)
    os.replace(tmp, ckpt_dir / "log.csv")


class WeightEma:
    """An exponential moving average of a model's floating-point variables: every weight and the BatchNorm
    statistics (integer variables, the RNG states of dropout and noise layers, are left alone).

    After the ``t``-th update (``t`` = 1, 2, ...) the average is ``a <- d * a + (1 - d) * w`` with
    ``d = min(decay, (1 + t) / (10 + t))``: the warm-up of ``tf.train.ExponentialMovingAverage``'s
    ``num_updates``, so the first steps do not tie the average to the initial weights (0.999 ** 1800 is still 0.17).
    The average starts at the weights the model has when this object is made.

    Keras' own ``compile(..., use_ema)`` / ``optimizer(use_ema=True)`` is not used: it writes the average over the
    model's weights at the end of every ``model.fit`` call, and :func:`fit` calls ``model.fit`` once per epoch,
    so training would continue from the average every epoch."""

    def __init__(self, model, decay: float):
        import tensorflow as tf

        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.targets = [v for v in model.variables if "float" in str(v.dtype)]
        with tf.init_scope():  # plain variables, outside any strategy's scope: one copy, updated in cross-replica context
            self.shadow = [tf.Variable(np.asarray(v.numpy(), dtype="float32"), trainable=False,
                                       name=f"ema_{i}") for i, v in enumerate(self.targets)]
            self.count = tf.Variable(0, dtype=tf.int64, trainable=False, name="ema_count")
        self._update = tf.function(self._update_fn)

    def _update_fn(self):
        import tensorflow as tf

        self.count.assign_add(1)
        t = tf.cast(self.count, tf.float32)
        d = tf.minimum(tf.constant(self.decay, tf.float32), (1.0 + t) / (10.0 + t))
        for a, v in zip(self.shadow, self.targets):
            a.assign_sub((1.0 - d) * (a - tf.cast(tf.convert_to_tensor(v.value), tf.float32)))

    def update(self) -> None:
        """One step of the average (after each optimizer step)."""
        self._update()

    def variables(self) -> list:
        """The average and its step count, for ``last.npz``."""
        return self.shadow + [self.count]

    def copy_to_model(self) -> None:
        """Write the average over the model's variables (for good: the model then holds the averaged weights)."""
        for v, a in zip(self.targets, self.shadow):
            v.assign(a.numpy().astype(np.dtype(str(v.dtype))))

    @contextlib.contextmanager
    def applied(self):
        """A context in which the model holds the averaged weights; its own come back on leaving it."""
        raw = [v.numpy() for v in self.targets]
        self.copy_to_model()
        try:
            yield
        finally:
            for v, r in zip(self.targets, raw):
                v.assign(r)


def _ema_callback(ema: WeightEma):
    import keras

    class EmaCallback(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            ema.update()

    return EmaCallback()


def _evaluate(model, validation_data) -> dict:
    """``model.evaluate`` on validation data given as ``fit`` takes it (a dataset, or a tuple ``(x, y[, w])``), as
    a dict with ``val_`` names, as ``model.fit``'s validation logs them."""
    if isinstance(validation_data, (tuple, list)):
        x, y, *w = validation_data
        res = model.evaluate(x, y, sample_weight=w[0] if w else None, verbose=0, return_dict=True)
    else:
        res = model.evaluate(validation_data, verbose=0, return_dict=True)
    return {f"val_{k}": float(v) for k, v in res.items()}


def _worker_dir(ckpt_dir: Path, strategy) -> Path:
    from .custom_loop import worker_index

    i = worker_index(strategy)
    return ckpt_dir if i == 0 else ckpt_dir / f"worker{i}"


def _checkpoint_variables(model, with_optimizer: bool) -> list:
    """Every variable of the model (weights, BatchNorm statistics, the RNG states of dropout and noise layers)
    and, for ``last.npz``, of its optimizer (step, slots, loss scale)."""
    return list(model.variables) + (list(model.optimizer.variables) if with_optimizer else [])


def save_variables(variables, path: Path) -> None:
    """Variables' values (and paths, for the reader) to ``path`` (``.npz``), written to a temporary file and
    renamed. 10x faster than ``model.save`` for the small models here (0.02 s vs 0.25 s per epoch)."""
    path = Path(path)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")  # one name per process: two never share a temp file
    arrays = {f"v{i}": np.asarray(v.numpy()) for i, v in enumerate(variables)}
    try:
        with open(tmp, "wb") as f:
            np.savez(f, _paths=np.array([str(getattr(v, "path", v.name)) for v in variables]), **arrays)
        os.replace(tmp, path)
    except OSError as e:  # a full disk: no partial file left behind, the last checkpoint kept, the path named
        tmp.unlink(missing_ok=True)
        raise OSError(e.errno, f"cannot write {path}: {e.strerror or e}") from None


def load_variables(variables, path: Path) -> None:
    """Assign the values :func:`save_variables` wrote; a file with other variables (count or shapes) is refused
    with a ValueError that says which."""
    with np.load(path, allow_pickle=False) as z:
        n = len(z["_paths"])
        if n != len(variables):
            raise ValueError(f"{path} holds {n} variables but the model (and optimizer) have {len(variables)}; "
                             f"was it made by a different model?")
        values = [z[f"v{i}"] for i in range(n)]
    for i, (v, val) in enumerate(zip(variables, values)):
        if tuple(val.shape) != tuple(v.shape):
            raise ValueError(f"{path}: variable {i} ({getattr(v, 'path', v.name)}) has shape {tuple(v.shape)} in the model but "
                             f"{tuple(val.shape)} in the file")
    for v, val in zip(variables, values):
        v.assign(val)


def _build_optimizer(model, strategy) -> None:
    """Create the optimizer's slot variables now, in the strategy's scope. Keras otherwise creates them inside the
    first trace of the train step, and a ``tf.function`` that creates variables is traced a second time: building
    them first halves the first epoch's tracing (9.5 s to 5 s for the synthetic LinkNet here)."""
    opt = getattr(model, "optimizer", None)
    if opt is not None and not opt.built and model.built:
        with strategy.scope():
            opt.build(model.trainable_variables)


def _build_compiled_state(model, strategy, data) -> None:
    """Build the compiled loss and metrics from the data's element shapes now. Keras builds them before the first
    trace only for a model made under a distribution strategy's scope; otherwise they create their variables inside
    the trace, and the train step is traced twice (DCAT's smoke epoch: 50 s, then about 30 s without the second
    trace). An optimisation only: any model Keras cannot build this way is left to Keras."""
    parts = (getattr(model, "_compile_metrics", None), getattr(model, "_compile_loss", None))
    if all(p is None or p.built for p in parts) or not hasattr(model, "_symbolic_build"):
        return
    spec = _element_spec(data(0) if callable(data) else data)
    if spec is None:
        return
    try:
        with strategy.scope():
            model._symbolic_build(data_batch=spec)
    except Exception:  # noqa: BLE001 - Keras builds them in the first trace instead
        pass


def _element_spec(data):
    """Shapes and dtypes of one batch of ``data`` if it is a ``tf.data.Dataset``, else None."""
    import tensorflow as tf

    return data.element_spec if isinstance(data, tf.data.Dataset) else None


def _load_state(model, ckpt_dir: Path, verbose: int, extra=()):
    """The saved state after loading ``last.npz`` into ``model`` (and ``extra`` variables saved after the model's
    and optimizer's: the weight average's); None (stage starts over) if there is none or it is unreadable, which
    is said with the path."""
    state_path, last_path = ckpt_dir / "state.json", ckpt_dir / "last.npz"
    if not (state_path.exists() and last_path.exists()):
        if (ckpt_dir / "last.keras").exists():
            print(f"[medattn] {ckpt_dir} holds a checkpoint in the old format (last.keras); starting this stage "
                  f"over", file=sys.stderr, flush=True)
            return None, True
        return None, False
    try:
        state = json.loads(state_path.read_text())  # the optimizer is built: fit calls _build_optimizer first
        load_variables(_checkpoint_variables(model, True) + list(extra), last_path)
        return state, False
    except Exception as e:  # noqa: BLE001 - any unreadable checkpoint means: start this stage over
        print(f"[medattn] checkpoint {last_path} is unreadable ({type(e).__name__}: {e}); starting this stage "
              f"over", file=sys.stderr, flush=True)
        return None, True


class _Bar:
    """A tqdm bar over one epoch's batches (a terminal only)."""

    def __init__(self, label: str, total):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc=label, leave=False, unit="batch", dynamic_ncols=True)

    def update(self, logs=None):
        self.bar.update(1)
        if logs:
            self.bar.set_postfix({k: f"{float(v):.4g}" for k, v in logs.items() if k in ("loss", "accuracy", "dice")},
                                 refresh=False)

    def close(self):
        self.bar.close()


def _bar_callback(bar):
    import keras

    class BarCallback(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            bar.update(logs)

    return BarCallback()


def _tensorboard_scalars(writer, logs: dict, step: int) -> None:
    """Scalars in TensorBoard's format through core ``tf.summary.write`` (``tf.summary.scalar`` needs the
    ``tensorboard`` package, which tensorflow-cpu does not install; viewing the logs does)."""
    import tensorflow as tf
    from tensorflow.core.framework import summary_pb2

    meta = summary_pb2.SummaryMetadata()
    meta.plugin_data.plugin_name = "scalars"
    with writer.as_default():
        for k, v in logs.items():
            if k not in ("epoch", "time_s", "epoch_s") and isinstance(v, (int, float)):
                tf.summary.write(k, tf.constant(float(v), tf.float32), step=step, metadata=meta)
    writer.flush()


def _refuse_divergence(logs: dict, history: list[dict], label: str, epochs: int) -> None:
    """TrainingDiverged when this epoch's training loss is NaN or infinite, naming the stage, the epoch and the
    last finite loss (nothing of this epoch is saved)."""
    loss = logs.get("loss")
    if loss is None or math.isfinite(loss):
        return
    last = next(((h["epoch"], h["loss"]) for h in reversed(history) if math.isfinite(h.get("loss", math.nan))), None)
    before = f"last finite loss {last[1]:.4g} at epoch {last[0]}" if last else "no finite loss before it"
    raise TrainingDiverged(f"[{label}] epoch {logs['epoch']}/{epochs}: the training loss became {loss} ({before}); "
                           f"the checkpoints keep the last finite epoch. Lower the learning rate (--lr) or check "
                           f"the inputs")


def _fmt(v):
    return "n/a" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


def fit(model, data: Callable[[int], object] | object, *, epochs: int, ckpt_dir, validation_data=None,
        resume: bool = False, monitor: str = "val_loss", mode: str = "min", patience: int | None = None,
        restore_best: bool = True, callbacks=None, steps_per_epoch: int | None = None,
        class_weight: dict | None = None, verbose: int = 1, stop_after: int | None = None, strategy=None,
        batch_size: int | None = None, tensorboard: bool = False, label: str = "fit", ema: float = 0.0) -> FitResult:
    """Train ``model`` (already compiled, built inside the strategy scope) for ``epochs`` epochs.

    Args:
        data: a dataset, or a function ``epoch -> dataset`` (preferred: seed shuffles with the epoch). Batches are
            global batches; the strategy splits them across replicas.
        ckpt_dir: folder for ``last.npz``, ``state.json``, ``best.npz``, ``log.csv``, ``log.json``.
        resume: continue from ``ckpt_dir`` if it holds a checkpoint (else start fresh).
        monitor, mode: metric for best-model selection and early stopping (``min`` or ``max``); when the
            metric is missing from the logs (no validation data), the last epoch is the best.
        patience: stop after this many epochs without improvement (None: never).
        restore_best: load the best weights at the end.
        stop_after: end after this epoch index (for tests that simulate an interruption).
        strategy: the strategy the model was built under (None: the current one); multi-worker strategies train
            with the custom loop, which needs ``batch_size`` (the global batch).
        label: the prefix of the progress lines (e.g. ``dcnnimaf grouped s0 seg``).
        ema: decay of an exponential moving average of the weights (:class:`WeightEma`), updated after every
            batch; validation, ``best.npz`` and the returned model use the average. 0: off. Not supported under
            a multi-worker strategy (refused).
    """
    from .custom_loop import needs_custom_loop

    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    if strategy is None:
        import tensorflow as tf

        strategy = tf.distribute.get_strategy()
    custom = needs_custom_loop(strategy)
    replicas = 1 if custom else strategy.num_replicas_in_sync  # Keras' fit under MirroredStrategy: every replica a part
    validation_data = _validation_for_replicas(validation_data, replicas, batch_size, label)
    _refuse_unsupported(ema, custom, batch_size, label)
    _build_optimizer(model, strategy)
    if not custom:
        _build_compiled_state(model, strategy, data)
    averager = WeightEma(model, ema) if ema else None
    run = _EpochRunner(model, data, validation_data, strategy, custom, replicas, batch_size, class_weight, callbacks,
                       steps_per_epoch, averager, label, epochs, verbose)
    ckpt_dir = _worker_dir(Path(ckpt_dir), strategy)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    st = _FitState.start(model, ckpt_dir, resume, mode, verbose, averager, label, epochs)
    t0 = time.time()
    stopped_early = _train_epochs(run, st, ckpt_dir, epochs=epochs, monitor=monitor, patience=patience,
                                  validated=validation_data is not None, tensorboard=tensorboard,
                                  stop_after=stop_after, verbose=verbose, label=label)
    if restore_best and (ckpt_dir / "best.npz").exists():
        load_variables(_checkpoint_variables(model, False), ckpt_dir / "best.npz")
    elif averager:  # the model a weight-averaged fit returns is the average
        averager.copy_to_model()
    return FitResult(history=st.history, best_epoch=st.best_epoch, best_value=st.best_value,
                     epochs_run=len(st.history) - (st.resumed_from or 0), resumed_from=st.resumed_from,
                     wall_time_s=time.time() - t0, stopped_early=stopped_early, restarted=st.restarted)


def _train_epochs(run: "_EpochRunner", st: "_FitState", ckpt_dir: Path, *, epochs: int, monitor: str, patience,
                  validated: bool, tensorboard: bool, stop_after, verbose: int, label: str) -> bool:
    """The epochs from the checkpoint's next one on, each logged, checkpointed and checked for divergence; True when
    training stopped early (now, or in the run a resumed checkpoint came from)."""
    writer = _tensorboard_writer(ckpt_dir) if tensorboard else None
    t0 = time.time()
    # a checkpoint that had already stopped early is finished: resuming it must not train further
    stopped_early = st.resumed_from is not None and patience is not None and st.wait >= patience
    for epoch in range(st.start_epoch, st.start_epoch if stopped_early else epochs):
        te = time.time()
        logs = run.epoch(epoch)
        # time_s: since this process's fit began (cumulative); epoch_s: this epoch alone
        logs = {"epoch": epoch + 1, **logs, "time_s": round(time.time() - t0, 3), "epoch_s": round(time.time() - te, 3)}
        _refuse_divergence(logs, st.history, label, epochs)
        st.record(logs, monitor, validated, label)
        st.save(run.model, ckpt_dir, monitor, run.averager)
        if writer is not None:
            _tensorboard_scalars(writer, logs, epoch + 1)
        if verbose:
            _print_epoch(label, logs, epochs, monitor, st, time.time() - te)
        if patience is not None and st.wait >= patience:
            if verbose:
                print(f"[{label}] early stop: no improvement of {monitor} for {st.wait} epochs", flush=True)
            return True
        if stop_after is not None and epoch + 1 >= stop_after:
            break
    return stopped_early


def _print_epoch(label: str, logs: dict, epochs: int, monitor: str, st: "_FitState", seconds: float) -> None:
    shown = "  ".join(f"{k} {_fmt(v)}" for k, v in logs.items() if k not in ("epoch", "time_s", "epoch_s"))
    print(f"[{label}] epoch {logs['epoch']}/{epochs}  {shown}  best {monitor} {_fmt(st.best_value)} (epoch "
          f"{st.best_epoch})  {seconds:.0f} s{_time_left(st.history, epochs)}", flush=True)


def _time_left(history: list[dict], epochs: int, recent: int = 5) -> str:
    """``"  ~12 min left"``: the epochs still to train times the median time of the last ``recent`` epochs (robust
    to the slow first epoch of each process, which traces the graph); an upper bound when early stopping may end the
    stage sooner. Empty after the last epoch."""
    left = epochs - history[-1]["epoch"]
    times = [h["epoch_s"] for h in history if "epoch_s" in h][-recent:]
    if left <= 0 or not times:
        return ""
    seconds = left * float(np.median(times))
    return f"  ~{seconds / 60:.0f} min left" if seconds >= 90 else f"  ~{seconds:.0f} s left"


def _validation_for_replicas(validation_data, replicas: int, batch_size, label: str):
    from .custom_loop import for_replicas

    if validation_data is None:
        return None
    try:
        return for_replicas(validation_data, replicas, batch_size or 32)
    except ValueError as e:
        raise ReplicaSplitError(f"[{label}] validation data: {e} (use fewer replicas or more validation images)") \
            from e


def _refuse_unsupported(ema: float, custom: bool, batch_size, label: str) -> None:
    if ema and custom:
        raise ValueError(f"[{label}] ema (a moving average of the weights) is not supported under a multi-worker "
                         f"strategy; set ema=0 or train on one machine")
    if custom and batch_size is None:
        raise ValueError("fit under a multi-worker strategy needs batch_size (the global batch)")


def _tensorboard_writer(ckpt_dir: Path):
    import tensorflow as tf

    return tf.summary.create_file_writer(str(ckpt_dir / "tensorboard"))


class _EpochRunner:
    """One epoch of training (Keras' fit, or the custom loop under a multi-worker strategy) and its validation; the
    logs as floats."""

    def __init__(self, model, data, validation_data, strategy, custom, replicas, batch_size, class_weight, callbacks,
                 steps_per_epoch, averager, label, epochs, verbose):
        self.model, self.data, self.val, self.strategy = model, data, validation_data, strategy
        self.custom, self.replicas, self.batch_size = custom, replicas, batch_size
        self.class_weight, self.callbacks, self.steps = class_weight, callbacks, steps_per_epoch
        self.averager, self.label, self.epochs = averager, label, epochs
        self.bar_wanted = verbose == 1 and sys.stdout.isatty()

    def epoch(self, epoch: int) -> dict:
        from .custom_loop import custom_epoch, custom_evaluate, for_replicas

        data = self.data(epoch) if callable(self.data) else self.data
        ds = for_replicas(data, self.replicas, training=True)
        bar = _Bar(f"{self.label} epoch {epoch + 1}/{self.epochs}", self.steps) if self.bar_wanted else None
        try:
            if self.custom:
                logs = custom_epoch(self.model, ds, strategy=self.strategy, batch_size=self.batch_size,
                                    class_weight=self.class_weight, steps=self.steps,
                                    on_batch=bar.update if bar else None)
                if self.val is not None:
                    logs.update({f"val_{k}": v for k, v in custom_evaluate(self.model, self.val).items()})
                return logs
            return self._keras_epoch(ds, epoch, bar)
        finally:
            if bar:
                bar.close()

    def _keras_epoch(self, ds, epoch: int, bar) -> dict:
        averager = self.averager
        cbs = (list(self.callbacks or []) + ([_ema_callback(averager)] if averager else [])
               + ([_bar_callback(bar)] if bar else []))
        # with a weight average, validation runs here on the average, not in model.fit on the raw weights
        with _epoch_length_learned_quietly(self.replicas > 1 and self.steps is None):
            h = self.model.fit(ds, validation_data=None if averager else self.val, epochs=epoch + 1,
                               initial_epoch=epoch, steps_per_epoch=self.steps, class_weight=self.class_weight,
                               callbacks=cbs, verbose=0, shuffle=False)  # shuffled per epoch by `data(epoch)`
        logs = {k: float(v[-1]) for k, v in h.history.items()}
        if averager and self.val is not None:
            with averager.applied():
                logs.update(_evaluate(self.model, self.val))
        return logs


@contextlib.contextmanager
def _epoch_length_learned_quietly(on: bool):
    """Without Keras's "Your input ran out of data" warning, when ``on``: batches cut for replicas
    (``custom_loop.for_replicas``) have no known count, so Keras learns an epoch's length by reaching its end, warns,
    and ends the epoch as it should (validation and callbacks run). With ``steps_per_epoch`` given, the warning
    still says that the data was shorter."""
    import warnings

    with warnings.catch_warnings():
        if on:
            warnings.filterwarnings("ignore", message="Your input ran out of data")
        yield


class _FitState:
    """What a fit carries from epoch to epoch and keeps in ``state.json``: history, best value and epoch, epochs
    without improvement."""

    def __init__(self, mode: str):
        self.mode = mode
        self.history: list[dict] = []
        self.start_epoch, self.best_epoch, self.wait = 0, -1, 0
        self.best_value = math.inf if mode == "min" else -math.inf
        self.resumed_from, self.restarted, self.improved = None, False, False

    @classmethod
    def start(cls, model, ckpt_dir: Path, resume: bool, mode: str, verbose: int, averager, label: str, epochs: int):
        st = cls(mode)
        if not resume:
            return st
        extra = averager.variables() if averager else []
        state, st.restarted = _load_state(model, ckpt_dir, verbose, extra)
        if state is not None:
            st.history, st.start_epoch = state["history"], state["epochs_done"]
            st.best_value, st.best_epoch, st.wait = state["best_value"], state["best_epoch"], state["wait"]
            st.resumed_from = st.start_epoch
            if verbose:
                print(f"[{label}] resuming from {ckpt_dir / 'last.npz'} after epoch {st.start_epoch}/{epochs}",
                      flush=True)
        return st

    def record(self, logs: dict, monitor: str, has_validation: bool, label: str) -> None:
        """Add an epoch's logs; whether it improved the monitored value (NaN never does)."""
        self.history.append(logs)
        value = logs.get(monitor, None)
        if value is None and has_validation:  # a misspelt monitor would silently keep the last epoch
            raise ValueError(f"[{label}] monitor {monitor!r} is not among this model's logs "
                             f"({', '.join(k for k in logs if k not in ('epoch', 'time_s', 'epoch_s'))})")
        self.improved = value is None or (value < self.best_value if self.mode == "min" else value > self.best_value)
        if value is not None and np.isnan(value):
            self.improved = False
        if self.improved:
            self.best_value = value if value is not None else self.best_value
            self.best_epoch, self.wait = logs["epoch"], 0
        else:
            self.wait += 1

    def save(self, model, ckpt_dir: Path, monitor: str, averager) -> None:
        """``best.npz`` when the epoch improved (the average, with one), ``last.npz``, ``state.json`` and logs."""
        if self.improved:
            with averager.applied() if averager else contextlib.nullcontext():  # the average is what is kept
                save_variables(_checkpoint_variables(model, False), ckpt_dir / "best.npz")
        extra = averager.variables() if averager else []
        save_variables(_checkpoint_variables(model, True) + extra, ckpt_dir / "last.npz")
        state = {"epochs_done": self.history[-1]["epoch"], "history": self.history, "best_value": self.best_value,
                 "best_epoch": self.best_epoch, "wait": self.wait, "monitor": monitor, "mode": self.mode}
        atomic_write_text(ckpt_dir / "state.json", json.dumps(state, indent=1) + "\n")
        _write_logs(ckpt_dir, self.history)
