"""Small helpers every floor may use (a leaf: imports nothing of medattn): atomic text files, strict JSON values,
file hashes, the benchmarks' timing of training steps, recorded data paths written as a reader types them, and
TensorFlow imported without the notices its C++ libraries print."""

from __future__ import annotations

import functools
import hashlib
import math
import os
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np

__all__ = ["atomic_write_text", "to_jsonable", "file_sha256", "median_train_step_seconds", "data_root_writer",
           "import_tensorflow_quietly"]


def atomic_write_text(path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``. The temporary name holds
    the process id: the workers of a multi-worker run write the same files (identity.json) at the same moment,
    and with one shared name one worker's rename took the other's file away (FileNotFoundError). On failure (a
    full disk, no permission) the temporary file is removed, ``path`` keeps what it held, and the OSError names
    ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OSError(e.errno, f"cannot write {path}: {e.strerror or e}") from None


def to_jsonable(x):
    """NumPy scalars/arrays and Paths to plain JSON types; NaN and infinities become None (JSON ``null``), so every
    file we write is strict JSON that any parser reads."""
    if isinstance(x, dict):
        return {str(k): to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return to_jsonable(x.tolist())
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, Path):
        return str(x)
    return x


def file_sha256(path) -> str:
    """SHA-256 of a file's bytes (cached by path, size and modification time)."""
    st = Path(path).stat()
    return _file_sha256(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def median_train_step_seconds(model, x, y, repeats: int, warmup: int = 2) -> float:
    """Median wall seconds of ``repeats`` calls of ``model.train_on_batch(x, y)`` (a compiled Keras model) after
    ``warmup`` calls that trace and warm the kernels: the one timing loop of the benchmarks."""
    import statistics
    import time

    for _ in range(warmup):
        model.train_on_batch(x, y)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def data_root_writer(data_dir) -> Callable[[Any], str]:
    """What writes a recorded value as a reader types it: the folder that held the datasets (the recorded
    ``data_dir`` up to its last ``datasets`` folder) becomes ``$MEDATTN_DATA_DIR``, as the README's commands say;
    other values, and paths without a ``datasets`` folder, stay as recorded. ``run.json`` keeps the path as it was."""
    parts = Path(str(data_dir)).parts if data_dir else ()
    if "datasets" not in parts:
        return str
    root = str(Path(*parts[:len(parts) - parts[::-1].index("datasets")])) + "/"
    return lambda value: str(value).replace(root, "$MEDATTN_DATA_DIR/")


# What TensorFlow's C++ libraries print to standard error while it is imported, whatever TF_CPP_MIN_LOG_LEVEL says
# (tensorflow/tensorflow#100442): absl's notice, and that oneDNN is on and which CPU instructions the wheel does not
# use. The runner says which kernels run in its own line; every other line printed during the import is passed on.
_IMPORT_NOISE = re.compile(r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
                           r"|^I\d{4} [\d:. ]+\d+ (port\.cc:\d+\] oneDNN custom operations are on"
                           r"|cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized)"
                           r"|^To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler")


def import_tensorflow_quietly():
    """``import tensorflow`` without the lines its C++ libraries print on import (:data:`_IMPORT_NOISE`); any other
    line written to standard error meanwhile is passed on as it comes. The module; a no-op once imported."""
    import sys
    import threading

    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    sys.stderr.flush()
    try:
        saved, (read_end, write_end) = os.dup(2), os.pipe()
    except OSError:  # no standard error to filter (closed): a plain import
        import tensorflow

        return tensorflow

    def forward():
        with os.fdopen(read_end, "rb") as lines:
            for line in lines:
                if not _IMPORT_NOISE.search(line.decode(errors="replace")):
                    os.write(saved, line)

    reader = threading.Thread(target=forward, daemon=True)
    reader.start()
    os.dup2(write_end, 2)
    os.close(write_end)
    try:
        import tensorflow
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # the pipe's last writer closes: the reader drains it and ends
        reader.join()
        os.close(saved)
    return tensorflow
