import numpy as np
import pytest

from medattn.training import fit, set_seed
from tests.training._toy import toy_data, toy_dataset, toy_model


def _run(tmp, seed=0, stop_after=None, resume=False, model=None):
    set_seed(seed)
    x, y = toy_data(64)
    xv, yv = toy_data(32, seed=1)
    model = model or toy_model()
    res = fit(model, lambda e: toy_dataset(x, y, 8, seed, e), epochs=4, ckpt_dir=tmp, validation_data=(xv, yv),
              resume=resume, monitor="val_loss", restore_best=False, verbose=0, stop_after=stop_after)
    return model, res


def test_interrupted_and_resumed_equals_uninterrupted(tmp_path):
    full, res_full = _run(tmp_path / "full")
    _run(tmp_path / "part", stop_after=2)  # "killed" after epoch 2
    # a new process would rebuild the model from scratch with the same seed, then resume
    resumed, res_res = _run(tmp_path / "part", resume=True)
    assert res_res["resumed_from"] == 2 and res_res["epochs_run"] == 2
    for a, b in zip(full.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert [h["val_loss"] for h in res_full["history"]] == [h["val_loss"] for h in res_res["history"]]
    assert (tmp_path / "part" / "log.csv").read_text().count("\n") == 5  # header + 4 epochs


def test_same_seed_twice_identical_and_other_seed_differs(tmp_path):
    _, a = _run(tmp_path / "a", seed=3)
    _, b = _run(tmp_path / "b", seed=3)
    _, c = _run(tmp_path / "c", seed=4)
    assert a["history"][-1]["val_loss"] == b["history"][-1]["val_loss"]
    assert a["history"][-1]["val_accuracy"] == b["history"][-1]["val_accuracy"]
    assert a["history"][-1]["val_loss"] != c["history"][-1]["val_loss"]


def test_best_weights_restored_and_early_stop(tmp_path):
    set_seed(0)
    x, y = toy_data(64)
    model = toy_model()
    res = fit(model, lambda e: toy_dataset(x, y, 8, 0, e), epochs=6, ckpt_dir=tmp_path, validation_data=(x, y),
              monitor="val_accuracy", mode="max", patience=1, verbose=0)
    best = max(h["val_accuracy"] for h in res["history"])
    assert res["best_value"] == best
    ev = model.evaluate(x, y, verbose=0, return_dict=True)
    assert abs(ev["accuracy"] - best) < 1e-6
    assert (tmp_path / "best.npz").exists()


def test_resuming_an_early_stopped_run_trains_nothing(tmp_path):
    def run(resume):
        set_seed(0)
        x, y = toy_data(64)
        model = toy_model()
        # val_loss falls, so with mode="max" epoch 1 stays best and patience 1 stops after epoch 2
        res = fit(model, lambda e: toy_dataset(x, y, 8, 0, e), epochs=6, ckpt_dir=tmp_path, validation_data=(x, y),
                  monitor="val_loss", mode="max", patience=1, restore_best=False, verbose=0, resume=resume)
        return model, res

    first, r1 = run(False)
    assert r1["stopped_early"] and len(r1["history"]) == 2
    again, r2 = run(True)
    assert r2["resumed_from"] == 2 and r2["epochs_run"] == 0 and r2["stopped_early"]
    assert len(r2["history"]) == 2
    for a, b in zip(first.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_unreadable_checkpoint_is_named_and_the_stage_starts_over(tmp_path, capsys):
    _run(tmp_path, stop_after=2)
    (tmp_path / "last.npz").write_bytes(b"PK\x03\x04 truncated")  # what a kill mid-write used to leave
    model, res = _run(tmp_path, resume=True)
    assert res["restarted"] and res["resumed_from"] is None and len(res["history"]) == 4
    assert str(tmp_path / "last.npz") in capsys.readouterr().err
    fresh, _ = _run(tmp_path / "fresh")
    for a, b in zip(model.get_weights(), fresh.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_a_kill_during_the_checkpoint_write_leaves_the_last_checkpoint_whole(tmp_path, monkeypatch):
    _run(tmp_path, stop_after=2)
    real_savez = np.savez

    def dying_savez(f, *a, **k):
        f.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(np, "savez", dying_savez)
    try:
        _run(tmp_path, resume=True)
    except KeyboardInterrupt:
        pass
    monkeypatch.setattr(np, "savez", real_savez)
    state = __import__("json").loads((tmp_path / "state.json").read_text())
    assert state["epochs_done"] == 2  # epoch 3 never finished its checkpoint
    _, res = _run(tmp_path, resume=True)
    assert res["resumed_from"] == 2 and not res["restarted"]


def test_first_run_of_a_fresh_process_equals_later_runs(tmp_path):
    """In a new process where ``set_seed`` is the first to import Keras, the first run equals a second run with
    the same seed (Keras' import used to draw from the freshly seeded generators, so it did not)."""
    import subprocess
    import sys

    from tests.conftest import REPO

    code = ("import pathlib, sys; sys.path.insert(0, sys.argv[1]);"
            "from tests.training.test_fit_resume import _run;"
            "t = pathlib.Path(sys.argv[2]);"
            "print([_run(t / k)[1]['history'][-1]['val_loss'] for k in 'ab'])")
    r = subprocess.run([sys.executable, "-c", code, str(REPO), str(tmp_path)], capture_output=True, text=True,
                       timeout=300, env={**__import__("os").environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert r.returncode == 0, r.stderr[-2000:]
    first, second = eval(r.stdout.strip().splitlines()[-1])
    assert first == second


def _write_many(path, n):
    from medattn.utils import atomic_write_text

    for i in range(n):
        atomic_write_text(path, f"{i}\n")


def test_atomic_write_from_two_processes_at_once(tmp_path):
    """Two workers of a multi-worker run write the same identity.json at the same moment: with one shared temporary
    name one process's rename took the other's file away (FileNotFoundError)."""
    import multiprocessing as mp

    path = tmp_path / "identity.json"
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_write_many, args=(path, 300)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert path.read_text() == "299\n" and not list(tmp_path.glob(".*tmp"))


def test_a_monitor_missing_from_the_logs_is_refused_when_there_is_validation_data(tmp_path):
    """Without this check a misspelt monitor (``val_auc`` for ``val_label_auc``) kept the last epoch silently."""
    set_seed(0)
    x, y = toy_data(32)
    with pytest.raises(ValueError, match=r"monitor 'val_auc' is not among .*val_accuracy"):
        fit(toy_model(), lambda e: toy_dataset(x, y, 8, 0, e), epochs=2, ckpt_dir=tmp_path, validation_data=(x, y),
            monitor="val_auc", mode="max", verbose=0)
    # without validation data a missing monitor still means "the last epoch is the best", as documented
    res = fit(toy_model(), lambda e: toy_dataset(x, y, 8, 0, e), epochs=2, ckpt_dir=tmp_path / "b",
              monitor="val_loss", verbose=0)
    assert res["best_epoch"] == 2


def test_training_seconds_sums_every_process_that_trained():
    """time_s restarts in a resumed process; training_seconds adds the epochs, not the cumulative clock."""
    from medattn.training.fit import training_seconds

    new = [{"time_s": 5.0, "epoch_s": 5.0}, {"time_s": 9.0, "epoch_s": 4.0}, {"time_s": 3.0, "epoch_s": 3.0}]
    assert training_seconds(new) == 12.0
    old = [{"time_s": 10.3}, {"time_s": 18.8}, {"time_s": 29.1}, {"time_s": 7.0}, {"time_s": 15.0}]  # resumed at 4
    assert training_seconds(old) == pytest.approx(29.1 + 15.0)
    assert training_seconds([]) == 0.0


def test_the_train_step_is_traced_once(tmp_path):
    """fit builds the compiled loss and metrics before the first trace, so the train step is not traced a second
    time for the variables they would create inside it (the cost that dominates short runs of large models)."""
    import keras

    class Counting(keras.Sequential):
        traces = 0

        def train_step(self, data):
            Counting.traces += 1
            return super().train_step(data)

    set_seed(0)
    x, y = toy_data(24)
    model = Counting([keras.Input((6,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    fit(model, lambda e: toy_dataset(x, y, 16, 0, e), epochs=2, ckpt_dir=tmp_path, validation_data=(x, y), verbose=0)
    assert Counting.traces == 1
