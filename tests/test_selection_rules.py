"""No adopted selection rule post-dates its run unless it says so: each entry of results/selection_rules.json is
checked against git (is the rule's text in the tree of the commit its run's first process ran?), and each
post-dated one was made again by a rule that predates its run."""

import json
import subprocess

import pytest

from tests.conftest import REPO

RULES = json.loads((REPO / "results" / "selection_rules.json").read_text())["rules"]
DECISIONS = sorted(p.parent for p in (REPO / "results").rglob("selection/decisions.json"))


def _git(*args) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)


def _run_commit(folder: str) -> str:
    run = json.loads((REPO / folder / "run.json").read_text())
    first = (run.get("processes") or [run])[0]
    return first["git_commit"].replace("+dirty", "")


@pytest.mark.parametrize("entry", RULES, ids=[e["rule"] for e in RULES])
def test_an_adopted_rule_predates_its_run_or_is_marked_post_dated(entry):
    commit = _run_commit(entry["run"])
    if _git("cat-file", "-e", f"{commit}^{{commit}}").returncode:
        pytest.skip(f"git history without {commit[:7]} (a shallow clone)")
    in_tree = _git("grep", "-q", "-F", entry["phrase"], commit, "--").returncode == 0
    if entry["post_dated"]:
        assert not in_tree, f"{entry['rule']}: marked post-dated, but its text is in {commit[:7]}"
        assert "post-dated" in (REPO / entry["readme"]).read_text(), f"{entry['readme']} must say post-dated"
    else:
        assert in_tree, f"{entry['rule']}: its text is not in {commit[:7]}, the commit its run started from"
    assert entry["phrase"] in (REPO / entry["readme"]).read_text()


@pytest.mark.parametrize("folder", DECISIONS, ids=lambda p: str(p.relative_to(REPO / "results")))
def test_no_setting_rests_on_a_post_dated_rule(folder):
    """Every candidate adopted by a rule git shows only after its run started is superseded by a later candidate
    whose rule came first (check_decisions holds what superseded_by names)."""
    from medattn.evaluation.selection import tried_rows

    for row in tried_rows(folder):
        assert not (row["adopted"] and row["rule_first"] is False) or row["superseded_by"], \
            f"{folder.relative_to(REPO)}: {row['candidate']} is post-dated and not made again"


def test_post_dated_choices_say_so_and_name_the_rule_that_made_them_again_where_the_pages_cite_them():
    for page, name, again in (("docs/dcat.md", "warm-up", "rule W"), ("docs/dcnnimaf.md", "selection run H", "rule R")):
        text = (REPO / page).read_text()
        assert name in text and "post-dated" in text and again in text, page
