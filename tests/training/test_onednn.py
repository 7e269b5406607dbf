"""medattn turns TensorFlow's oneDNN CPU kernels on unless the user chose (medattn/__init__.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

PROBE = ("import json, os, medattn; before = medattn.onednn_enabled(); "
         "env = os.environ.get('TF_ENABLE_ONEDNN_OPTS'); import tensorflow; "
         "from medattn.training.records import machine_description; "
         "print(json.dumps([before, env, medattn.onednn_enabled(), machine_description()['onednn']]))")


def _probe(env_value):
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    if env_value is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = env_value
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("env_value, expected", [(None, True), ("0", False), ("1", True)])
def test_onednn_default_and_user_choice(env_value, expected):
    before, env, after, recorded = _probe(env_value)
    assert before is None  # TensorFlow not imported yet: nothing to report
    assert env == (env_value or "1")  # set by importing medattn (on CPUs where TensorFlow's default is on too)
    assert after is expected  # unset: medattn turns it on; a user's 0 or 1 is kept
    assert recorded is expected  # and run.json's machine description says what ran
