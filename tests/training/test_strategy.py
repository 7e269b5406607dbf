import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medattn.training import resolve_strategy_name
from tests.conftest import run_two_workers

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def test_auto_resolution_order():
    two = json.dumps({"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}, "task": {"type": "worker", "index": 0}})
    one = json.dumps({"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 0}})
    assert resolve_strategy_name("auto", env={}, n_gpus=0) == "default"
    assert resolve_strategy_name("auto", env={}, n_gpus=1) == "default"
    assert resolve_strategy_name("auto", env={}, n_gpus=2) == "mirrored"
    assert resolve_strategy_name("auto", env={"TF_CONFIG": one}, n_gpus=0) == "default"
    assert resolve_strategy_name("auto", env={"TF_CONFIG": two}, n_gpus=4) == "multiworker"
    assert resolve_strategy_name("auto", env={"TF_CONFIG": two, "TPU_NAME": "t"}, n_gpus=4) == "tpu"
    assert resolve_strategy_name("mirrored", env={}, n_gpus=0) == "mirrored"
    with pytest.raises(ValueError, match="'horovod'"):
        resolve_strategy_name("horovod")
    with pytest.raises(ValueError, match="not valid JSON"):
        resolve_strategy_name("auto", env={"TF_CONFIG": "{oops"})


def test_default_strategy_object():
    import tensorflow as tf

    from medattn.training import get_strategy

    s = get_strategy("default")
    assert s.num_replicas_in_sync == 1
    assert isinstance(get_strategy("auto"), type(tf.distribute.get_strategy()))


def _env(extra=None):
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND="tensorflow", PYTHONPATH=str(REPO))
    env.update(extra or {})
    return env


@pytest.mark.subprocess
def test_mirrored_strategy_fit_on_two_cpu_replicas(tmp_path):
    out = tmp_path / "mirrored.npz"
    r = subprocess.run([sys.executable, str(HERE / "_dist_worker.py"), "mirrored", str(out)], env=_env(),
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    res = np.load(out)
    assert int(res["replicas"]) == 2 and str(res["strategy"]) == "MirroredStrategy"
    assert res["loss"][-1] < res["loss"][0]
    assert float(res["fused_difference"]) < 1e-5  # each replica's update kernel writes its own copy
    assert "ran out of data" not in r.stderr  # the epoch's length is learned quietly (fit._epoch_length_...)


@pytest.mark.subprocess
def test_mirrored_fit_with_a_weight_average_on_two_cpu_replicas(tmp_path):
    """The moving average (weights and BatchNorm statistics) under MirroredStrategy: validation runs on it, and the
    model fit returns is it (its loss is the last epoch's logged validation loss)."""
    out = tmp_path / "ema.npz"
    r = subprocess.run([sys.executable, str(HERE / "_dist_worker.py"), "mirrored-ema", str(out)], env=_env(),
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    res = np.load(out)
    assert int(res["replicas"]) == 2 and res["loss"][-1] < res["loss"][0]
    assert float(res["eval_loss"]) == pytest.approx(float(res["val_loss"][-1]), rel=1e-5)


def test_batches_for_replicas_have_tf_data_rewrites_on_and_a_known_count():
    """Without them, dropping a distributed validation iterator could crash the process (``_with_default_rewrites``)."""
    from medattn.datasets.pipeline import array_dataset
    from medattn.training.custom_loop import for_replicas

    x, y = np.zeros((9, 4, 4, 3), "float32"), np.arange(9) % 2
    source = array_dataset(x, y, 8)
    assert source.options().experimental_optimization.apply_default_optimizations is False
    for training in (False, True):
        ds = for_replicas(source, 2, 8, training=training)
        assert ds.options().experimental_optimization.apply_default_optimizations is True
        assert sum(len(b[1]) for b in ds) == (8 if training else 9)
        if not training:  # a known number of batches: Keras does not learn it by running out of data
            assert int(ds.cardinality()) == len(list(ds))


def test_replica_batch_plan_gives_every_replica_a_part_of_every_batch():
    from medattn.training.custom_loop import _splits_evenly, replica_batch_plan

    assert not _splits_evenly(1, 2) and not _splits_evenly(5, 4) and _splits_evenly(7, 4) and _splits_evenly(3, 2)
    for n in (2, 4, 8):
        for total in range(n, 90):
            for batch in (8, 32, 64):
                try:
                    b, k = replica_batch_plan(total, batch, n)
                except ValueError:
                    assert total < 60, (n, total)  # a few small counts (3 on 2 replicas) cannot go round
                    continue
                head = total - k
                sizes = [b] * (head // b) + ([head % b] if head % b else []) + ([k] if k else [])
                assert sum(sizes) == total and sizes[0] % n == 0, (n, total, batch, sizes)
                assert all(_splits_evenly(s, n) for s in sizes), (n, total, batch, sizes)
    assert replica_batch_plan(9, 8, 2) == (8, 3)  # 6 + 3: Keras fails on 8 + 1 and on an uneven first batch


@pytest.mark.subprocess
def test_partial_final_batches_on_two_cpu_replicas(tmp_path):
    """Nine images in batches of eight on two replicas: training, validation, predict and MC predict all run, and
    validation sees every image exactly once (its accuracy equals the one from the predictions)."""
    out = tmp_path / "partial.json"
    r = subprocess.run([sys.executable, str(HERE / "_partial_batch_worker.py"), str(out)], env=_env(),
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["replicas"] == 2 and res["epochs"] == 2
    assert res["predict_rows"] == 9 and res["mc_rows"] == 9 and res["same"] and res["first_row_alone"]
    assert res["val_accuracy"] == pytest.approx(res["accuracy_from_predict"])
    assert "ran out of data" not in r.stderr and "Changing the value of option" not in r.stderr  # a quiet terminal


@pytest.mark.subprocess
@pytest.mark.slow
def test_two_worker_multiworker_fit_on_localhost(tmp_path):
    results = run_two_workers(
        lambda i: [sys.executable, str(HERE / "_dist_worker.py"), "multiworker", str(tmp_path / f"w{i}.npz")],
        lambda i, tf_config: _env({"TF_CONFIG": tf_config}), cwd=tmp_path, timeout=300)
    for code, _, err in results:
        assert code == 0, err[-3000:]
    w0, w1 = np.load(tmp_path / "w0.npz"), np.load(tmp_path / "w1.npz")
    assert str(w0["strategy"]) in ("MultiWorkerMirroredStrategy", "CollectiveAllReduceStrategy")
    assert int(w0["replicas"]) == 2
    keys = [k for k in w0.files if k.startswith("arr_")]
    assert keys
    for k in keys:
        np.testing.assert_array_equal(w0[k], w1[k])
    assert w0["loss"][-1] < w0["loss"][0]


def test_auto_mixed_precision_follows_the_hardware():
    from medattn.training.strategy import native_bf16, resolve_mixed_precision

    amx = "processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16 amx_bf16 amx_tile\n"
    epyc = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f\n"
    assert native_bf16(amx) and not native_bf16(epyc)
    assert resolve_mixed_precision("auto", n_gpus=0, cpuinfo=amx) == "bf16"
    assert resolve_mixed_precision("auto", n_gpus=0, cpuinfo=epyc) == "off"
    assert resolve_mixed_precision("auto", n_gpus=1, gpu_capability=(9, 0)) == "bf16"
    assert resolve_mixed_precision("auto", n_gpus=1, gpu_capability=(7, 5)) == "off"
    assert resolve_mixed_precision("fp16", n_gpus=0, cpuinfo=epyc) == "fp16"


def test_machine_record_says_whether_bf16_is_native():
    """Two "AMD EPYC" machines differ here (AVX2-only vs AVX512_BF16): the record must tell them apart."""
    from medattn.training.records import machine_description
    from medattn.training.strategy import native_bf16

    desc = machine_description()
    assert desc["native_bf16"] is native_bf16()
