"""Regenerate every Markdown table under a results folder from its JSON: ``python -m medattn.evaluation.report``.

Each ``<name>.json`` written by :func:`medattn.evaluation.write_table` gets its ``<name>.md`` rewritten. With
``--readme README.md`` the blocks between ``<!-- table: results/x/y.json -->`` and ``<!-- /table -->`` in that file
are replaced by the table rendered from the JSON, and the blocks between ``<!-- include: path.md -->`` and
``<!-- /include -->`` by that generated file (benchmark output), so the README's numbers are generated too.
``--combine DIR ... --name NAME --columns a,b`` writes one table of the chosen columns of every row in each run
folder's ``runs.jsonl``, with the folder, command and commit of its ``run.json`` (side-by-side settings runs).
When ``ROOT/target_spec.json`` exists (our targets: which cell of which comparison table, the threshold and its
direction), ``ROOT/targets.{json,csv,md}`` is written first: each target beside the committed value, its interval,
the paper's number and whether it is reached, with the seeds, commit and machine of the run behind it.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from ..utils import to_jsonable
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


def combine_runs(folders, out, name: str, columns) -> dict[str, Path]:
    """One table of ``columns`` from the rows of several run folders (their ``runs.jsonl``), each row with its
    folder name, and the command, commit and profile of the folder's ``run.json`` in the table's meta. A column
    that only some folders' rows have is empty in the others; one that no row has is refused."""
    from .tables import write_table

    rows, sources = [], []
    for folder in map(Path, folders):
        rows_file, run_file = folder / "runs.jsonl", folder / "run.json"
        for f in (rows_file, run_file):
            if not f.is_file():
                raise ValueError(f"--combine {folder}: no {f.name} there")
        run = json.loads(run_file.read_text())
        sources.append({"folder": folder.name, **{k: run.get(k) for k in ("command", "git_commit", "profile",
                                                                           "seeds", "data_dir", "wall_time_s")}})
        for line in rows_file.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                rows.append({"run": folder.name, **{c: r.get(c) for c in columns}, "_has": set(r)})
    # a column some folders' rows lack (a field added later, such as tta) is left empty there; one no row has is
    # a typo, named
    missing = [c for c in columns if not any(c in r["_has"] for r in rows)]
    if missing:
        raise ValueError(f"--combine: no row of {', '.join(str(f) for f in folders)} has a column {missing[0]!r}")
    rows = [{k: v for k, v in r.items() if k != "_has"} for r in rows]
    return write_table(out, name, rows, title=f"{name}: {len(rows)} rows from {len(sources)} run folders",
                       meta={"sources": sources})


_OPS = {">=": lambda v, t: v >= t, "<=": lambda v, t: v <= t}
_SEEDS_MARK = re.compile(r" \((\d+) seeds\)")


def _unmarked(label: str) -> str:
    """``label`` without its " (N seeds)" mark."""
    return _SEEDS_MARK.sub("", label)


def _seeds_marked(label: str) -> int | None:
    m = _SEEDS_MARK.search(label)
    return int(m.group(1)) if m else None


def _judged(base: Path, selection: str | None) -> str:
    """How many candidates a paper's rules judged on validation data, read from its ``decisions.json`` (those that
    ran: :func:`medattn.evaluation.selection.ran`), and how many of them were adopted: ``"5 (1 adopted)"``."""
    if not selection:
        return "—"
    path = base / selection / "decisions.json"
    if not path.is_file():
        raise ValueError(f"{path}: no such file (named by a target's 'selection')")
    from .selection import ran

    judged = [e for e in json.loads(path.read_text())["decisions"] if ran(e)]
    return f"{len(judged)} ({sum(bool(e.get('adopted')) for e in judged)} adopted)"


