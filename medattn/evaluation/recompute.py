"""Recompute the committed tables' per-run metrics from the committed prediction files alone.

    python -m medattn.evaluation.recompute results            # every results folder under results/
    python -m medattn.evaluation.recompute results/emtnet     # one

Each results folder that holds ``runs.json`` and ``predictions/<arm>_s<seed>.npz`` is checked: every metric below
is computed again from the prediction file with scikit-learn (not with the code that wrote the table) and compared
with the row's value; the script prints how many cells it checked, every difference, and exits 1 if there is one.

* brain MRI (``prob``, ``y_true``, ``dedup``): top-1 accuracy, macro F1, macro one-vs-rest AUC and the recall of
  each class, on the official test set and on the de-duplicated one;
* MIAS (``roi_pred``, ``roi_score``, ``y_true``): ROI accuracy, tumour recall and precision, specificity, the four
  counts and the ROI AUC;
* EMT-Net (``prob`` = P(malignant), ``pred_tuned``, ``y_true``): accuracy, sensitivity, specificity and the counts
  at 0.5, the same at the thresholds chosen on validation data, and AUC;
* BUSI (``prob``, ``y_true``, per-image ``dice`` and ``lesion``): accuracy, macro F1, macro AUC, and Dice over all
  images and over lesion images (the masks themselves are not committed, so pixel accuracy, IoU and the raw Dice
  are not recomputed);
* DCAT (``prob``, ``y_true``): accuracy, macro F1, AUC (binary: of the positive class; else macro one-vs-rest).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Callable

import numpy as np

__all__ = ["recompute_folder", "recompute_row", "main"]

ARM_KEYS = ("model", "arm", "protocol", "variant", "backbone")


def _auc(y, score) -> float:
    from sklearn.metrics import roc_auc_score

    if score.ndim == 1 or score.shape[1] == 2:
        return float(roc_auc_score(y, score if score.ndim == 1 else score[:, 1]))
    return float(roc_auc_score(y, score, multi_class="ovr", average="macro", labels=list(range(score.shape[1]))))


def _f1_macro(y, pred, n_classes: int) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(y, pred, average="macro", labels=list(range(n_classes)), zero_division=0))


def _brain(p, row) -> dict:
    from sklearn.metrics import recall_score

    out = {}
    classes = ("glioma", "meningioma", "notumor", "pituitary")
    for prefix, keep in (("official", np.ones(len(p["y_true"]), bool)), ("dedup", p["dedup"].astype(bool))):
        y, prob = p["y_true"][keep], p["prob"][keep]
        pred = prob.argmax(1)
        out[f"{prefix}_accuracy"] = float(np.mean(pred == y))
        out[f"{prefix}_f1_macro"] = _f1_macro(y, pred, prob.shape[1])
        out[f"{prefix}_roc_auc"] = _auc(y, prob)
        recalls = recall_score(y, pred, average=None, labels=list(range(prob.shape[1])), zero_division=0)
        out.update({f"{prefix}_recall_{c}": float(r) for c, r in zip(classes, recalls)})
    return out


def _counts(y, pred) -> dict:
    tp, fp = int(np.sum((pred == 1) & (y == 1))), int(np.sum((pred == 1) & (y == 0)))
    fn, tn = int(np.sum((pred == 0) & (y == 1))), int(np.sum((pred == 0) & (y == 0)))
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn}


def _mias(p, row) -> dict:
    y, pred = p["y_true"].astype(int), p["roi_pred"].astype(int)
    c = _counts(y, pred)
    return {**c, "accuracy": float(np.mean(pred == y)), "recall_tumour": c["tp"] / max(c["tp"] + c["fn"], 1),
            "precision_tumour": c["tp"] / max(c["tp"] + c["fp"], 1), "specificity": c["tn"] / max(c["tn"] + c["fp"], 1),
            "roc_auc": _auc(y, p["roi_score"])}


def _binary(y, pred, suffix: str = "") -> dict:
    c = _counts(y, pred)
    return {f"accuracy{suffix}": float(np.mean(pred == y)), f"sensitivity{suffix}": c["tp"] / max(c["tp"] + c["fn"], 1),
            f"specificity{suffix}": c["tn"] / max(c["tn"] + c["fp"], 1)}


def _emtnet(p, row) -> dict:
    y, prob = p["y_true"].astype(int), p["prob"].astype(np.float64)
    pred = (prob > 0.5).astype(int)
    out = {**_counts(y, pred), **_binary(y, pred), "roc_auc": _auc(y, prob)}
    if "pred_tuned" in p.files and row.get("accuracy_tuned") is not None:
        out.update(_binary(y, p["pred_tuned"].astype(int), "_tuned"))
    return out


def _busi(p, row) -> dict:
    y, prob = p["y_true"].astype(int), p["prob"]
    pred = prob.argmax(1)
    return {"accuracy": float(np.mean(pred == y)), "f1_macro": _f1_macro(y, pred, prob.shape[1]),
            "roc_auc": _auc(y, prob), "dice_all": float(np.mean(p["dice"])),
            "dice_lesion": float(np.mean(p["dice"][p["lesion"].astype(bool)]))}


def _dcat(p, row) -> dict:
    y, prob = p["y_true"].astype(int), p["prob"]
    pred = prob.argmax(1)
    return {"accuracy": float(np.mean(pred == y)), "f1_macro": _f1_macro(y, pred, prob.shape[1]),
            "roc_auc": _auc(y, prob)}


PAPERS: dict[str, Callable] = {"brain_tumor_transfer": _brain, "mias_fusion": _mias, "emtnet": _emtnet,
                               "dcnnimaf": _busi, "dcat": _dcat}


def _paper_of(folder: Path) -> str | None:
    run = json.loads((folder / "run.json").read_text()) if (folder / "run.json").exists() else {}
    script = Path(str(run.get("command", "")).split()[1]).stem if len(str(run.get("command", "")).split()) > 1 else ""
    return script if script in PAPERS else next((p for p in PAPERS if p in folder.parts), None)


def recompute_row(paper: str, prediction_file: Path, row: dict) -> list[tuple[str, object, float]]:
    """``(field, committed, recomputed)`` for every field of ``row`` the paper's check recomputes."""
    with np.load(prediction_file, allow_pickle=False) as p:
        values = PAPERS[paper](p, row)
    return [(k, row[k], v) for k, v in values.items() if row.get(k) is not None]


