"""benchmarks/speed.py: its parsing of pytest's durations and its refusals (the timings themselves stay out of the
tests)."""

import pytest

from tests.conftest import load_script


def test_durations_are_summed_per_test_group():
    speed = load_script("benchmarks", "speed")
    out = """
============================= slowest durations ==============================
398.43s call     tests/reproductions/test_brain_tumor_script.py::test_paper_profile_dry_run
10.50s call     tests/reproductions/test_dcat_script.py::test_smoke[a-b]
2.20s setup    tests/training/test_strategy.py::test_mirrored
1.00s call     tests/test_docs.py::test_readme
0.01s teardown tests/test_docs.py::test_readme
not a duration line tests/x.py 5.00s
"""
    assert speed.group_seconds(out) == {"tests/reproductions": 408.9, "tests/training": 2.2, "tests/test_docs.py": 1.0}


def test_unknown_parts_and_a_linknet_part_without_its_environment_are_refused(capsys):
    speed = load_script("benchmarks", "speed")
    with pytest.raises(SystemExit):
        speed.main(["--parts", "suite,nonsense"])
    assert "unknown part(s) ['nonsense']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        speed.main(["--parts", "linknet"])
    assert "part linknet needs --sm-python" in capsys.readouterr().err
