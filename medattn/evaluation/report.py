"""Regenerate every Markdown table under a results folder from its JSON: ``python -m medattn.evaluation.report``.

Each ``<name>.json`` written by :func:`medattn.evaluation.write_table` gets its ``<name>.md`` rewritten; a
``README.md`` beside them (if the folder has a ``summary`` list in ``index.json``) is not touched.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .tables import render_markdown


def regenerate(root) -> list[Path]:
    written = []
    for path in sorted(Path(root).rglob("*.json")):
        try:
            table = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from e
        if not isinstance(table, dict) or "rows" not in table or "kind" not in table:
            continue
        md = path.with_suffix(".md")
        md.write_text(render_markdown(table))
        written.append(md)
    return written


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("root", nargs="?", default="results")
    args = ap.parse_args(argv)
    for p in regenerate(args.root):
        print(p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
