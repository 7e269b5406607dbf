"""The committed Markdown is what the committed JSON generates: no README table or results/*.md typed by hand or
left stale (regenerate with ``python -m medattn.evaluation.report results --readme README.md``)."""

import json
import shutil

from medattn.evaluation.report import update_readme
from medattn.evaluation.tables import render_markdown
from tests.conftest import REPO

FIX = "run `python -m medattn.evaluation.report results --readme README.md` and commit the result"


def test_readme_blocks_match_their_json(tmp_path):
    readme = tmp_path / "README.md"
    shutil.copy(REPO / "README.md", readme)
    assert update_readme(readme, base=REPO) > 0
    assert readme.read_text() == (REPO / "README.md").read_text(), f"README.md tables are stale: {FIX}"


def test_results_markdown_matches_its_json():
    stale = []
    for path in sorted((REPO / "results").rglob("*.json")):
        table = json.loads(path.read_text())
        if isinstance(table, dict) and "rows" in table and "kind" in table:
            md = path.with_suffix(".md")
            if not md.is_file() or md.read_text() != render_markdown(table):
                stale.append(str(md.relative_to(REPO)))
    assert not stale, f"stale or missing: {stale}: {FIX}"


def test_targets_table_matches_the_spec_and_the_committed_tables(tmp_path):
    from medattn.evaluation.report import targets_table

    shutil.copy(REPO / "results" / "target_spec.json", tmp_path / "target_spec.json")
    targets_table(tmp_path / "target_spec.json", base=REPO)
    fresh = json.loads((tmp_path / "targets.json").read_text())["rows"]
    committed = json.loads((REPO / "results" / "targets.json").read_text())["rows"]
    assert fresh == committed, f"results/targets.json is stale: {FIX}"
