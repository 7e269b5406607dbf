"""Shared test set-up: quiet TensorFlow, the real-data root, and small helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
import medattn  # noqa: E402,F401 - before any test imports TensorFlow: the oneDNN default (medattn/__init__.py)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _float32_policy_between_tests():
    """Each test starts and ends with Keras' float32 policy, whatever the one before it set (a reproduction run in
    process restores the caller's policy itself: tests/training/test_reproduction_runner.py)."""
    import keras

    keras.mixed_precision.set_global_policy("float32")
    yield
    keras.mixed_precision.set_global_policy("float32")


def load_script(folder: str, name: str):
    """``folder/name.py`` of the repository (a benchmark or reproduction script) imported as a module."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(f"{folder}_{name}", REPO / folder / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses and pickling look their module up there
    spec.loader.exec_module(mod)
    return mod


def main_in_process(script: str, args, folder: str = "reproductions") -> tuple[int, str]:
    """``<folder>/<script>.py``'s exit code and standard error for ``args``, run in this process (a refusal needs
    no process of its own); an argument the parser refuses exits with its code."""
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = load_script(folder, script).main([str(a) for a in args])
        except SystemExit as exit_:
            code = exit_.code
    return code, err.getvalue()


def run_once(name: str, make, tmp_path_factory) -> Path:
    """A folder that ``make(folder)`` fills once per pytest run, whichever pytest-xdist worker asks first (the
    others wait on a file lock, then reuse it): an expensive run that several tests read. A test that writes beside
    it works on a copy (``shutil.copytree``)."""
    import fcntl
    import shutil

    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # the pytest run's, shared by its workers
    folder = root / f"once_{name}"
    with open(root / f"once_{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / ".done").exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            make(folder)
            (folder / ".done").write_text("")
    return folder


def saved_model(results, name: str) -> Path:
    """The model file ``name`` (e.g. ``classifier.keras``) that the run whose results are in ``results`` saved,
    from its run.json (a re-evaluation saves its models in its own run folder, never over another run's)."""
    import json

    paths = [Path(p) for p in json.loads((Path(results) / "run.json").read_text())["models"] if Path(p).name == name]
    assert len(paths) == 1, f"{results}/run.json lists {len(paths)} {name}"
    return paths[0]


def data_root() -> Path | None:
    """``$MEDATTN_DATA_DIR`` if set and present, else ``../shared/datasets`` beside the repository if present."""
    env = os.environ.get("MEDATTN_DATA_DIR")
    for cand in ([Path(env)] if env else []) + [REPO.parent / "shared" / "datasets"]:
        if cand.is_dir():
            return cand
    return None


@pytest.fixture(scope="session")
def datasets_dir() -> Path:
    root = data_root()
    if root is None:
        pytest.skip("real datasets not found (set MEDATTN_DATA_DIR)")
    return root


def dataset_dir(name: str) -> Path:
    root = data_root()
    if root is None or not (root / name).is_dir():
        pytest.skip(f"dataset {name!r} not found under MEDATTN_DATA_DIR")
    return root / name


def free_ports(n: int) -> list[int]:
    """``n`` free TCP ports on 127.0.0.1 (for multi-worker tests on localhost)."""
    import socket

    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def run_two_workers(argv_for, env_for, cwd, timeout: int = 600):
    """Start two processes (``argv_for(i)``, ``env_for(i, tf_config)``) as a MultiWorkerMirroredStrategy cluster on
    localhost; wait for both (killing both past ``timeout``); returns ``[(returncode, stdout, stderr)]``."""
    import json
    import subprocess

    workers = [f"127.0.0.1:{p}" for p in free_ports(2)]
    procs = []
    for i in range(2):
        tf_config = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}})
        procs.append(subprocess.Popen(argv_for(i), env=env_for(i, tf_config), cwd=cwd, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    try:
        outs = [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return [(p.returncode, o, e) for p, (o, e) in zip(procs, outs)]


def pytest_collection_modifyitems(config, items):
    """The slow tests first (stable order otherwise): with the suite spread over the cores (pytest-xdist,
    ``-n auto`` in setup.cfg) a long test collected last would leave one core idle while it ends alone."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
