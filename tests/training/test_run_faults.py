"""Faults a user meets, injected on the toy paper: each is named in one line and loses nothing finished."""

import errno
import json
import subprocess
import sys

import numpy as np
import pytest

from medattn.runner.reproduction import hold_folder_lock
from medattn.runner.reproduction import main as run_main
from tests.training.test_reproduction_runner import _repro, data  # noqa: F401 - the fixture


def test_epochs_zero_is_refused_before_anything_runs(tmp_path, data, capsys):  # noqa: F811
    runs = tmp_path / "runs"
    assert run_main(_repro(tmp_path), ["--profile", "smoke", "--data-dir", str(data), "--runs-dir", str(runs),
                                       "--epochs", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nothing would train" in err[0] and "--epochs 1 or more" in err[0]
    assert not runs.exists()


def test_a_second_process_on_the_same_runs_folder_is_refused_naming_the_holder(tmp_path, data, capsys):  # noqa: F811
    runs = tmp_path / "runs"
    folder = runs / "toy-smoke"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; sys.path.insert(0, sys.argv[1]);"
        "from medattn.runner.reproduction import hold_folder_lock; hold_folder_lock(sys.argv[2]);"
        "print('locked', flush=True); time.sleep(60)"), str(pytest.importorskip("medattn").__path__[0] + "/.."),
        str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert run_main(_repro(tmp_path), ["--profile", "smoke", "--data-dir", str(data), "--runs-dir",
                                           str(runs)]) == 2
        err = capsys.readouterr().err
        assert f"pid {holder.pid}" in err and "in use by another process" in err
        assert not (folder / "results" / "runs.jsonl").exists()
    finally:
        holder.kill()
        holder.wait()
    # the holder gone, the same command runs; the lock is released when it returns (a second call takes it again)
    assert run_main(_repro(tmp_path), ["--profile", "smoke", "--data-dir", str(data), "--runs-dir", str(runs)]) == 0
    hold_folder_lock(folder).close()


def test_a_diverging_loss_stops_at_its_epoch_in_one_line(tmp_path, data, capsys):  # noqa: F811
    runs = tmp_path / "runs"
    code = run_main(_repro(tmp_path), ["--profile", "smoke", "--data-dir", str(data), "--runs-dir", str(runs),
                                       "--lr", "1e30"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1, err
    assert "[toy a s0] epoch 1/2" in err[0] and "the training loss became" in err[0] and "--lr" in err[0]
    rows = runs / "toy-smoke" / "results" / "runs.jsonl"
    assert not rows.exists() or "nan" not in rows.read_text().lower()


def test_a_full_disk_leaves_no_partial_checkpoint_and_names_the_path(tmp_path, monkeypatch):
    import importlib

    fit_module = importlib.import_module("medattn.training.fit")

    class Var:
        path, name = "v", "v"

        def numpy(self):
            return np.zeros(3)

    target = tmp_path / "last.npz"
    fit_module.save_variables([Var()], target)
    before = target.read_bytes()

    def full(f, *a, **k):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez", full)
    with pytest.raises(OSError, match=f"cannot write {target}: No space left on device"):
        fit_module.save_variables([Var()], target)
    assert target.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["last.npz"]


def test_atomic_text_write_keeps_the_old_file_on_failure(tmp_path, monkeypatch):
    from pathlib import Path

    from medattn.utils import atomic_write_text

    target = tmp_path / "config.json"
    atomic_write_text(target, "old")

    def full(self, text, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(OSError, match=f"cannot write {target}"):
        atomic_write_text(target, "new")
    monkeypatch.undo()
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_quiet_silences_the_progress_lines(tmp_path, data, capsys):  # noqa: F811
    runs = tmp_path / "runs"
    args = ["--profile", "smoke", "--data-dir", str(data), "--runs-dir", str(runs), "--set", "verbose=2"]
    assert run_main(_repro(tmp_path), args) == 0
    assert "[toy a s0] epoch 1/2" in capsys.readouterr().out
    assert run_main(_repro(tmp_path), args[:-2] + ["--quiet", "--out", str(tmp_path / "q")]) == 0
    assert "epoch" not in capsys.readouterr().out


def test_runs_with_other_results_folders_never_overwrite_each_others_checkpoints(tmp_path, data):  # noqa: F811
    runs = tmp_path / "runs"
    first, second = tmp_path / "first", tmp_path / "second"
    base = ["--profile", "smoke", "--data-dir", str(data), "--runs-dir", str(runs)]
    assert run_main(_repro(tmp_path), base + ["--out", str(first)]) == 0
    mine = runs / "toy-smoke" / "a_s0"
    stamp = (mine / "train" / "best.npz").read_bytes()
    assert run_main(_repro(tmp_path), base + ["--out", str(second), "--seed", "0", "--epochs", "1"]) == 0
    assert (mine / "train" / "best.npz").read_bytes() == stamp and (mine / "owner.txt").read_text().strip() == str(first)
    others = sorted(p.name for p in (runs / "toy-smoke").iterdir() if p.name.startswith("a_s0-"))
    assert len(others) == 1 and (runs / "toy-smoke" / others[0] / "owner.txt").read_text().strip() == str(second)
    # the first results folder's own run, again without --resume, takes back its own folder
    assert run_main(_repro(tmp_path), base + ["--out", str(first), "--epochs", "1"]) == 0
    assert (mine / "owner.txt").read_text().strip() == str(first)


def test_report_only_after_a_kill_says_incomplete_and_names_the_training_command(tmp_path, data, monkeypatch):  # noqa: F811
    """Killed in its second run before any heartbeat: run.json exists from the start, and --report-only marks the
    plan unfinished, with the training command (not the report command) as provenance."""
    from medattn.runner import reproduction
    from tests.training.test_reproduction_runner import CRASH, _killed_in_arm_b

    monkeypatch.setattr(reproduction, "HEARTBEAT_S", 3600)
    base = _killed_in_arm_b(_repro(tmp_path), tmp_path, data, CRASH)
    out = tmp_path / "runs" / "toy-smoke" / "results"
    assert json.loads((out / "run.json").read_text())["complete"] is False
    assert run_main(_repro(tmp_path), base + ["--report-only"]) == 0
    run = json.loads((out / "run.json").read_text())
    meta = json.loads((out / "runs.json").read_text())["meta"]
    assert run["complete"] is False and meta["complete"] is False
    assert "--report-only" not in run["command"] and "--report-only" in run["report_command"]
    assert "complete: `False`" in (out / "runs.md").read_text()


def test_a_selection_run_names_a_committed_rule_and_records_when_it_was_written(tmp_path, data, capsys):  # noqa: F811
    import subprocess

    repro = _repro(tmp_path)
    repo = tmp_path / "repo"
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(repo)]
    subprocess.run(git + ["init", "-q"], check=True)
    rule = repo / "RULE.md"
    rule.write_text("adopt if validation accuracy rises by 2 points\n")
    base = ["--profile", "smoke", "--data-dir", str(data), "--runs-dir", str(tmp_path / "runs"), "--set", "arms=a",
            "--rule", str(rule)]
    assert run_main(repro, base) == 2  # not committed
    assert "not committed; commit the rule before its run" in capsys.readouterr().err
    subprocess.run(git + ["add", "RULE.md"], check=True)
    subprocess.run(git + ["commit", "-q", "-m", "rule"], check=True)
    commit = subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    rule.write_text("adopt if it rises at all\n")
    assert run_main(repro, base) == 2  # edited after its commit
    assert "modified since its last commit" in capsys.readouterr().err
    subprocess.run(git + ["checkout", "-q", "RULE.md"], check=True)
    assert run_main(repro, base) == 0
    out = tmp_path / "runs" / "toy-smoke" / "results"
    run = json.loads((out / "run.json").read_text())
    assert run["rule"]["file"] == "RULE.md" and run["rule"]["commit"] == commit
    row = json.loads((out / "runs.jsonl").read_text())
    assert row["rule_commit"] == commit[:7] and row["rule_committed"] <= row["run_started"]


def test_a_run_says_where_its_time_went(tmp_path, data, capsys):  # noqa: F811
    out = tmp_path / "runs" / "toy-smoke" / "results"
    assert run_main(_repro(tmp_path), ["--profile", "smoke", "--data-dir", str(data), "--runs-dir",
                                       str(tmp_path / "runs"), "--set", "verbose=2", "--set", "arms=a"]) == 0
    line = [x for x in capsys.readouterr().out.splitlines() if "time by phase:" in x]
    assert len(line) == 1 and all(p in line[0] for p in ("data", "model build", "training", "evaluation", "tables"))
    phases = json.loads((out / "run.json").read_text())["phases_this_process"]
    assert phases["phase training_s"] > 0 and phases["phase model build_s"] >= 0  # a toy model builds in ms
    runs = sum(v for k, v in phases.items() if k.startswith("run "))
    assert phases["phase model build_s"] + phases["phase training_s"] <= runs + 0.2


def test_a_re_evaluation_names_the_commit_its_checkpoints_were_trained_at(tmp_path, data):  # noqa: F811
    runs = tmp_path / "runs"
    base = ["--profile", "smoke", "--data-dir", str(data), "--runs-dir", str(runs), "--set", "arms=a"]
    assert run_main(_repro(tmp_path), base) == 0
    ident = runs / "toy-smoke" / "a_s0" / "identity.json"
    stored = json.loads(ident.read_text())
    ident.write_text(json.dumps({**stored, "git_commit": "0123abc"}))  # as if trained at another commit
    assert run_main(_repro(tmp_path), base + ["--resume", "--set", "eval_tag=x", "--out", str(tmp_path / "e")]) == 0
    row = json.loads((tmp_path / "e" / "runs.jsonl").read_text())
    assert row["training_git_commit"] == "0123abc" and row["epochs_run_here"] == 0
    first = json.loads((runs / "toy-smoke" / "results" / "runs.jsonl").read_text())
    assert "training_git_commit" not in first


def test_each_epoch_line_says_how_long_the_stage_has_left():
    from medattn.training.fit import _time_left

    history = [{"epoch": e, "epoch_s": s} for e, s in enumerate([40.0, 10.0, 12.0, 11.0], 1)]
    assert _time_left(history, epochs=10) == "  ~69 s left"  # 6 epochs x the median 11.5 s (the traced first is out-voted)
    assert _time_left(history, epochs=400) == "  ~76 min left"
    assert _time_left(history, epochs=4) == ""
    assert _time_left([{"epoch": 1, "time_s": 3.0}], epochs=5) == ""  # logs from before epoch_s was recorded


def test_after_each_run_the_runner_says_how_long_the_rest_of_the_plan_may_take():
    from medattn.runner.reproduction import _duration, _plan_progress

    assert (_duration(42), _duration(1000), _duration(3 * 3600 + 300)) == ("42 s", "17 min", "3 h 05 min")
    rows = [{"wall_time_s": 1200.0}, {"wall_time_s": 1800.0}]
    assert _plan_progress(2, 9, 7, rows, rows[1]) == \
        "run 2/9 finished in 30 min; 7 to go, about 2 h 55 min at the mean of the 2 finished runs"
    assert _plan_progress(9, 9, 0, rows, rows[1]) == "run 9/9 finished in 30 min"


def test_too_few_validation_images_for_the_replicas_stop_the_run_in_one_line(tmp_path, data, capsys,  # noqa: F811
                                                                            monkeypatch):
    import medattn.runner.reproduction as runner
    from medattn.training.fit import ReplicaSplitError, _validation_for_replicas

    with pytest.raises(ReplicaSplitError, match=r"\[lbl\] validation data: 3 element\(s\) cannot be batched so that "
                                                r"each of 2 replicas .* \(use fewer replicas"):
        _validation_for_replicas(np.zeros((3, 4), "float32"), 2, 8, "lbl")

    def refused(*args, **kwargs):
        raise ReplicaSplitError("[toy a s0] validation data: 3 element(s) cannot be batched so that each of 2 "
                                "replicas gets a part of every batch (use fewer replicas or more validation images)")

    monkeypatch.setattr(runner, "_run_one", refused)
    code = run_main(_repro(tmp_path), ["--profile", "smoke", "--data-dir", str(data), "--runs-dir",
                                       str(tmp_path / "runs")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("toy.py: [toy a s0] validation data") and \
        "fewer replicas" in err[0]
