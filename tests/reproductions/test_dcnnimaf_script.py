import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_no_data_runs_synthetic_end_to_end_and_says_so(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MEDATTN_DATA_DIR"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, str(REPO / "reproductions" / "dcnnimaf.py"), "--profile", "smoke",
                        "--out", str(out)], capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "SYNTHETIC" in r.stdout and "Dataset_BUSI_with_GT" in r.stdout
    comp = json.loads((out / "comparison.json").read_text())
    assert comp["meta"]["synthetic"] is True and "SYNTHETIC" in comp["title"]
    assert all("SYNTHETIC" in row["source"] for row in comp["rows"])
    run = json.loads((out / "runs.json").read_text())["rows"][0]
    assert 0 <= run["dice_lesion"] <= 1 and run["n_test"] > 0
    assert (out / "plots" / "overlays_grouped.png").exists() and (out / "plots" / "confusion_grouped.png").exists()
    assert json.loads((out / "config.json").read_text())["synthetic"] is True
