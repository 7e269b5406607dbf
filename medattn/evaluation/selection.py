"""What was tried for a profile: every selection candidate, the rule that judged it, its validation figure read
from its committed run folder beside the rule's bar, and whether it was adopted.

``results/<paper>/selection/decisions.json`` holds what the rules decided, one entry per candidate::

    {"candidate": "E1", "change": "--image-size 160", "rule": "Rule for a stronger model",
     "folder": "E1", "figure": "val_roc_auc", "bar": 0.821, "better": "higher", "adopted": true}

``folder`` (beside the file; or a list of folders, their rows pooled) holds the candidate's ``runs.jsonl`` (or the file ``file`` names); ``figure`` is the
row field the rule reads, averaged over the rows (those matching ``rows``, e.g. ``{"backbone": "xception"}``) and
multiplied by ``scale`` (e.g. 816 to count validation images); ``bar`` is the rule's threshold on that figure
(``better``: ``higher`` or ``lower``); ``note`` says in a few words what the bar alone does not (a rule with
a second condition, a candidate that never ran). The figure is never typed in: it is read from the committed rows, so the
table cannot drift from them, and a candidate marked adopted must clear its bar (:func:`check_decisions`).

Each entry also carries ``rule_commit`` and ``rule_committed``: the first commit whose README.md holds the rule's
words, and its time (stamped from git by ``--stamp``; a test checks them against git). The table shows that time
beside ``run_started``, the first start recorded in the ``run.json`` of the folders the rule's run made (``ran``,
default ``folder``), and ``rule_first``: whether git shows the rule before its run. A candidate adopted by a rule
that git does not show first must say "post-dated" in its note. ``superseded_by`` names the later candidate (of the
same file, judged by a rule git shows before its run) whose decision the profile's setting rests on instead: how a
post-dated choice is made again in the open.

    python -m medattn.evaluation.selection results/<paper>/selection          # writes tried.{csv,json,md} there
    python -m medattn.evaluation.selection --stamp results/<paper>/selection  # fills rule_commit from git first
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from datetime import datetime
from pathlib import Path

__all__ = ["ran", "tried_rows", "check_decisions", "write_tried", "stamp_rule_commits"]

COLUMNS = ("candidate", "change", "figure", "value", "n_rows", "bar", "clears_bar", "adopted", "note", "rule",
           "rule_committed", "run_started", "rule_first", "superseded_by", "folder")


def _rows(path: Path, match: dict) -> list[dict]:
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    if path.suffix == ".json":  # a table written by write_table
        rows = json.loads(path.read_text())["rows"]
    else:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if all(r.get(k) == v for k, v in match.items())]


def _folders(entry: dict) -> list[str]:
    folder = entry.get("folder") or []
    return [folder] if isinstance(folder, str) else list(folder)


def _figure(selection: Path, entry: dict) -> tuple[float, int]:
    """The entry's figure: the mean of ``figure`` over its folders' matching rows, times ``scale``."""
    paths = [selection / f / entry.get("file", "runs.jsonl") for f in _folders(entry)]
    rows = [r for path in paths for r in _rows(path, entry.get("rows", {}))]
    values = [r[entry["figure"]] for r in rows if isinstance(r.get(entry["figure"]), (int, float))]
    if not values:
        raise ValueError(f"{', '.join(map(str, paths))}: no row with a number in {entry['figure']!r} (matching "
                         f"{entry.get('rows', {})})")
    return sum(values) / len(values) * entry.get("scale", 1), len(values)


def _clears(value: float, entry: dict) -> bool | None:
    bar = entry.get("bar")
    if bar is None or value is None or math.isnan(value):
        return None
    return value >= bar if entry.get("better", "higher") == "higher" else value <= bar


def _time(text: str | None) -> datetime | None:
    """A time as git (``2026-12-02T18:08:45+00:00``) or run.json (``...+0000``) writes it."""
    if not text:
        return None
    return datetime.strptime(text.replace("+00:00", "+0000"), "%Y-%m-%dT%H:%M:%S%z")


def _run_started(selection: Path, entry: dict) -> datetime | None:
    """The first start recorded in the run.json of the folders the entry's run made (``ran``, default ``folder``)."""
    ran = entry.get("ran", _folders(entry))
    starts = []
    for folder in [ran] if isinstance(ran, str) else ran:
        path = selection / folder / "run.json"
        if path.is_file():
            run = json.loads(path.read_text())
            starts += [_time(p.get("started")) for p in run.get("processes") or [run]]
    starts = [t for t in starts if t is not None]
    return min(starts) if starts else None


def _timing(selection: Path, entry: dict) -> dict:
    """The rule's commit time beside its run's start, and whether the rule came first."""
    committed, started = _time(entry.get("rule_committed")), _run_started(selection, entry)
    return {"rule_committed": f"{committed:%Y-%m-%d %H:%M} ({entry['rule_commit']})" if committed else None,
            "run_started": f"{started:%Y-%m-%d %H:%M}" if started else None,
            "rule_first": committed <= started if committed and started else None}


def ran(entry: dict) -> bool:
    """Whether a decision's candidate ran and was judged: it names the folder its figure is read from (a rule
    withdrawn before its run finished names none)."""
    return bool(entry.get("folder"))


