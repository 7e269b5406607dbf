"""The shared reproduction runner, on a toy paper: folders, identity, resume, report-only, dry run, refusals."""

import dataclasses
import json
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from medattn.runner.reproduction import Reproduction, RunSpec, flat_rows
from medattn.runner.reproduction import main as run_main
from medattn.training import ExperimentConfig, Stage
from tests.training._toy import toy_data, toy_dataset, toy_model


@dataclasses.dataclass(frozen=True)
class ToyConfig(ExperimentConfig):
    name: str = "toy"
    arms: tuple[str, ...] = ("a", "b")
    dropout: float = 0.2
    eval_tag: str | None = None  # an evaluation-only setting (as MIAS's tta): in a row's identity, not a checkpoint's
    ARM_FIELDS: ClassVar[tuple[str, ...]] = ("arms",)
    IDENTITY_IF_SET: ClassVar[tuple[str, ...]] = ("eval_tag",)
    EVAL_ONLY_FIELDS: ClassVar[tuple[str, ...]] = ("eval_tag",)


PROFILES = {
    "smoke": ToyConfig(profile="smoke", stages=(Stage("train", epochs=2, batch_size=8),), verbose=0),
    "cpu": ToyConfig(profile="cpu", seeds=(0, 1), stages=(Stage("train", epochs=3, batch_size=8),), verbose=0),
}
CALLS = []
CRASH: set = set()
CRASH_AFTER_FIT: set = set()


def _load(ctx):
    n = int((Path(ctx.data.path) / "n.txt").read_text())
    if (Path(ctx.data.path) / "skip.txt").exists():  # a file the loader could not read, named in the tables
        ctx.skipped.append((Path(ctx.data.path) / "skip.txt").read_text())
    if (Path(ctx.data.path) / "audit.txt").exists():  # splits built on the leakage audit, with this rule
        from medattn.datasets.audit import VERIFY_TIERS

        tiers = VERIFY_TIERS if (Path(ctx.data.path) / "audit.txt").read_text() == "two-tier" else ()
        ctx.audit([], ctx.data.path, verify=tiers)
    return {"train": toy_data(n if not ctx.dry_run else 16), "val": toy_data(16, seed=1)}


