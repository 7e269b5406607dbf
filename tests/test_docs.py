"""Every Python example in docs/ runs as written (imports included)."""

import re

import pytest

from tests.conftest import REPO

BLOCKS = [(p.name, i, b) for p in sorted((REPO / "docs").glob("*.md"))
          for i, b in enumerate(re.findall(r"```python\n(.*?)```", p.read_text(), re.S))]


@pytest.mark.parametrize("name,index,code", BLOCKS, ids=[f"{n}-{i}" for n, i, _ in BLOCKS])
def test_docs_example_runs(name, index, code):
    exec(compile(code, f"{name} example {index + 1}", "exec"), {})
