"""Result tables: raw numbers in CSV and JSON, Markdown generated from them (never typed by hand).

A table is a list of flat dict rows. :func:`write_table` writes ``<name>.csv``, ``<name>.json`` (rows plus a
``meta`` block and the ``kind`` that tells the renderer how to lay it out) and ``<name>.md`` rendered from the
JSON. ``python -m medattn.evaluation.report results/`` re-renders every Markdown file from its JSON.

Paper comparisons use the long format of :func:`comparison_rows`: one row per (metric, source) with the paper
number beside it, so several of our protocols (seeds, splits, ablations) sit in one table.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from ..utils import data_root_writer, to_jsonable

__all__ = ["comparison_rows", "write_table", "render_markdown", "to_jsonable", "fmt"]


def comparison_rows(
    paper: Mapping[str, float | None],
    sources: Mapping[str, Mapping[str, object]],
    extra: Mapping[str, object] | None = None,
) -> list[dict]:
    """Long-format comparison rows ``metric | source | paper | value | ci_low | ci_high | delta``.

    ``paper`` maps metric -> the paper's number (None where the paper gives none). ``sources`` maps a source
    name (e.g. ``"ours: leak-free split"``) to metric -> value, or -> ``(value, low, high)`` with a CI. Metrics
    present in either side are listed; ``delta = value - paper``.
    """
    metrics = list(paper)
    for vals in sources.values():
        metrics += [m for m in vals if m not in metrics]
    rows = []
    for m in metrics:
        p = paper.get(m)
        for src, vals in sources.items():
            if m not in vals:
                continue
            v = vals[m]
            lo = hi = float("nan")
            if isinstance(v, (tuple, list)):
                v, lo, hi = (list(v) + [float("nan")] * 3)[:3]
            v = float(v) if v is not None else float("nan")
            row = {
                "metric": m,
                "source": src,
                "paper": float(p) if p is not None else float("nan"),
                "value": v,
                "ci_low": float(lo),
                "ci_high": float(hi),
                "delta": v - float(p) if p is not None else float("nan"),
            }
            if extra:
                row.update(extra)
            rows.append(row)
    return rows


def fmt(x, digits: int = 4) -> str:
    """Format a number for Markdown; NaN and None print as an em dash."""
    if x is None:
        return "—"
    if isinstance(x, (int, np.integer)) and not isinstance(x, bool):
        return str(int(x))
    if isinstance(x, str) or not isinstance(x, (float, np.floating)):
        return str(x)
    f = float(x)
    if math.isnan(f):
        return "—"
    return f"{f:.{digits}f}"


def _markdown_plain(rows: Sequence[Mapping], columns: Sequence[str] | None = None) -> str:
    if not rows:
        return "_(no rows)_\n"
    cols = list(columns) if columns else list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(fmt(r.get(c)) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def _missing(x) -> bool:
    return x is None or (isinstance(x, (float, np.floating)) and math.isnan(x))


def fmt_ci(value, low, high) -> str:
    """``value [low, high]``, or the value alone when the interval is missing (None or NaN)."""
    txt = fmt(value)
    if not (_missing(low) or _missing(high)):
        txt += f" [{fmt(low)}, {fmt(high)}]"
    return txt


def _markdown_comparison(rows: Sequence[Mapping]) -> str:
    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    sources = list(dict.fromkeys(r["source"] for r in rows))
    cell = {(r["metric"], r["source"]): r for r in rows}
    paper = {r["metric"]: r["paper"] for r in rows}
    lines = ["| metric | paper | " + " | ".join(sources) + " |", "|---|---|" + "---|" * len(sources)]
    for m in metrics:
        cells = []
        for s in sources:
            r = cell.get((m, s))
            if r is None:
                cells.append("—")
                continue
            txt = fmt_ci(r["value"], r["ci_low"], r["ci_high"])
            if not _missing(r["delta"]):
                txt += f" (Δ {r['delta']:+.4f})"
            cells.append(txt)
        lines.append(f"| {m} | {fmt(paper[m])} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def render_markdown(table: Mapping) -> str:
    """Markdown of a table dict as written by :func:`write_table` (``title``, ``kind``, ``rows``, ``meta``)."""
    title = table.get("title") or table.get("name", "table")
    out = [f"## {title}\n"]
    if table.get("description"):
        out.append(table["description"].strip() + "\n")
    rows = table.get("rows", [])
    if table.get("kind") == "comparison":
        out.append(_markdown_comparison(rows))
        out.append("\nValues are ours; brackets are 95 % confidence intervals; Δ = ours - paper.\n")
    else:
        out.append(_markdown_plain(rows, table.get("columns")))
    meta = table.get("meta") or {}
    if meta:
        out.append("\n<details><summary>How this table was made</summary>\n")
        portable = data_root_writer(meta.get("data_dir"))
        for k in ("command", "git_commit", "profile", "seeds", "data_dir", "data_manifest_sha256", "machine",
                  "wall_time_s", "started", "synthetic", "dry_run", "strategy", "replicas"):
            if k in meta:
                out.append(f"- {k}: `{portable(meta[k])}`")
        if meta.get("complete") is False:  # the training process stopped with runs of its plan left
            out.append("- complete: `False` (the training process stopped before every run of its plan was done)")
        for src in meta.get("sources") or ():  # a table combined from several runs: each run's provenance
            portable = data_root_writer(src.get("data_dir"))
            rest = ", ".join(f"{k} `{portable(v)}`" for k, v in src.items() if k not in ("folder", "command"))
            out.append(f"- {src.get('folder')}: `{portable(src.get('command'))}` ({rest})")
        out.append("\n</details>\n")
    return "\n".join(out)


def write_table(
    out_dir,
    name: str,
    rows: Iterable[Mapping],
    *,
    title: str | None = None,
    kind: str = "plain",
    columns: Sequence[str] | None = None,
    meta: Mapping | None = None,
    description: str | None = None,
) -> dict[str, Path]:
    """Write ``<name>.csv``, ``<name>.json`` and the generated ``<name>.md`` into ``out_dir``; returns the paths."""
    if kind not in ("plain", "comparison"):
        raise ValueError(f"kind must be 'plain' or 'comparison', got {kind!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = [to_jsonable(dict(r)) for r in rows]
    cols = list(columns) if columns else list(dict.fromkeys(k for r in rows for k in r))
    paths = {"csv": out / f"{name}.csv", "json": out / f"{name}.json", "md": out / f"{name}.md"}
    tmp = {k: p.with_name(f".{p.name}.tmp") for k, p in paths.items()}  # written whole, then renamed
    with open(tmp["csv"], "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({c: (json.dumps(r[c]) if isinstance(r.get(c), (list, dict)) else r.get(c)) for c in cols})
    table = {"name": name, "title": title or name, "kind": kind, "columns": cols, "rows": rows,
             "meta": to_jsonable(dict(meta or {})), "description": description}
    tmp["json"].write_text(json.dumps(table, indent=2, allow_nan=False) + "\n")
    tmp["md"].write_text(render_markdown(table))
    for k, p in paths.items():
        tmp[k].replace(p)
    return paths