def targets_table(spec_path, base=".") -> dict[str, Path]:
    """Our targets beside the committed numbers: one row per entry of ``spec_path`` (``{"targets": [{"paper",
    "what", "table", "metric", "source", "target", "direction", "selection"}]}``), the value, interval and paper
    number read from that comparison table's (metric, source) cell; reached = the point estimate meets the target;
    the candidates judged on validation counted from ``selection``'s ``decisions.json``. Written
    next to the spec as ``targets.{json,csv,md}``. A missing table or cell is an error naming it."""
    from .tables import fmt, fmt_ci, write_table

    spec_path = Path(spec_path)
    spec = json.loads(spec_path.read_text())
    rows = []
    for t in spec["targets"]:
        table_path = Path(base) / t["table"]
        if not table_path.is_file():
            raise ValueError(f"{spec_path}: target {t['what']!r} names {table_path}, which does not exist")
        table = json.loads(table_path.read_text())
        # a column or row that averages several seeds is marked " (N seeds)", and the mark changes as seeds are
        # added: match without it, and count the seeds behind the cell from it (no mark: one seed)
        cell = next((r for r in table["rows"] if _unmarked(r["metric"]) == _unmarked(t["metric"])
                     and _unmarked(r["source"]) == _unmarked(t["source"])), None)
        if cell is None:
            raise ValueError(f"{spec_path}: {table_path} has no row metric={t['metric']!r}, source={t['source']!r}")
        if t["direction"] not in _OPS:
            raise ValueError(f"{spec_path}: direction must be one of {sorted(_OPS)}, got {t['direction']!r}")
        v, lo, hi = cell["value"], cell.get("ci_low"), cell.get("ci_high")
        meta = table.get("meta") or {}
        machine = meta.get("machine") or {}
        rows.append({"paper": t["paper"], "what": t["what"], "paper value": fmt(cell.get("paper")),
                     "ours": fmt_ci(v, lo, hi),
                     "target": f"{t['direction']} {t['target']}",
                     "reached": "—" if v is None else ("yes" if _OPS[t["direction"]](v, t["target"]) else "no"),
                     "judged on validation": _judged(Path(base), t.get("selection")),
                     "seeds": _seeds_marked(cell["metric"]) or _seeds_marked(cell["source"]) or 1,
                     "profile": meta.get("profile", "—"),
                     # the weights the run started from: a pretrained source names itself in the run's record
                     "weights": meta.get("weights_source") or meta.get("weights_card", {}).get("backbone")
                     or "from scratch",
                     "commit": str(meta.get("git_commit", "—"))[:7], "machine": machine.get("cpu", "—"),
                     "table": t["table"]})
    return write_table(spec_path.parent, "targets", rows, title="Our targets and where we stand",
                       description=spec.get("description"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("root", nargs="?", default="results")
    ap.add_argument("--readme", nargs="+", metavar="MD", help="also refresh the table blocks of these Markdown files "
                    "(README.md docs/*.md)")
    ap.add_argument("--combine", nargs="+", metavar="DIR", help="run folders whose runs.jsonl rows go in one table "
                    "(written into ROOT)")
    ap.add_argument("--name", default="combined", help="with --combine: the table's file name")
    ap.add_argument("--columns", help="with --combine: comma-separated row fields")
    args = ap.parse_args(argv)
    if not args.combine and not Path(args.root).is_dir():  # --combine writes into ROOT, making it
        ap.error(f"{args.root}: no such folder (give the results folder, e.g. results)")
    if args.combine:
        if not args.columns:
            ap.error("--combine needs --columns")
        try:
            combine_runs(args.combine, args.root, args.name, [c for c in args.columns.split(",") if c])
        except ValueError as e:
            ap.error(str(e))
    if (Path(args.root) / "target_spec.json").is_file():
        try:
            targets_table(Path(args.root) / "target_spec.json")
        except ValueError as e:
            ap.error(str(e))
    for p in regenerate(args.root):
        print(p)
    for md in args.readme or ():
        print(f"{md}: {update_readme(md)} table block(s) refreshed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