def recompute_folder(folder: Path, rtol: float = 1e-9) -> tuple[int, list[str]]:
    """Cells checked and the differences found (one line each) in one results folder."""
    folder = Path(folder)
    paper = _paper_of(folder)
    if paper is None or not (folder / "runs.json").exists() or not (folder / "predictions").is_dir():
        return 0, []  # a folder that kept no predictions (some selection runs) has nothing to recompute from
    checked, problems = 0, []
    for row in json.loads((folder / "runs.json").read_text())["rows"]:
        arm = next((row[k] for k in ARM_KEYS if row.get(k) is not None), None)
        pred = folder / "predictions" / f"{str(arm).replace(':', '_')}_s{row.get('seed', 0)}.npz"
        if not pred.exists():
            problems.append(f"{folder}: {arm} seed {row.get('seed')}: no prediction file {pred.name}")
            continue
        for field, committed, value in recompute_row(paper, pred, row):
            checked += 1
            if not math.isclose(float(committed), value, rel_tol=rtol, abs_tol=1e-12):
                problems.append(f"{folder}: {arm} seed {row.get('seed')}: {field} committed {committed!r}, "
                                f"recomputed {value!r}")
    return checked, problems


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", nargs="+", help="results folders (searched for runs.json below them)")
    ap.add_argument("--rtol", type=float, default=1e-9)
    args = ap.parse_args(argv)
    total, problems, folders = 0, [], 0
    for root in map(Path, args.folders):
        for runs in sorted(root.rglob("runs.json")) if root.is_dir() else []:
            n, found = recompute_folder(runs.parent, args.rtol)
            total, folders, problems = total + n, folders + bool(n), problems + found
    for line in problems:
        print(line, file=sys.stderr)
    print(f"recompute: {total} cells in {folders} results folder(s) checked against their prediction files; "
          f"{len(problems)} difference(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
