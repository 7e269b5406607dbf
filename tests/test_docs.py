"""Every Python example in docs/ runs as written (imports included)."""

import re

import pytest

from tests.conftest import REPO

BLOCKS = [(p.name, i, b) for p in sorted((REPO / "docs").glob("*.md"))
          for i, b in enumerate(re.findall(r"```python\n(.*?)```", p.read_text(), re.S))]


@pytest.mark.parametrize("name,index,code", BLOCKS, ids=[f"{n}-{i}" for n, i, _ in BLOCKS])
def test_docs_example_runs(name, index, code):
    exec(compile(code, f"{name} example {index + 1}", "exec"), {})


def _github_anchor(heading: str) -> str:
    """GitHub's anchor for a Markdown heading: lower case, punctuation other than '-' and '_' dropped, spaces -> '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_readme_links_to_its_own_sections_resolve():
    text = (REPO / "README.md").read_text()
    anchors = {_github_anchor(h) for h in re.findall(r"^#{1,6} (.+)$", text, re.M)}
    links = re.findall(r"\]\(#([^)]+)\)", text)
    assert links, "the README's contents line links to its sections"
    assert not [a for a in links if a not in anchors], "README links to sections that do not exist"
