"""The committed Markdown is what the committed JSON generates: no README table or results/*.md typed by hand or
left stale (regenerate with ``python -m medattn.evaluation.report results --readme README.md docs/*.md``)."""

import json
import shutil

from medattn.evaluation.report import update_readme
from medattn.evaluation.tables import render_markdown
from tests.conftest import REPO

FIX = "run `python -m medattn.evaluation.report results --readme README.md docs/*.md` and commit the result"
PAGES = ["README.md"] + sorted(f"docs/{p.name}" for p in (REPO / "docs").glob("*.md")
                               if "<!-- table:" in p.read_text() or "<!-- include:" in p.read_text())


def test_readme_blocks_match_their_json(tmp_path):
    assert "docs/dcnnimaf.md" in PAGES and "docs/speed.md" in PAGES
    for name in PAGES:
        copy = tmp_path / name.replace("/", "_")
        shutil.copy(REPO / name, copy)
        assert update_readme(copy, base=REPO) > 0
        assert copy.read_text() == (REPO / name).read_text(), f"{name} tables are stale: {FIX} (--readme {name})"


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