def _run_one(ctx, run, data):
    stage = ctx.cfg.stage("train")
    CALLS.append((run.arm, run.seed, ctx.dry_run))
    if run.arm in CRASH:  # a process killed during this run
        import time

        time.sleep(0.3)
        raise KeyboardInterrupt
    ctx.seed(run.seed)
    model = ctx.build(lambda: toy_model(ctx.cfg.dropout), stage, len(data["train"][0]),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    x, y = data["train"]
    res = ctx.fit(model, lambda e: toy_dataset(x, y, stage.batch_size, run.seed, e), stage,
                  ctx.run_dir(run) / "train", label=f"{run.arm} s{run.seed}", validation_data=data["val"],
                  steps_per_epoch=None)
    if run.arm in CRASH_AFTER_FIT:  # killed after its checkpoints were written, before its row
        raise KeyboardInterrupt
    prob = ctx.predict(model, data["val"][0])
    acc = float(np.mean(prob.argmax(1) == data["val"][1]))
    return {"accuracy": acc, "epochs_trained": len(res["history"]), "nan_metric": float("nan"),
            "eval_tag": ctx.cfg.eval_tag, "epochs_run_here": res["epochs_run"]}


def _report(ctx, rows, final):
    from medattn.evaluation import write_table

    write_table(ctx.out, "runs", flat_rows(rows), title=f"toy{ctx.mark}", meta=ctx.meta)


def _repro(tmp_path, **kw):
    script = tmp_path / "repo" / "reproductions" / "toy.py"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text("# toy\n")
    (tmp_path / "repo" / "results").mkdir(exist_ok=True)
    return Reproduction(name="toy", script=str(script), description="toy", profiles=PROFILES, paper={},
                        load_data=_load, plan=lambda cfg: [RunSpec(a, s) for a in cfg.arms for s in cfg.seeds],
                        run_one=_run_one, report=_report, backbones=lambda cfg: ["vgg16"], **kw)


@pytest.fixture()
def data(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    (d / "n.txt").write_text("32")
    return d


def test_folders_config_and_resume_reuse(tmp_path, data, capsys):
    import medattn

    repro = _repro(tmp_path)
    runs = tmp_path / "runs"
    CALLS.clear()
    assert run_main(repro, ["--profile", "smoke", "--data-dir", str(data), "--runs-dir", str(runs),
                            "--set", "verbose=1"]) == 0
    out = runs / "toy-smoke" / "results"  # not the committed results/ folder
    # the kernels TensorFlow runs are said and recorded (medattn/__init__.py turns oneDNN on unless the user chose)
    onednn = "on" if medattn.onednn_enabled() else "off"
    assert f"TensorFlow's oneDNN CPU kernels: {onednn}" in capsys.readouterr().out
    assert json.loads((out / "run.json").read_text())["machine"]["onednn"] is medattn.onednn_enabled()
    assert not any((tmp_path / "repo" / "results").iterdir())
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["stages"]["train"]["epochs"] == 2 and "epochs" not in cfg
    assert cfg["mixed_precision"] == "off" and cfg["mixed_precision_requested"] == "off"
    rows = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert [r["arm"] for r in rows] == ["a", "b"] and rows[0]["epochs_trained"] == 2
    assert rows[0]["nan_metric"] is None  # strict JSON, no bare NaN
    json.loads((out / "runs.json").read_text(), parse_constant=lambda c: pytest.fail(f"bare {c} in JSON"))
    ident = json.loads((runs / "toy-smoke" / "a_s0" / "identity.json").read_text())
    assert ident["arm"] == "a" and ident["seed"] == 0 and ident["data_sha256"]
    assert (runs / "toy-smoke" / "a_s0" / "train" / "tensorboard").is_dir()
    # --resume: finished runs are reused, nothing trains; wall time is summed over both processes
    CALLS.clear()
    assert run_main(repro, ["--profile", "smoke", "--data-dir", str(data), "--runs-dir", str(runs),
                            "--resume", "--set", "verbose=1"]) == 0
    assert CALLS == []
    kept = [line for line in capsys.readouterr().out.splitlines() if "finished earlier" in line]
    assert kept == [f"[toy] run {i}/2: {arm} seed 0 finished earlier: kept from {out / 'runs.jsonl'}" + (
        f" (trained at {rows[0]['git_commit'][:7]})" if rows[0].get("git_commit") else "") for i, arm in ((1, "a"),
                                                                                                         (2, "b"))]
    run = json.loads((out / "run.json").read_text())
    assert len(run["processes"]) == 2
    assert run["wall_time_s"] == pytest.approx(sum(p["wall_time_s"] for p in run["processes"]), abs=0.2)
    # the committed profile writes into results/<name>/
    assert run_main(repro, ["--profile", "cpu", "--data-dir", str(data), "--runs-dir", str(runs),
                            "--set", "arms=a", "--seeds", "0"]) == 0
    assert (tmp_path / "repo" / "results" / "toy" / "runs.json").exists()


def test_settings_a_run_does_not_read_stay_out_of_config_json(tmp_path, data, capsys):
    """config.json records only what ran: a field the script's ``not_used`` names for this configuration is left
    out and listed with its reason; the file still reads back (the field at its default). Given by the user there,
    it is refused (it would change nothing, silently)."""
    from medattn.training import load_config

    why = "the toy model has no dropout at this size"
    repro = _repro(tmp_path, not_used=lambda cfg: {"dropout": why} if cfg.profile == "smoke" else {})
    assert run_main(repro, ["--profile", "smoke", "--data-dir", str(data), "--runs-dir", str(tmp_path / "r")]) == 0
    path = tmp_path / "r" / "toy-smoke" / "results" / "config.json"
    cfg = json.loads(path.read_text())
    assert "dropout" not in cfg and cfg["not_used"] == {"dropout": why} and "seeds" in cfg
    assert load_config(ToyConfig, path).dropout == 0.2
    assert run_main(repro, ["--profile", "cpu", "--data-dir", str(data), "--runs-dir", str(tmp_path / "r"),
                            "--out", str(tmp_path / "o"), "--seeds", "0", "--epochs", "1"]) == 0
    cfg = json.loads((tmp_path / "o" / "config.json").read_text())
    assert cfg["dropout"] == 0.2 and "not_used" not in cfg
    # set by the user where it is not read: refused before anything runs, naming the field and the reason
    CALLS.clear()
    assert run_main(repro, ["--profile", "smoke", "--data-dir", str(data), "--runs-dir", str(tmp_path / "r2"),
                            "--set", "dropout=0.3"]) == 2
    err = capsys.readouterr().err
    assert "dropout=0.3 is not read by this run" in err and why in err and CALLS == []
    assert not (tmp_path / "r2").exists()
    # where it is read, the same setting runs
    assert run_main(repro, ["--profile", "cpu", "--data-dir", str(data), "--runs-dir", str(tmp_path / "r"),
                            "--out", str(tmp_path / "o2"), "--seeds", "0", "--epochs", "1", "--set",
                            "dropout=0.3"]) == 0
    assert json.loads((tmp_path / "o2" / "config.json").read_text())["dropout"] == 0.3


def test_a_weights_file_is_recorded_by_its_hash_and_card(tmp_path, data):
    """run.json names a --weights file by its SHA-256 and carries its card's provenance (what it was pretrained on,
    by which command), so a table says which encoder it started from wherever the file lies."""
    import hashlib

    w = tmp_path / "enc.weights.h5"
    w.write_bytes(b"pretend weights")
    (tmp_path / "enc.weights.h5.json").write_text(json.dumps({"backbone": "vgg16", "options": {"width": 0.25},
                                                              "command": "python pretrain_encoder.py ..."}))
    assert run_main(_repro(tmp_path), ["--profile", "smoke", "--data-dir", str(data), "--runs-dir",
                                       str(tmp_path / "r"), "--weights", str(w)]) == 0
    run = json.loads((tmp_path / "r" / "toy-smoke" / "results" / "run.json").read_text())
    assert run["weights_sha256"] == hashlib.sha256(b"pretend weights").hexdigest()
    assert run["weights_card"]["command"] == "python pretrain_encoder.py ..."


def test_resume_refuses_another_identity(tmp_path, data, capsys):
    repro = _repro(tmp_path)
    base = ["--profile", "smoke", "--data-dir", str(data), "--runs-dir", str(tmp_path / "runs"), "--set", "arms=a"]
    assert run_main(repro, base) == 0
    capsys.readouterr()
    # other configuration
    assert run_main(repro, base + ["--resume", "--set", "dropout=0.3"]) == 2
    err = capsys.readouterr().err
    # the setting that changed, with both values (not the configuration hash)
    assert "dropout: 0.2 there, 0.3 now" in err and "another run" in err and "Traceback" not in err
    # other data
    (data / "n.txt").write_text("23")  # same name and size, other content: the fingerprint hashes contents
    assert run_main(repro, base + ["--resume"]) == 2
    assert "data_sha256" in capsys.readouterr().err
    # without --resume it starts over
    CALLS.clear()
    assert run_main(repro, base) == 0 and CALLS == [("a", 0, False)]


def test_audit_rule_enters_identity_and_run_json(tmp_path, data, capsys):
    """Another near-duplicate rule makes another split: --resume refuses across it. The hash-only rule that every
    run used before the second tier existed stays out of the identity, so those runs keep theirs."""
    repro = _repro(tmp_path)
    runs = tmp_path / "runs"
    base = ["--profile", "smoke", "--data-dir", str(data), "--runs-dir", str(runs), "--set", "arms=a"]
    (data / "audit.txt").write_text("hash")
    assert run_main(repro, base) == 0
    ident = json.loads((runs / "toy-smoke" / "a_s0" / "identity.json").read_text())
    assert "audit" not in ident
    assert json.loads((runs / "toy-smoke" / "results" / "run.json").read_text())["audit_rule"] == "phash<=6"
    (data / "audit.txt").write_text("two-tier")
    capsys.readouterr()
    assert run_main(repro, base + ["--resume"]) == 2
    assert "audit" in capsys.readouterr().err
    assert run_main(repro, base) == 0
    ident = json.loads((runs / "toy-smoke" / "a_s0" / "identity.json").read_text())
    assert ident["audit"] == "phash<=6 | phash<=12&ncc32>=0.85 | phash<=16&ncc32>=0.9"
    # --report-only keeps the rule the training run recorded
    assert run_main(repro, base + ["--report-only"]) == 0
    run = json.loads((runs / "toy-smoke" / "results" / "run.json").read_text())
    assert run["audit_rule"].startswith("phash<=6 | ")


def _killed_in_arm_b(repro, tmp_path, data, when: set) -> list[str]:
    """Run the smoke profile until arm b is killed (``when``: CRASH, before it trains; CRASH_AFTER_FIT, after its
    checkpoints); returns the command line to resume it with."""
    base = ["--profile", "smoke", "--data-dir", str(data), "--runs-dir", str(tmp_path / "runs")]
    when.add("b")
    try:
        with pytest.raises(KeyboardInterrupt):
            run_main(repro, base)
    finally:
        when.clear()
    return base


def test_killed_process_still_counts_in_run_json(tmp_path, data, monkeypatch):
    """run.json is rewritten while training, so the time of a process that dies counts when --resume finishes."""
    from medattn.runner import reproduction

    monkeypatch.setattr(reproduction, "HEARTBEAT_S", 0.05)
    repro = _repro(tmp_path)
    base = _killed_in_arm_b(repro, tmp_path, data, CRASH)
    out = tmp_path / "runs" / "toy-smoke" / "results"
    first = json.loads((out / "run.json").read_text())
    assert first["complete"] is False and len(first["processes"]) == 1 and first["wall_time_s"] >= 0.2
    CALLS.clear()
    assert run_main(repro, base + ["--resume"]) == 0
    assert CALLS == [("b", 0, False)]  # the finished run is reused
    run = json.loads((out / "run.json").read_text())
    assert run["complete"] is True and len(run["processes"]) == 2
    assert run["processes"][0]["wall_time_s"] == first["processes"][0]["wall_time_s"]
    assert run["wall_time_s"] == pytest.approx(sum(p["wall_time_s"] for p in run["processes"]), abs=0.2)


def test_a_row_finished_from_checkpoints_names_its_resumed_stages(tmp_path, data):
    """A run killed after training and resumed: its row says which stages continued from a checkpoint (its wall time
    is then only the resuming process's part); a run made in one go has no such field."""
    repro = _repro(tmp_path)
    base = _killed_in_arm_b(repro, tmp_path, data, CRASH_AFTER_FIT)
    assert run_main(repro, base + ["--resume"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "runs" / "toy-smoke" / "results" / "runs.jsonl").open()]
    assert [r["arm"] for r in rows] == ["a", "b"]
    assert "resumed_stages" not in rows[0] and rows[1]["resumed_stages"] == ["b s0: after epoch 2"]


def test_checkpoints_resume_by_identity_not_by_arm(tmp_path, data):
    """A killed multi-seed run resumed: each seed continues its own checkpoint, never seed 0's."""
    repro = _repro(tmp_path)
    runs = tmp_path / "runs"
    assert run_main(repro, ["--profile", "smoke", "--data-dir", str(data), "--runs-dir", str(runs), "--set",
                            "arms=a", "--seeds", "0,1"]) == 0
    s0 = json.loads((runs / "toy-smoke" / "a_s0" / "train" / "log.json").read_text())
    s1 = json.loads((runs / "toy-smoke" / "a_s1" / "train" / "log.json").read_text())
    assert s0[-1]["val_loss"] != s1[-1]["val_loss"]


def test_report_only_keeps_training_provenance(tmp_path, data):
    """--report-only rebuilds the tables from the finished rows without loading data or training: command, wall
    time, phases and the files the training process skipped stay those of the training process."""
    (data / "skip.txt").write_text("x (3).png: unreadable")
    repro = _repro(tmp_path)
    runs = tmp_path / "runs"
    args = ["--profile", "smoke", "--data-dir", str(data), "--runs-dir", str(runs), "--set", "arms=a"]
    assert run_main(repro, args) == 0
    out = runs / "toy-smoke" / "results"
    before = json.loads((out / "run.json").read_text())
    # as if trained on another machine with other packages: the rebuilt tables name that machine, not this one
    before["machine"] = {"cpu": "the training machine", "cores": 64}
    before["packages"] = {"keras": "0.0-training"}
    before["data_dir"], before["data_manifest_sha256"] = "/where/it/trained/busi", "0" * 64
    (out / "run.json").write_text(json.dumps(before))
    CALLS.clear()
    assert run_main(repro, args + ["--report-only"]) == 0
    assert CALLS == []
    after = json.loads((out / "run.json").read_text())
    for meta in (after, json.loads((out / "runs.json").read_text())["meta"]):
        assert meta["machine"] == before["machine"] and meta["packages"] == before["packages"]
        assert meta["data_dir"] == before["data_dir"] and meta["data_manifest_sha256"] == "0" * 64
        assert meta.get("audit_rule") == before.get("audit_rule") and meta["strategy"] == before["strategy"]
    assert after["command"] == before["command"] and "--report-only" in after["report_command"]
    assert after["wall_time_s"] == before["wall_time_s"]
    assert before["skipped"] == after["skipped"] == ["x (3).png: unreadable"]
    assert after["phases_this_process"] == before["phases_this_process"] and after["synthetic"] is False
    assert json.loads((out / "runs.json").read_text())["meta"]["skipped_files"] == ["x (3).png: unreadable"]


def test_dry_run_marks_everything_and_trains_two_steps(tmp_path, data, monkeypatch, capsys):
    import medattn.backbones.registry as registry

    monkeypatch.setattr(registry, "_network_reachable", lambda: False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    repro = _repro(tmp_path)
    runs = tmp_path / "runs"
    CALLS.clear()
    assert run_main(repro, ["--profile", "cpu", "--dry-run", "--weights", "imagenet", "--data-dir", str(data),
                            "--runs-dir", str(runs)]) == 0
    assert CALLS == [("a", 0, True), ("b", 0, True)]  # one seed
    assert "would stop a real run" in capsys.readouterr().out
    out = runs / "toy-cpu-dryrun" / "results"
    table = json.loads((out / "runs.json").read_text())
    assert "DRY RUN" in table["title"] and table["meta"]["dry_run"] is True
    log = json.loads((runs / "toy-cpu-dryrun" / "a_s0" / "train" / "log.json").read_text())
    assert len(log) == 1  # one epoch of two steps
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["dry_run"] is True and cfg["weights"] == "none" and cfg["weights_unavailable"]
    # a real run with unavailable ImageNet weights stops before training, in one line
    CALLS.clear()
    assert run_main(repro, ["--profile", "smoke", "--weights", "imagenet", "--data-dir", str(data),
                            "--runs-dir", str(runs)]) == 2
    err = capsys.readouterr().err
    assert CALLS == [] and "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5" in err and "--weights PATH" in err


def test_user_errors_exit_2_in_one_line(tmp_path, data, capsys):
    repro = _repro(tmp_path, refused={"--image-size": "toy inputs have no size"})
    assert run_main(repro, ["--profile", "smoke", "--data-dir", str(tmp_path / "nope")]) == 2
    assert "no such folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        run_main(repro, ["--profile", "smoke", "--data-dir", str(data), "--image-size", "32"])
    assert e.value.code == 2
    assert "--image-size is not supported by toy.py: toy inputs have no size" in capsys.readouterr().err
    assert run_main(repro, ["--profile", "smoke", "--data-dir", str(data), "--weights", str(tmp_path / "w.h5")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert run_main(repro, ["--profile", "smoke", "--runs-dir", str(tmp_path / "r")]) == 2
    assert "no data" in capsys.readouterr().err
    assert not list((tmp_path / "r").rglob("config.json"))  # nothing ran, nothing written


def test_default_runs_dir_is_beside_results_whatever_the_current_directory(tmp_path, data, monkeypatch):
    repro = _repro(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert run_main(repro, ["--profile", "smoke", "--data-dir", str(data), "--set", "arms=a"]) == 0
    assert (tmp_path / "repo" / "runs" / "toy-smoke" / "a_s0" / "train" / "last.npz").exists()
    assert not (elsewhere / "runs").exists()
    monkeypatch.chdir(tmp_path)  # resuming from another directory finds the same run
    CALLS.clear()
    assert run_main(repro, ["--profile", "smoke", "--data-dir", str(data), "--set", "arms=a", "--resume"]) == 0
    assert CALLS == []


def test_rows_without_identity_are_not_resumed(tmp_path, data, capsys):
    repro = _repro(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "runs.jsonl").write_text(json.dumps({"model": "a", "seed": 0, "accuracy": 0.5}) + "\n")
    assert run_main(repro, ["--profile", "smoke", "--data-dir", str(data), "--out", str(out), "--set", "arms=a",
                            "--resume"]) == 2
    assert "before runs had an identity" in capsys.readouterr().err


def test_dataset_tag_keeps_two_datasets_apart(tmp_path, data):
    """A script that takes several datasets (DCAT) names each: checkpoints and default results of one dataset never
    meet the other's, so --resume on the second does not refuse over the first's identity."""
    other = tmp_path / "other"
    other.mkdir()
    (other / "n.txt").write_text("24")
    repro = _repro(tmp_path, dataset_tag=lambda cfg, source: Path(source.path).name)
    runs = tmp_path / "runs"
    for d in (data, other):
        assert run_main(repro, ["--profile", "cpu", "--data-dir", str(d), "--runs-dir", str(runs), "--resume",
                                "--set", "arms=a", "--seeds", "0", "--epochs", "1"]) == 0
    assert (runs / "toy-cpu-data" / "a_s0").is_dir() and (runs / "toy-cpu-other" / "a_s0").is_dir()
    results = tmp_path / "repo" / "results" / "toy"
    assert json.loads((results / "data" / "config.json").read_text())["data_dir"] == str(data)
    assert json.loads((results / "other" / "config.json").read_text())["data_dir"] == str(other)


def test_arm_fields_stay_out_of_the_identity(tmp_path, data):
    """A row made by a run of some arms (``--set arms=b``) is reused by the run of all arms; rows whose hash
    was recorded before the arm fields left it (same command, or that arm alone) are accepted too."""
    from medattn.training.config import config_hash, legacy_config_hashes

    cfg = PROFILES["smoke"]
    assert config_hash(dataclasses.replace(cfg, arms=("b",))) == config_hash(cfg)
    assert config_hash(dataclasses.replace(cfg, dropout=0.3)) != config_hash(cfg)
    legacy = legacy_config_hashes(cfg, "b")
    assert len(legacy) == 2 and config_hash(cfg) not in legacy
    repro = _repro(tmp_path)
    base = ["--profile", "smoke", "--data-dir", str(data), "--runs-dir", str(tmp_path / "runs")]
    CALLS.clear()
    assert run_main(repro, base + ["--set", "arms=b"]) == 0 and CALLS == [("b", 0, False)]
    CALLS.clear()
    assert run_main(repro, base + ["--resume"]) == 0 and CALLS == [("a", 0, False)]
    rows_path = tmp_path / "runs" / "toy-smoke" / "results" / "runs.jsonl"
    rows = [json.loads(line) for line in rows_path.read_text().splitlines()]
    assert sorted(r["arm"] for r in rows) == ["a", "b"]
    # rows stamped the old way: arm "a" by a run of "a" alone, arm "b" by the full command
    old = {"a": legacy_config_hashes(dataclasses.replace(cfg, arms=("a",)))}
    old["b"] = legacy_config_hashes(cfg)
    assert old["a"] <= legacy_config_hashes(cfg, "a") and old["a"] != old["b"]
    for r in rows:
        r["identity"]["config_sha256"] = next(iter(old[r["arm"]]))
    rows_path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    CALLS.clear()
    assert run_main(repro, base + ["--resume"]) == 0 and CALLS == []
    # a hash that is neither is another configuration
    rows[0]["identity"]["config_sha256"] = "0" * 16
    rows_path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert run_main(repro, base + ["--resume"]) == 2


def test_the_callers_dtype_policy_is_restored_after_a_run(tmp_path, data):
    """A run sets Keras' global policy from --mixed-precision; in-process callers (tests, notebooks) got it left
    behind: on a CPU with native bf16, where `auto` means bf16, a later test in the same worker computed in bf16
    (class probabilities summing to 1.0008)."""
    import keras

    repro = _repro(tmp_path)
    assert keras.mixed_precision.global_policy().name == "float32"
    assert run_main(repro, ["--profile", "smoke", "--data-dir", str(data), "--runs-dir", str(tmp_path / "runs"),
                            "--mixed-precision", "bf16"]) == 0
    cfg = json.loads((tmp_path / "runs" / "toy-smoke" / "results" / "config.json").read_text())
    assert cfg["mixed_precision"] == "bf16"  # the run itself did compute in bf16
    assert keras.mixed_precision.global_policy().name == "float32"
    keras.mixed_precision.set_global_policy("mixed_bfloat16")  # a caller's own choice stays too,
    try:  # also through a refused command line (argparse exits)
        with pytest.raises(SystemExit):
            run_main(repro, ["--profile", "smoke", "--data-dir", str(data), "--set", "no_such_field=1"])
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_report_only_refuses_a_setting_it_would_ignore_and_keeps_an_unfinished_run_marked(tmp_path, data,
                                                                                            capsys):
    """--report-only rebuilds tables as the runs ran: a --set that differs from config.json is refused with both
    values (not silently ignored), the training command's own settings pass; a training process that stopped
    before its plan was done stays marked (run.json ``complete`` and the tables' provenance)."""
    repro = _repro(tmp_path)
    runs = tmp_path / "runs"
    args = ["--profile", "smoke", "--data-dir", str(data), "--runs-dir", str(runs), "--set", "arms=a"]
    assert run_main(repro, args) == 0
    out = runs / "toy-smoke" / "results"
    capsys.readouterr()
    assert run_main(repro, args[:-2] + ["--set", "arms=a,b", "--report-only"]) == 2
    err = capsys.readouterr().err
    assert "arms" in err and "['a', 'b']" in err and "['a']" in err and "drop it" in err
    assert run_main(repro, args[:-2] + ["--epochs", "5", "--report-only"]) == 2
    assert "stages" in capsys.readouterr().err
    assert run_main(repro, args + ["--report-only"]) == 0  # the training command's settings: fine
    assert json.loads((out / "runs.json").read_text())["meta"]["complete"] is True
    # a process stopped with runs of its plan left (its heartbeat wrote complete=false)
    run = json.loads((out / "run.json").read_text())
    (out / "run.json").write_text(json.dumps({**run, "complete": False}))
    assert run_main(repro, args + ["--report-only"]) == 0
    assert json.loads((out / "run.json").read_text())["complete"] is False
    assert json.loads((out / "runs.json").read_text())["meta"]["complete"] is False
    assert "- complete: `False` (the training process stopped" in (out / "runs.md").read_text()


def test_an_evaluation_only_setting_evaluates_finished_checkpoints_without_training(tmp_path, data, capsys):
    """EVAL_ONLY_FIELDS (MIAS's tta) enter a row's identity but not its checkpoints': --resume with a new --out
    evaluates the finished run again with the setting and trains nothing; a training setting is still refused."""
    repro = _repro(tmp_path)
    runs = tmp_path / "runs"
    base = ["--profile", "smoke", "--data-dir", str(data), "--runs-dir", str(runs), "--set", "arms=a"]
    assert run_main(repro, base) == 0
    ck = runs / "toy-smoke" / "a_s0" / "identity.json"
    ck_before = ck.read_text()
    first = json.loads((runs / "toy-smoke" / "results" / "runs.jsonl").read_text())
    new_out = tmp_path / "eval"
    assert run_main(repro, base + ["--resume", "--set", "eval_tag=x", "--out", str(new_out)]) == 0
    row = json.loads((new_out / "runs.jsonl").read_text())
    assert row["eval_tag"] == "x" and row["epochs_trained"] == 2 and row["epochs_run_here"] == 0
    assert row["resumed_stages"] == ["a s0: after epoch 2"]
    assert row["identity"]["config_sha256"] != first["identity"]["config_sha256"]
    assert ck.read_text() == ck_before  # the checkpoints keep the identity of their training
    capsys.readouterr()
    # the first results folder holds the row without the setting: --resume there refuses, naming the setting
    assert run_main(repro, base + ["--resume", "--set", "eval_tag=x"]) == 2
    assert "eval_tag: None there, 'x' now" in capsys.readouterr().err
    # a setting that changes training needs new checkpoints: trained in the new results folder's own run folder,
    # the first one's kept as they were
    assert run_main(repro, base + ["--resume", "--set", "dropout=0.3", "--out", str(tmp_path / "other")]) == 0
    assert ck.read_text() == ck_before
    other = json.loads((tmp_path / "other" / "runs.jsonl").read_text())
    assert other["epochs_run_here"] == 2 and other["identity"]["config_sha256"] != first["identity"]["config_sha256"]


def test_a_weight_average_runs_is_recorded_and_a_multi_worker_run_refuses_it(tmp_path, data, capsys, monkeypatch):
    """``--set ema=D`` reaches fit (the stage's checkpoint folder holds the average), config.json records it under
    the stage; without it config.json has no ``ema``; under the multi-worker strategy it is refused before anything
    runs."""
    repro = _repro(tmp_path)
    runs = tmp_path / "runs"
    assert run_main(repro, ["--profile", "smoke", "--data-dir", str(data), "--runs-dir", str(runs), "--set",
                            "arms=a", "--out", str(tmp_path / "plain")]) == 0
    assert "ema" not in json.loads((tmp_path / "plain" / "config.json").read_text())["stages"]["train"]
    assert run_main(repro, ["--profile", "smoke", "--data-dir", str(data), "--runs-dir", str(runs), "--set",
                            "arms=a", "--set", "ema=0.9", "--out", str(tmp_path / "ema")]) == 0
    assert json.loads((tmp_path / "ema" / "config.json").read_text())["stages"]["train"]["ema"] == 0.9
    # another --out: its own run folder (the first run's checkpoints are kept)
    mine = [d for d in (runs / "toy-smoke").iterdir() if (d / "owner.txt").is_file()
            and (d / "owner.txt").read_text().strip() == str(tmp_path / "ema")]
    assert len(mine) == 1 and mine[0].name.startswith("a_s0-")
    with np.load(mine[0] / "train" / "last.npz") as z:
        assert any("ema_count" in p for p in z["_paths"])
    from medattn.training import custom_loop

    monkeypatch.setattr(custom_loop, "needs_custom_loop", lambda strategy: True)
    CALLS.clear()
    assert run_main(repro, ["--profile", "smoke", "--data-dir", str(data), "--runs-dir", str(tmp_path / "r2"),
                            "--set", "ema=0.9"]) == 2
    assert "ema (a moving average of the weights; stage train) is not supported" in capsys.readouterr().err
    assert CALLS == [] and not (tmp_path / "r2").exists()


def _bn_run_one(ctx, run, data):
    """A toy arm with a BatchNorm layer: the momentum the runner's fit left on it, and its precise statistics."""
    import keras

    stage = ctx.cfg.stage("train")

    def builder():
        return keras.Sequential([keras.Input((6,)), keras.layers.Dense(8), keras.layers.BatchNormalization(),
                                 keras.layers.Dense(2, activation="softmax")])

    model = ctx.build(builder, stage, 32, loss="sparse_categorical_crossentropy")
    x, y = data["train"]
    res = ctx.fit(model, lambda e: toy_dataset(x, y, stage.batch_size, run.seed, e), stage,
                  ctx.run_dir(run) / "train", label=f"{run.arm} s{run.seed}", validation_data=data["val"])
    bn = next(la for la in model.layers if isinstance(la, keras.layers.BatchNormalization))
    info = ctx.precise_bn(model, stage, x, rows=np.arange(24), seed=run.seed, label=run.key)
    return {"momentum": float(bn.momentum), "moving_mean": [float(v) for v in bn.moving_mean.numpy()],
            "precise_bn_images": None if info is None else info["images"], "epochs_run_here": res["epochs_run"]}


def test_stage_batchnorm_momentum_and_precise_statistics_are_the_runners(tmp_path, data):
    """``STAGE.bn_momentum`` is set on every BatchNorm layer before the stage trains (None: the layer's own 0.99);
    ``STAGE.precise_bn`` recomputes the statistics over the given rows, in whole batches, and is evaluation only: a
    finished checkpoint is evaluated again with it and nothing trains."""
    repro = _repro(tmp_path)
    repro.run_one = _bn_run_one
    runs = tmp_path / "runs"
    base = ["--profile", "smoke", "--data-dir", str(data), "--runs-dir", str(runs), "--set", "arms=a"]
    assert run_main(repro, base) == 0
    own = json.loads((runs / "toy-smoke" / "results" / "runs.jsonl").read_text())
    assert own["momentum"] == 0.99 and own["precise_bn_images"] is None
    assert run_main(repro, base + ["--set", "train.bn_momentum=0.8", "--out", str(tmp_path / "m")]) == 0
    row = json.loads((tmp_path / "m" / "runs.jsonl").read_text())
    assert row["momentum"] == 0.8 and row["identity"]["config_sha256"] != own["identity"]["config_sha256"]
    assert json.loads((tmp_path / "m" / "config.json").read_text())["stages"]["train"]["bn_momentum"] == 0.8
    assert run_main(repro, base + ["--resume", "--set", "train.precise_bn=true", "--out", str(tmp_path / "p")]) == 0
    pbn = json.loads((tmp_path / "p" / "runs.jsonl").read_text())
    assert pbn["precise_bn_images"] == 24 and pbn["epochs_run_here"] == 0  # 3 batches of 8; nothing trained
    assert pbn["moving_mean"] != own["moving_mean"]


@dataclasses.dataclass(frozen=True)
class ToyExternalConfig(ToyConfig):
    external_data: str | None = None
    IDENTITY_IF_SET: ClassVar[tuple[str, ...]] = ("eval_tag", "external_data")


def test_external_data_is_declared_loaded_and_refused_by_the_runner(tmp_path, data, capsys):
    """A script that names an ExternalData loader gets ``--external-data``: a missing folder is refused in one line
    naming it; otherwise the loader runs once, the runner logs what it found, and every run reads ``ctx.external``."""
    from medattn.runner.reproduction import ExternalData

    loads, seen = [], []

    def load(ctx, path):
        loads.append(path)
        return {"n": 3, "present": ["a"], "absent": ["b"], "note": "2 files not used"}

    def run_one(ctx, run, d):
        seen.append(ctx.external)
        return {"accuracy": 1.0}

    profiles = {p: ToyExternalConfig(**{f.name: getattr(c, f.name) for f in dataclasses.fields(c)})
                for p, c in PROFILES.items()}
    repro = _repro(tmp_path, external=ExternalData(load, "a second toy set"))
    repro.profiles, repro.run_one = profiles, run_one
    base = ["--profile", "smoke", "--data-dir", str(data), "--runs-dir", str(tmp_path / "runs")]
    assert run_main(repro, base + ["--external-data", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err.strip().endswith(f"--external-data {tmp_path / 'nowhere'}: no such folder")
    (tmp_path / "other").mkdir()
    assert run_main(repro, base + ["--external-data", str(tmp_path / "other"), "--set", "verbose=2"]) == 0
    assert loads == [tmp_path / "other"] and len(seen) == 2 and seen[0]["name"] == "other"
    assert ("external data " + str(tmp_path / "other") + ": 3 images (a; absent: b; 2 files not used); evaluated "
            "only, never trained on") in capsys.readouterr().out
    assert run_main(repro, base + ["--out", str(tmp_path / "plain")]) == 0
    assert seen[-1] is None and len(loads) == 1


def test_help_gives_the_committed_profiles_time_not_a_table_still_being_made(tmp_path):
    """``--help``'s measured time: each finished results folder of the committed profile, not one whose run.json
    says it is still being made (a remake's finished runs, committed to carry them to another machine)."""
    from types import SimpleNamespace

    from medattn.runner.reproduction import measured_time

    repro = SimpleNamespace(name="toy", script=str(tmp_path / "reproductions" / "toy.py"), committed_profile="cpu")
    machine = {"cores": 2, "cpu": "Xeon"}
    for folder, run in {".": {"complete": True}, "three_seeds": {}, "unfinished": {"complete": False},
                        "smoke": {"profile": "smoke"}, "selection/A": {}, "earlier_abc": {}}.items():
        path = tmp_path / "results" / "toy" / folder / "run.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"profile": "cpu", "wall_time_s": 7200, "machine": machine, **run}))
    assert measured_time(repro) == ["2.0 h of training on a 2-core Xeon (results/toy/run.json)",
                                    "2.0 h of training on a 2-core Xeon (results/toy/three_seeds/run.json)"]