def tried_rows(selection) -> list[dict]:
    """One row per entry of ``<selection>/decisions.json``, its figure read from its folder."""
    selection = Path(selection)
    rows = []
    for entry in json.loads((selection / "decisions.json").read_text())["decisions"]:
        value, n = _figure(selection, entry) if ran(entry) else (float("nan"), 0)
        rows.append({"candidate": entry["candidate"], "change": entry.get("change", ""),
                     "figure": entry.get("figure", "") + (f" x {entry['scale']}" if entry.get("scale", 1) != 1 else ""),
                     "value": value, "n_rows": n, "bar": entry.get("bar"),
                     "clears_bar": _clears(value, entry), "adopted": bool(entry["adopted"]),
                     "note": entry.get("note", ""), "rule": entry["rule"], **_timing(selection, entry),
                     "superseded_by": entry.get("superseded_by") or "", "folder": ", ".join(_folders(entry))})
    return rows


def check_decisions(selection) -> list[str]:
    """What is wrong with ``<selection>/decisions.json``: a candidate adopted below its bar, a rule whose words are
    not in the folder's README.md, an entry without a folder or a reason for lacking one, a post-dated adoption
    that does not say so, a ``superseded_by`` that names no candidate judged by a rule git shows first."""
    selection = Path(selection)
    readme = (selection / "README.md").read_text() if (selection / "README.md").is_file() else ""
    entries = json.loads((selection / "decisions.json").read_text())["decisions"]
    problems = []
    rows = tried_rows(selection)
    first = {row["candidate"]: row["rule_first"] for row in rows}
    for entry, row in zip(entries, rows):
        name = entry["candidate"]
        if row["adopted"] and row["clears_bar"] is False:
            problems.append(f"{name}: adopted, but {row['value']:.4g} does not clear its bar {row['bar']}")
        if entry["rule"] not in readme:
            problems.append(f"{name}: rule {entry['rule']!r} is not in {selection / 'README.md'}")
        if not entry.get("folder") and not entry.get("note"):
            problems.append(f"{name}: no folder and no note saying why")
        if row["adopted"] and row["rule_first"] is False and "post-dated" not in entry.get("note", ""):
            problems.append(f"{name}: adopted by a rule git shows only after its run started "
                            f"({row['rule_committed']} vs {row['run_started']}), and its note does not say post-dated")
        later = entry.get("superseded_by")
        if later and first.get(later) is not True:
            problems.append(f"{name}: superseded_by {later!r} names no candidate here whose rule git shows before "
                            "its run")
    return problems


def first_commit_with(path: Path, text: str) -> tuple[str, str] | None:
    """``(short hash, ISO time)`` of the oldest commit that changed how often ``text`` occurs in ``path`` (git's
    pickaxe): the commit that first wrote it. None outside a git checkout or when git never saw it."""
    path = Path(path).resolve()
    out = subprocess.run(["git", "log", "--reverse", "--format=%h %cI", "-S", text, "--", path.name],
                         cwd=path.parent, capture_output=True, text=True)
    first = out.stdout.split("\n")[0].split() if out.returncode == 0 else []
    return (first[0], first[1]) if len(first) == 2 else None


def stamp_rule_commits(selection) -> int:
    """Fill ``rule_commit`` and ``rule_committed`` of the entries that lack them from git; the number filled."""
    selection = Path(selection)
    path = selection / "decisions.json"
    data = json.loads(path.read_text())
    filled = 0
    for entry in data["decisions"]:
        if entry.get("rule_commit"):
            continue
        found = first_commit_with(selection / "README.md", entry["rule"])
        if found:
            entry["rule_commit"], entry["rule_committed"] = found
            filled += 1
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    return filled


def write_tried(selection) -> Path:
    """``tried.{csv,json,md}`` in the selection folder, from its decisions.json and the candidates' rows."""
    from .tables import write_table

    selection = Path(selection)
    problems = check_decisions(selection)
    if problems:
        raise ValueError("; ".join(problems))
    paper = selection.parent.name
    paths = write_table(selection, "tried", tried_rows(selection), columns=list(COLUMNS),
                        title=f"{paper}: every candidate, its rule and its validation figure",
                        description="Each candidate was judged on validation data only, by the rule named (found by "
                                    "these words in selection/README.md). `value`: the rule's figure, "
                                    "the mean over the candidate's rows in `folder` (read from its runs.jsonl); "
                                    "`bar`: what the rule asked of it; `adopted`: what the rule decided; "
                                    "`rule_committed`: when git first shows the rule's words (UTC, the commit); "
                                    "`run_started`: when its run started (run.json); `rule_first`: whether the "
                                    "rule came first (an adopted candidate whose rule did not says post-dated); "
                                    "`superseded_by`: the later candidate, judged by a rule that came first, whose "
                                    "decision the setting rests on now.")
    return paths["md"]


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m medattn.evaluation.selection", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("selection", help="a selection folder: results/<paper>/selection (holds decisions.json)")
    parser.add_argument("--stamp", action="store_true",
                        help="first fill each rule's rule_commit and rule_committed from git")
    args = parser.parse_args(argv)
    if not (Path(args.selection) / "decisions.json").is_file():
        print(f"error: {args.selection}: no decisions.json there (give a results/<paper>/selection folder)",
              file=sys.stderr)
        return 2
    try:
        if args.stamp:
            print(f"stamped {stamp_rule_commits(args.selection)} rule(s) with the commit that first wrote them")
        path = write_tried(args.selection)
    except (ValueError, OSError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
