"""Check a results folder's comparison table against its per-run rows: every cell of ours is derived again.

A cell of ``comparison.json`` whose source starts with "ours" names its run in its labels (an arm, protocol, model
or backbone of ``runs.json``; an ensemble's model or backbone in ``ensembles.json`` when the label says
"ensemble") and its metric as the last word of the metric label. The cell is explained when one field of that run
whose name contains the metric gives the cell: for several seeds, the mean over seeds and mean +- t(0.975, n-1)
standard errors clipped to [0, 1] (the number of seeds must be the one the label states); for one run, its value
and the interval the run recorded for that field. A time in seconds (``latency_s``) is the first seed's
milliseconds field (``latency_median_ms``) over 1000: a measured time, not a mean. :mod:`medattn.evaluation.recompute` checks the runs' rows
against the prediction files, so the two together derive every cell from committed predictions.

:func:`check_run_tables` does the same for the tables that select or summarise runs: ``summary.json`` and
``sweep.json`` (every cell is the run row's field), ``seeds.json`` (the spread over seeds of a metric: number,
mean, sample sd, min, max, interval) and ``differences.json`` (``A - B`` paired by seed: mean and unclipped t
interval over seeds, and whether it excludes 0).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np

__all__ = ["ARM_KEYS", "check_comparison", "check_run_tables", "comparison_sources", "same_value"]

ARM_KEYS = ("model", "arm", "protocol", "variant", "backbone")  # the field that names a run, first found
SEEDS_MARK = re.compile(r"\((\d+) seeds\)")


def same_value(committed, value, rtol: float = 1e-9) -> bool:
    """A committed cell equals a recomputed value: numbers within ``rtol`` (None, how JSON writes NaN, equals NaN),
    lists (or their JSON text, as some tables store confusion matrices and intervals) element for element."""
    if isinstance(committed, str) and committed.startswith("["):
        committed = json.loads(committed)
    if isinstance(committed, list):
        a, b = (np.asarray(x, dtype=float) for x in (committed, value))
        return a.shape == b.shape and bool(np.allclose(a, b, rtol=rtol, atol=1e-12, equal_nan=True))
    a, b = (float("nan") if x is None else float(x) for x in (committed, value))
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=rtol, abs_tol=1e-12)


def _over_seeds(values, clip: bool = True) -> tuple[float, float, float]:
    """Mean over seeds and mean +- t(0.975, n-1) standard errors, clipped to [0, 1] unless ``clip`` is False."""
    from scipy.stats import t as student_t

    v = np.asarray([x for x in values if x is not None], dtype=float)
    v = v[~np.isnan(v)]
    m = float(v.mean()) if len(v) else float("nan")
    if len(v) < 2:
        return m, float("nan"), float("nan")
    half = float(student_t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return (m, max(0.0, m - half), min(1.0, m + half)) if clip else (m, m - half, m + half)


def _recorded_interval(row: dict, field: str) -> tuple | None:
    if isinstance(row.get(f"{field}_ci"), list):
        return tuple(row[f"{field}_ci"])
    for low, high in (("wilson_low", "wilson_high"), ("boot_low", "boot_high")):
        if row.get(f"{field}_{low}") is not None:
            return row[f"{field}_{low}"], row[f"{field}_{high}"]
    return None


def _explains(rows: list[dict], field: str, cell: dict) -> bool:
    if field.endswith("_ms") and str(cell["metric"]).endswith("_s"):
        return isinstance(rows[0][field], (int, float)) and same_value(rows[0][field] / 1e3, cell["value"])
    values = [r.get(field) for r in rows]
    if any(not isinstance(v, (int, float)) or isinstance(v, bool) for v in values):
        return False
    if len(rows) > 1:
        m, lo, hi = _over_seeds(values)
        return same_value(m, cell["value"]) and (cell.get("ci_low") is None or (
            same_value(lo, cell["ci_low"]) and same_value(hi, cell["ci_high"])))
    interval = _recorded_interval(rows[0], field)
    return same_value(values[0], cell["value"]) and (cell.get("ci_low") is None or interval is None or (
        same_value(interval[0], cell["ci_low"]) and same_value(interval[1], cell["ci_high"])))


def _groups(rows: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in rows:
        arm = next((r[k] for k in ARM_KEYS if r.get(k) is not None), None)
        out.setdefault(str(arm), []).append(r)
    return {k: sorted(v, key=lambda r: r.get("seed", 0)) for k, v in out.items()}


def _named_run(label: str, names) -> str | None:
    """The longest run name that stands as a whole word in ``label`` (``vgg16:model1`` is not ``vgg16``)."""
    found = [n for n in names if re.search(rf"(?<![\w:]){re.escape(n)}(?![\w:])", label)]
    return max(found, key=len) if found else None


def _rows(folder: Path, name: str) -> list[dict]:
    path = folder / name
    return json.loads(path.read_text())["rows"] if path.exists() else []


def _ours_cells(folder: Path):
    """``(label, kind, name, rows, cell)`` for every cell of ours in ``folder/comparison.json``: the run (or
    seed ensemble: ``kind``) its label names, from ``runs.json`` (or ``ensembles.json``), and its rows ([] if none);
    none where the folder lacks either table."""
    if not (folder / "comparison.json").exists() or not (folder / "runs.json").exists():
        return
    runs = _groups(_rows(folder, "runs.json"))
    ensembles = {name: rs[-1:] for name, rs in _groups(_rows(folder, "ensembles.json")).items()}
    for cell in _rows(folder, "comparison.json"):
        if not str(cell.get("source", "")).startswith("ours") or cell.get("value") is None:
            continue
        label = f"{cell['metric']} {cell['source']}"
        pool = ensembles if ", ensemble" in label else runs
        name = _named_run(label, pool) if len(pool) > 1 or ", ensemble" in label else next(iter(pool), None)
        yield label, ("ensemble" if pool is ensembles else "run"), name, pool.get(name, []), cell


def _explaining_fields(rows: list[dict], cell: dict) -> list[str]:
    """The fields of ``rows`` that give ``cell`` (its metric is the last word of its metric label)."""
    metric = str(cell["metric"]).split()[-1]
    return [f for f in rows[0] if (metric in f or (metric.endswith("_s") and f.startswith(metric[:-1])
                                                   and f.endswith("_ms"))) and _explains(rows, f, cell)]


def comparison_sources(folder: Path) -> list[tuple[str, str, str, list, list[str]]]:
    """``(label, "run" or "ensemble", name, seeds, fields)`` for every cell of ours in ``folder/comparison.json``
    that its rows explain: the seeds of the run's rows (``[None]`` for an ensemble) and the fields of those rows
    the cell is derived from."""
    out = []
    for label, kind, name, rows, cell in _ours_cells(Path(folder)):
        fields = _explaining_fields(rows, cell) if rows else []
        if fields:
            seeds = [r.get("seed", 0) for r in rows] if kind == "run" else [None]
            out.append((label, kind, str(name), seeds, fields))
    return out


def check_comparison(folder: Path) -> tuple[int, list[str]]:
    """Cells of ours checked in ``folder/comparison.json`` and one line per cell no run row explains."""
    folder = Path(folder)
    checked, problems = 0, []
    for label, kind, name, rows, cell in _ours_cells(folder):
        stated = SEEDS_MARK.search(label)
        checked += 1
        if not rows:
            problems.append(f"{folder}: {label!r}: no run row it names")
        elif stated and kind == "run" and int(stated.group(1)) != len(rows):
            problems.append(f"{folder}: {label!r}: says {stated.group(1)} seeds, runs.json has {len(rows)}")
        elif not _explaining_fields(rows, cell):
            metric = str(cell["metric"]).split()[-1]
            problems.append(f"{folder}: {label!r}: {cell['value']!r} is no field holding {metric!r} of {name}")
    return checked, problems


def _check_selected(folder: Path, name: str, runs: dict) -> tuple[int, list[str]]:
    checked, problems = 0, []
    for row in _rows(folder, name):
        arm = next((str(row[k]) for k in ARM_KEYS if row.get(k) is not None), None)
        run = next((r for r in runs.get(arm, []) if r.get("seed", 0) == row.get("seed", 0)), None)
        if run is None:
            problems.append(f"{folder / name}: {arm} seed {row.get('seed')}: no such run in runs.json")
            continue
        for k, v in row.items():
            if k in run and isinstance(v, float):
                checked += 1
                if not same_value(v, run[k]):
                    problems.append(f"{folder / name}: {arm} seed {row.get('seed')}: {k} {v!r}, runs.json {run[k]!r}")
    return checked, problems


def _spread_problem(cell: dict, values: list, clip: bool) -> str | None:
    m, lo, hi = _over_seeds(values, clip)
    want = {"n_seeds": len(values), "mean": m, "ci_low": lo, "ci_high": hi}
    if "sd" in cell:
        want.update(sd=float(np.std(values, ddof=1)) if len(values) > 1 else None, min=min(values), max=max(values))
    if "beyond_seed_spread" in cell:
        want["beyond_seed_spread"] = bool(lo > 0 or hi < 0)
    bad = [k for k, v in want.items() if k in cell and not (
        cell[k] == v if isinstance(v, bool) else same_value(cell[k], v))]
    return f"{bad} differ" if bad else None


def check_run_tables(folder: Path) -> tuple[int, list[str]]:
    """Cells checked in ``summary.json``, ``sweep.json``, ``seeds.json`` and ``differences.json`` of ``folder``
    against its ``runs.json``, and one line per cell that differs."""
    folder = Path(folder)
    if not (folder / "runs.json").exists():
        return 0, []
    runs = _groups(_rows(folder, "runs.json"))
    checked, problems = 0, []
    for name in ("summary.json", "sweep.json"):
        n, found = _check_selected(folder, name, runs)
        checked, problems = checked + n, problems + found
    for name in ("seeds.json", "differences.json"):
        for cell in _rows(folder, name):
            if name == "seeds.json":
                group = next(str(v) for k, v in cell.items() if k != "metric")
                values = [r[cell["metric"]] for r in runs.get(group, []) if r.get(cell["metric"]) is not None]
            else:
                a, b = (runs.get(x, []) for x in str(cell["difference"]).split(" - "))
                by_seed = {r["seed"]: r[cell["metric"]] for r in b if r.get(cell["metric"]) is not None}
                values = [r[cell["metric"]] - by_seed[r["seed"]] for r in a
                          if r.get(cell["metric"]) is not None and r["seed"] in by_seed]
            checked += 1
            problem = _spread_problem(cell, values, clip=name == "seeds.json") if values else "no runs"
            if problem:
                problems.append(f"{folder / name}: {cell}: {problem}")
    return checked, problems
