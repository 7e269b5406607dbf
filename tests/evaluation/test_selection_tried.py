"""What was tried: every committed decisions.json reads its figures from its candidates' rows, names a rule of its
README, adopts nothing below its bar, and its tried table is what the rows give now."""

from __future__ import annotations

import json

import pytest

from tests.conftest import REPO

FOLDERS = sorted(p.parent for p in (REPO / "results").rglob("selection/decisions.json"))


def test_every_paper_with_selection_runs_has_its_decisions():
    papers = {p.relative_to(REPO / "results").parts[0] for p in FOLDERS}
    assert papers == {"brain_tumor_transfer", "dcat", "dcnnimaf", "emtnet", "mias_fusion"}


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: str(p.relative_to(REPO / "results")))
def test_committed_decisions_hold_and_their_table_is_current(folder):
    from medattn.evaluation.selection import check_decisions, tried_rows
    from medattn.utils import to_jsonable

    assert check_decisions(folder) == []
    committed = json.loads((folder / "tried.json").read_text())["rows"]
    assert committed == json.loads(json.dumps(to_jsonable(tried_rows(folder))))


def test_a_candidate_adopted_below_its_bar_or_under_a_missing_rule_is_named(tmp_path):
    from medattn.evaluation.selection import check_decisions, main

    (tmp_path / "A").mkdir()
    (tmp_path / "A" / "runs.jsonl").write_text(json.dumps({"arm": "x", "val_auc": 0.80}) + "\n"
                                               + json.dumps({"arm": "x", "val_auc": 0.84}) + "\n")
    (tmp_path / "README.md").write_text("## Rule one\n")
    entry = {"candidate": "A", "change": "c", "rule": "Rule one", "folder": "A", "figure": "val_auc", "bar": 0.83,
             "adopted": True}
    (tmp_path / "decisions.json").write_text(json.dumps({"decisions": [entry, {**entry, "candidate": "B",
                                                                              "rule": "Rule two", "bar": 0.8}]}))
    assert check_decisions(tmp_path) == ["A: adopted, but 0.82 does not clear its bar 0.83",
                                         "B: rule 'Rule two' is not in " + str(tmp_path / "README.md")]
    assert main([str(tmp_path)]) == 2 and not (tmp_path / "tried.md").exists()
    (tmp_path / "decisions.json").write_text(json.dumps({"decisions": [{**entry, "bar": 0.81}]}))
    assert main([str(tmp_path)]) == 0
    row = json.loads((tmp_path / "tried.json").read_text())["rows"][0]
    assert (row["value"], row["n_rows"], row["clears_bar"]) == (pytest.approx(0.82), 2, True)
