"""Per-model precision under ``--mixed-precision auto``: the benchmark's rule, the measured exceptions, the runner."""

import json
from pathlib import Path

import numpy as np
import pytest

from medattn.runner.reproduction import Reproduction, RunSpec, flat_rows
from medattn.runner.reproduction import main as run_main
from medattn.training import precision as P
from tests.training._toy import toy_data, toy_dataset, toy_model
from tests.training.test_reproduction_runner import PROFILES

ROOT = Path(__file__).resolve().parents[2]
EPYC = "flags\t\t: fpu sse avx2 avx512f avx512_bf16\n"
AMX = "flags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
AVX2 = "flags\t\t: fpu sse avx2\n"


def test_the_exceptions_are_the_committed_benchmarks_float32_decisions():
    """CPU_FLOAT32_FASTER holds exactly the models benchmarks/precision.py decided float32 for, and the committed
    decisions follow the committed rule from the committed ratios."""
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from precision import RULE, decide

    f32, seen = set(), set()
    files = sorted((ROOT / "benchmarks" / "results").glob("precision_epyc*.json"))
    assert len(files) == 2
    for path in files:
        result = json.loads(path.read_text())
        assert result["rule"] == RULE
        for r in result["rows"]:
            assert decide(r["ratios"]) == r["decision"], r["key"]
            key = P.precision_key(r["key"], int(r["input"].split("x")[0]))
            assert key not in seen  # one decision per model and size
            seen.add(key)
            if r["decision"] == "float32":
                f32.add(key)
    assert f32 == set(P.CPU_FLOAT32_FASTER)


def test_the_rule_decides_on_the_median_and_the_rounds_against():
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from precision import decide

    assert decide([1.2, 1.1, 1.3, 0.9, 1.2, 1.1]) == "bf16"  # one round against is allowed
    assert decide([1.2, 1.1, 1.3, 0.9, 0.95, 1.1]) == "tie"  # two are not
    assert decide([0.8, 0.9, 0.85, 1.1, 0.7, 0.8]) == "float32"
    assert decide([1.02, 0.98, 1.01, 1.0, 0.99, 1.03]) == "tie"  # too close to call


def test_model_precision_changes_only_auto_on_the_measured_kind_of_cpu():
    key = "brain_tumor_transfer:mobilenetv2@64"
    assert key in P.CPU_FLOAT32_FASTER
    assert P.model_precision("bf16", "auto", key, per_model=True) == "off"
    assert P.model_precision("bf16", "bf16", key, per_model=True) == "bf16"  # asked for explicitly: kept
    assert P.model_precision("bf16", "auto", key, per_model=False) == "bf16"  # GPU or AMX: not measured
    assert P.model_precision("bf16", "auto", "brain_tumor_transfer:mobilenetv2@224", per_model=True) == "bf16"
    assert P.model_precision("bf16", "auto", "brain_tumor_transfer:vgg16@64", per_model=True) == "bf16"
    assert P.model_precision("off", "auto", key, per_model=True) == "off"
    assert P.cpu_per_model_precision(EPYC, n_gpus=0) is True
    assert P.cpu_per_model_precision(AMX, n_gpus=0) is False
    assert P.cpu_per_model_precision(AVX2, n_gpus=0) is False
    assert P.cpu_per_model_precision(EPYC, n_gpus=1) is False


def test_policy_scope_builds_in_its_precision_and_puts_the_policy_back():
    import keras

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        with P.policy_scope("off"):
            inside = keras.layers.Dense(2)
        outside = keras.layers.Dense(2)
        assert inside.compute_dtype == "float32" and outside.compute_dtype == "bfloat16"
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
    finally:
        keras.mixed_precision.set_global_policy("float32")


def _toy(tmp_path):
    script = tmp_path / "repo" / "reproductions" / "toy.py"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text("# toy\n")

    def load(ctx):
        return {"train": toy_data(32), "val": toy_data(16, seed=1)}

    def run_one(ctx, run, data):
        stage = ctx.cfg.stage("train")
        ctx.seed(run.seed)
        model = ctx.build(lambda: toy_model(), stage, 32, loss="sparse_categorical_crossentropy",
                          precision=(f"toy:{run.arm}", 8))
        x, y = data["train"]
        ctx.fit(model, lambda e: toy_dataset(x, y, stage.batch_size, run.seed, e), stage,
                ctx.run_dir(run) / "train", label=run.arm, steps_per_epoch=None)
        prob = ctx.predict(model, data["val"][0])
        return {"compute_dtype": model.layers[0].compute_dtype, "accuracy": float(np.mean(prob.argmax(1) == data["val"][1]))}

    def report(ctx, rows, final):
        from medattn.evaluation import write_table

        write_table(ctx.out, "runs", flat_rows(rows), title="toy", meta=ctx.meta)

    return Reproduction(name="toy", script=str(script), description="toy", profiles=PROFILES, paper={},
                        load_data=load, plan=lambda cfg: [RunSpec(a, s) for a in cfg.arms for s in cfg.seeds],
                        run_one=run_one, report=report, models=lambda cfg, arm: [(f"toy:{arm}", 8)])


