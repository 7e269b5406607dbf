"""medattn.utils.import_tensorflow_quietly: the lines TensorFlow's C++ libraries print on import (which
TF_CPP_MIN_LOG_LEVEL does not silence) are dropped, and every other line written meanwhile reaches the terminal."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO

# the lines TensorFlow 2.21 printed on import on a 2-core Xeon, then lines that must pass
FAKE_TENSORFLOW = textwrap.dedent('''
    import os, sys
    os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\\n")
    os.write(2, b"I0000 00:00:1796672292.780568   12284 port.cc:153] oneDNN custom operations are on. You may "
                b"see slightly different numerical results due to floating-point round-off errors.\\n")
    os.write(2, b"I0000 00:00:1796672292.835921   12284 cpu_feature_guard.cc:227] This TensorFlow binary is "
                b"optimized to use available CPU instructions in performance-critical operations.\\n")
    os.write(2, b"To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild "
                b"TensorFlow with the appropriate compiler flags.\\n")
    os.write(2, b"E0000 00:00:1796672292.9 12284 cuda_dnn.cc:8579] Unable to register cuDNN factory\\n")
    print("a warning from Python", file=sys.stderr)
    __version__ = "fake"
''')


@pytest.mark.subprocess
def test_import_noise_is_dropped_and_everything_else_passes(tmp_path):
    (tmp_path / "tensorflow").mkdir()
    (tmp_path / "tensorflow" / "__init__.py").write_text(FAKE_TENSORFLOW)
    probe = ("import sys; from medattn.utils import import_tensorflow_quietly as q; tf = q(); "
             "print('after', tf.__version__, q() is tf, file=sys.stderr)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}
    out = subprocess.run([sys.executable, "-c", probe], env=env, cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stderr.splitlines() == ["E0000 00:00:1796672292.9 12284 cuda_dnn.cc:8579] Unable to register cuDNN "
                                       "factory", "a warning from Python", "after fake True"]
