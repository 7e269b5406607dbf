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


def test_its_command_line_answers_help_and_names_a_folder_without_decisions(tmp_path, capsys):
    from medattn.evaluation.selection import main

    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    assert stop.value.code == 0 and "--stamp" in capsys.readouterr().out
    assert main([str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nowhere: no decisions.json there" in err


def _git_has(commit: str) -> bool:
    import subprocess

    return subprocess.run(["git", "cat-file", "-e", f"{commit}^{{commit}}"], cwd=REPO, capture_output=True).returncode == 0


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: str(p.relative_to(REPO / "results")))
def test_each_rule_is_stamped_with_the_commit_that_first_wrote_it(folder):
    """The commit and time beside each rule are git's: the oldest commit whose README holds the rule's words."""
    from medattn.evaluation.selection import first_commit_with

    entries = json.loads((folder / "decisions.json").read_text())["decisions"]
    assert all(e.get("rule_commit") and e.get("rule_committed") for e in entries), "run --stamp"
    if not _git_has(entries[0]["rule_commit"]):
        pytest.skip("git history without the rules' commits (a shallow clone)")
    for e in entries:
        assert first_commit_with(folder / "README.md", e["rule"]) == (e["rule_commit"], e["rule_committed"]), e


def test_an_adopted_candidate_whose_rule_git_shows_after_its_run_must_say_post_dated(tmp_path):
    from medattn.evaluation.selection import check_decisions, tried_rows

    (tmp_path / "A").mkdir()
    (tmp_path / "A" / "runs.jsonl").write_text(json.dumps({"arm": "x", "val_auc": 0.9}) + "\n")
    (tmp_path / "A" / "run.json").write_text(json.dumps({"processes": [
        {"started": "2026-12-01T10:00:00+0000"}, {"started": "2026-12-01T12:00:00+0000"}]}))
    (tmp_path / "README.md").write_text("## Rule one\n")
    entry = {"candidate": "A", "change": "c", "rule": "Rule one", "folder": "A", "figure": "val_auc", "bar": 0.8,
             "adopted": True, "rule_commit": "abc1234", "rule_committed": "2026-12-01T10:30:00+00:00"}
    (tmp_path / "decisions.json").write_text(json.dumps({"decisions": [entry]}))
    row = tried_rows(tmp_path)[0]
    assert (row["rule_committed"], row["run_started"], row["rule_first"]) == (
        "2026-12-01 10:30 (abc1234)", "2026-12-01 10:00", False)
    assert check_decisions(tmp_path) == ["A: adopted by a rule git shows only after its run started (2026-12-01 10:30 "
                                         "(abc1234) vs 2026-12-01 10:00), and its note does not say post-dated"]
    (tmp_path / "decisions.json").write_text(json.dumps({"decisions": [{**entry, "note": "post-dated rule"}]}))
    assert check_decisions(tmp_path) == []
    (tmp_path / "decisions.json").write_text(json.dumps({"decisions": [{**entry, "ran": "B"}]}))
    assert tried_rows(tmp_path)[0]["rule_first"] is None  # no run.json in the folder the rule's run made


def test_a_post_dated_choice_is_superseded_only_by_a_candidate_whose_rule_came_first(tmp_path):
    from medattn.evaluation.selection import check_decisions, tried_rows

    for name, started in (("A", "2026-12-01T10:00:00+0000"), ("B", "2026-12-02T10:00:00+0000")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "runs.jsonl").write_text(json.dumps({"val_auc": 0.9}) + "\n")
        (tmp_path / name / "run.json").write_text(json.dumps({"started": started}))
    (tmp_path / "README.md").write_text("## Rule one\n## Rule two\n")
    old = {"candidate": "A", "rule": "Rule one", "folder": "A", "figure": "val_auc", "bar": 0.8, "adopted": True,
           "note": "post-dated rule", "rule_commit": "abc1234", "rule_committed": "2026-12-01T10:30:00+00:00",
           "superseded_by": "B"}
    new = {**old, "candidate": "B", "rule": "Rule two", "folder": "B", "note": "", "superseded_by": None,
           "rule_committed": "2026-12-02T09:00:00+00:00"}
    (tmp_path / "decisions.json").write_text(json.dumps({"decisions": [old, new]}))
    assert check_decisions(tmp_path) == []
    assert [r["superseded_by"] for r in tried_rows(tmp_path)] == ["B", ""]
    late = {**new, "rule_committed": "2026-12-02T11:00:00+00:00", "note": "post-dated rule"}
    (tmp_path / "decisions.json").write_text(json.dumps({"decisions": [old, late]}))
    assert check_decisions(tmp_path) == ["A: superseded_by 'B' names no candidate here whose rule git shows before its run"]
    (tmp_path / "decisions.json").write_text(json.dumps({"decisions": [{**old, "superseded_by": "C"}, new]}))
    assert check_decisions(tmp_path)[0].startswith("A: superseded_by 'C' names no candidate")
