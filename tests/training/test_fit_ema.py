"""The moving average of the weights in ``fit`` (``ema`` > 0): its arithmetic, that validation, ``best.npz`` and
the returned model use it, that a resumed run continues it exactly, and that a multi-worker run refuses it."""

import dataclasses

import keras
import numpy as np
import pytest

from medattn.training import Stage, fit, set_seed
from medattn.training.config import config_hash
from tests.training._toy import toy_data, toy_dataset, toy_model


def _fit(tmp, decay=0.9, epochs=3, stop_after=None, resume=False, restore_best=False, callbacks=None, dropout=0.2):
    set_seed(0)
    x, y = toy_data(64)
    xv, yv = toy_data(32, seed=1)
    model = toy_model(dropout)
    res = fit(model, lambda e: toy_dataset(x, y, 8, 0, e), epochs=epochs, ckpt_dir=tmp, validation_data=(xv, yv),
              monitor="val_loss", restore_best=restore_best, verbose=0, stop_after=stop_after, resume=resume,
              callbacks=callbacks, ema=decay)
    return model, res, (xv, yv)


def test_the_average_follows_its_formula_after_every_batch(tmp_path):
    """a <- d a + (1 - d) w after each step, d = min(decay, (1 + t) / (10 + t)), from the initial weights; the model
    fit returns (no best restored) holds the average, not the last raw weights."""
    seen = []

    class Record(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            if not seen:
                seen.append([w.copy() for w in self.model.get_weights()])

        def on_train_batch_end(self, batch, logs=None):
            seen.append([w.copy() for w in self.model.get_weights()])

    model, res, _ = _fit(tmp_path, decay=0.8, epochs=2, callbacks=[Record()])
    avg = [w.astype("float64") for w in seen[0]]
    for t, ws in enumerate(seen[1:], start=1):
        d = min(0.8, (1 + t) / (10 + t))
        avg = [d * a + (1 - d) * w for a, w in zip(avg, ws)]
    assert len(seen) == 1 + 2 * 8  # 64 examples in batches of 8, two epochs
    for a, w in zip(avg, model.get_weights()):
        np.testing.assert_allclose(w, a, rtol=1e-5, atol=1e-6)
    assert not all(np.allclose(w, r) for w, r in zip(model.get_weights(), seen[-1]))


def test_validation_and_best_checkpoint_use_the_average(tmp_path):
    model, res, (xv, yv) = _fit(tmp_path / "a")
    ev = model.evaluate(xv, yv, verbose=0, return_dict=True)  # the returned model is the final average
    assert ev["loss"] == pytest.approx(res["history"][-1]["val_loss"], rel=1e-6)
    raw = toy_model()  # the raw weights of the last step, from last.npz, score otherwise
    with np.load(tmp_path / "a" / "last.npz") as z:  # the model's variables come first, in order
        for i, v in enumerate(raw.variables):
            v.assign(z[f"v{i}"])
    assert raw.evaluate(xv, yv, verbose=0, return_dict=True)["loss"] != pytest.approx(ev["loss"], rel=1e-4)
    best, res_b, _ = _fit(tmp_path / "b", restore_best=True)
    assert best.evaluate(xv, yv, verbose=0, return_dict=True)["loss"] == pytest.approx(res_b["best_value"], rel=1e-6)


def test_an_interrupted_average_resumes_exactly(tmp_path):
    full, res_full, _ = _fit(tmp_path / "full", epochs=4)
    _fit(tmp_path / "part", epochs=4, stop_after=2)
    resumed, res_res, _ = _fit(tmp_path / "part", epochs=4, resume=True)
    assert res_res["resumed_from"] == 2
    for a, b in zip(full.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert [h["val_loss"] for h in res_full["history"]] == [h["val_loss"] for h in res_res["history"]]


def test_a_checkpoint_without_the_average_is_not_resumed_with_one(tmp_path, capsys):
    _fit(tmp_path, decay=0.0, stop_after=1)
    _, res, _ = _fit(tmp_path, decay=0.9, resume=True)
    assert res["restarted"] and res["resumed_from"] is None
    assert "last.npz" in capsys.readouterr().err


def test_the_multi_worker_loop_refuses_the_average(tmp_path, monkeypatch):
    from medattn.training import custom_loop

    monkeypatch.setattr(custom_loop, "needs_custom_loop", lambda strategy: True)
    with pytest.raises(ValueError, match="ema .* not supported under a multi-worker strategy"):
        _fit(tmp_path)


def test_stage_ema_is_validated_and_recorded_only_when_on():
    with pytest.raises(ValueError, match="ema must be >= 0 and below 1"):
        Stage(ema=1.0)
    with pytest.raises(ValueError, match="ema must be >= 0 and below 1"):
        Stage(ema=-0.1)
    assert "ema" not in Stage().to_dict()
    assert Stage(ema=0.99).to_dict()["ema"] == 0.99
    from medattn.training import ExperimentConfig

    base = ExperimentConfig(stages=(Stage("train"),))
    assert config_hash(dataclasses.replace(base, stages=(Stage("train", ema=0.0),))) == config_hash(base)
    assert config_hash(dataclasses.replace(base, stages=(Stage("train", ema=0.99),))) != config_hash(base)
