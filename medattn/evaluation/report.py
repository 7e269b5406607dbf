"""Regenerate every Markdown table under a results folder from its JSON: ``python -m medattn.evaluation.report``.

Each ``<name>.json`` written by :func:`medattn.evaluation.write_table` gets its ``<name>.md`` rewritten. With
``--readme README.md`` the blocks between ``<!-- table: results/x/y.json -->`` and ``<!-- /table -->`` in that file
are replaced by the table rendered from the JSON, and the blocks between ``<!-- include: path.md -->`` and
``<!-- /include -->`` by that generated file (benchmark output), so the README's numbers are generated too.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from .tables import render_markdown, to_jsonable


def regenerate(root) -> list[Path]:
    written = []
    for path in sorted(Path(root).rglob("*.json")):
        try:
            table = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from e
        if not isinstance(table, dict) or "rows" not in table or "kind" not in table:
            continue
        strict = to_jsonable(table)
        if strict != table or "NaN" in path.read_text():  # older files held bare NaN: rewrite as strict JSON
            path.write_text(json.dumps(strict, indent=2, allow_nan=False) + "\n")
            table = strict
        md = path.with_suffix(".md")
        md.write_text(render_markdown(table))
        written.append(md)
    return written


_BLOCK = re.compile(r"(<!-- table: (?P<path>[^ ]+) -->\n)(?P<body>.*?)(<!-- /table -->)", re.DOTALL)
_INCLUDE = re.compile(r"(<!-- include: (?P<path>[^ ]+) -->\n)(?P<body>.*?)(<!-- /include -->)", re.DOTALL)


def update_readme(readme, base=".") -> int:
    """Replace every table block in ``readme`` with the rendering of its JSON; returns the number replaced."""
    readme = Path(readme)
    text = readme.read_text()
    count = 0

    def repl(m):
        nonlocal count
        path = Path(base) / m.group("path")
        if not path.is_file():
            raise ValueError(f"{readme}: table block names {path}, which does not exist")
        count += 1
        return m.group(1) + render_markdown(json.loads(path.read_text())) + m.group(4)

    def include(m):  # generated Markdown (e.g. a benchmark's output) copied in verbatim
        nonlocal count
        path = Path(base) / m.group("path")
        if not path.is_file():
            raise ValueError(f"{readme}: include block names {path}, which does not exist")
        count += 1
        return m.group(1) + path.read_text() + m.group(4)

    readme.write_text(_INCLUDE.sub(include, _BLOCK.sub(repl, text)))
    return count


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("root", nargs="?", default="results")
    ap.add_argument("--readme", help="also refresh the table blocks of this Markdown file")
    args = ap.parse_args(argv)
    for p in regenerate(args.root):
        print(p)
    if args.readme:
        print(f"{args.readme}: {update_readme(args.readme)} table block(s) refreshed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