def test_the_runner_trains_a_measured_exception_in_float32_and_says_so(tmp_path, monkeypatch, capsys):
    """Under auto on the measured kind of CPU, the model listed as faster in float32 is built in float32, the others
    in bf16; its run's identity and config.json say so, and a resume where its exception no longer applies is
    refused (another precision is another run). Rows from before the exceptions are kept; checkpoints are not
    continued in another precision. An explicit --mixed-precision bf16 trains every model in bf16."""
    import medattn.training.strategy as S

    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.setattr(S, "resolve_mixed_precision", lambda mode, **kw: "bf16" if mode == "auto" else mode)
    monkeypatch.setattr(P, "cpu_per_model_precision", lambda *a, **k: True)
    monkeypatch.setattr(P, "CPU_FLOAT32_FASTER", frozenset({"toy:a@8"}))
    repro = _toy(tmp_path)
    base = ["--profile", "smoke", "--data-dir", str(data), "--runs-dir", str(tmp_path / "runs")]
    assert run_main(repro, base + ["--mixed-precision", "auto"]) == 0
    out = tmp_path / "runs" / "toy-smoke" / "results"
    rows = {r["arm"]: r for r in map(json.loads, (out / "runs.jsonl").read_text().splitlines())}
    assert rows["a"]["compute_dtype"] == "float32" and rows["b"]["compute_dtype"] == "bfloat16"
    assert rows["a"]["identity"]["model_precision"] == {"toy:a@8": "off"}
    assert "model_precision" not in rows["b"]["identity"]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["mixed_precision"] == "bf16" and cfg["mixed_precision_requested"] == "auto"
    assert cfg["model_precision"] == {"toy:a@8": "off"}
    # the exceptions changed (another machine, a new benchmark): arm a's finished row is another run
    monkeypatch.setattr(P, "CPU_FLOAT32_FASTER", frozenset())
    capsys.readouterr()
    assert run_main(repro, base + ["--mixed-precision", "auto", "--resume"]) == 2
    assert "model_precision: {'toy:a@8': 'off'} there, None now" in capsys.readouterr().err
    # a finished row without model_precision (made before the exceptions existed, in the run's bf16) is kept where
    # an exception now applies to it; config.json lists only the models this process trains
    monkeypatch.setattr(P, "CPU_FLOAT32_FASTER", frozenset({"toy:a@8", "toy:b@8"}))
    before = (out / "runs.jsonl").read_text()
    assert run_main(repro, base + ["--mixed-precision", "auto", "--resume"]) == 0
    assert (out / "runs.jsonl").read_text() == before  # nothing trained again
    assert "model_precision" not in json.loads((out / "config.json").read_text())
    # ... but its checkpoint never continues in another precision
    (out / "runs.jsonl").write_text(before.splitlines()[0] + "\n")  # arm b's row gone, its checkpoints kept
    capsys.readouterr()
    assert run_main(repro, base + ["--mixed-precision", "auto", "--resume"]) == 2
    assert "checkpoints" in capsys.readouterr().err
    # asked for explicitly: every model in bf16, nothing recorded per model
    monkeypatch.setattr(P, "CPU_FLOAT32_FASTER", frozenset({"toy:a@8"}))
    assert run_main(repro, base + ["--mixed-precision", "bf16", "--out", str(tmp_path / "o2")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "o2" / "runs.jsonl").read_text().splitlines()]
    assert {r["compute_dtype"] for r in rows} == {"bfloat16"}
    assert not any("model_precision" in r["identity"] for r in rows)
    assert "model_precision" not in json.loads((tmp_path / "o2" / "config.json").read_text())


@pytest.mark.parametrize("script,arm,key", [
    ("brain_tumor_transfer", "mobilenetv2", "brain_tumor_transfer:mobilenetv2@64"),
    ("mias_fusion", "mobilenet:baseline", "mias_fusion:mobilenet:baseline@72"),
    ("emtnet", "multitask_w2", "emtnet:mobilenetv2@160"),  # measured: a tie, so it keeps bf16
    ("emtnet", "cls_only_w2", "emtnet:mobilenetv2-classifier@160"),
    ("dcat", "dcat", "dcat:cross_attention@64"),
    ("dcat", "concat", "dcat:concat@64"),
])
def test_the_scripts_name_their_cpu_profile_models_as_the_benchmark_did(script, arm, key):
    """Each script's cpu-profile model names itself with the key the benchmark measured, so the exception reaches it
    (a misnamed key would silently keep bf16)."""
    import importlib

    mod = importlib.import_module(f"reproductions.{script}")
    cfg = mod.PROFILES["cpu"]
    names = {P.precision_key(m, s) for m, s in mod.REPRODUCTION.models(cfg, arm)}
    assert key in names
