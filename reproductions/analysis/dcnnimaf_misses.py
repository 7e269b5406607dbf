"""Where the BUSI segmenter loses its Dice, read on images that are NOT the test split.

For finished (protocol, seed) runs of ``reproductions/dcnnimaf.py`` whose checkpoints are still in ``--runs-dir``,
this rebuilds the run's split (the same audit and seeded split as the run), predicts the training images with the
cross-fit segmenters that did not train on them (out of fold, as the classifier saw them) and the validation images
with the final segmenter (flip TTA as the profile), and counts, before any mask cleaning, the lesion images each
model misses (Dice < 0.1) by kind: no mask at all, a mask elsewhere, the lesion in a smaller component than the
largest, or a small overlap (:func:`medattn.evaluation.segmentation.miss_breakdown`); with the mean Dice of the
lesions it finds, the share of normal images given a mask, and the lesion Dice a lower binarisation threshold
would give. The test images are never predicted.

    python reproductions/analysis/dcnnimaf_misses.py --runs-dir runs/busi_j --data-dir $MEDATTN_DATA_DIR/busi \\
        --runs grouped_s0 --out results/dcnnimaf/misses

The runs must have been made with the profile as this code defines it (no ``--set`` changes to the segmenter, not a
selection run): the segmenter is rebuilt from the profile; its saved card's input size and flip TTA are checked, and
loading the checkpoints fails, naming the file, when the encoder differs.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
import types
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
THRESHOLDS = (0.3, 0.4, 0.5)


def _script():
    spec = importlib.util.spec_from_file_location("dcnnimaf_script", REPO / "reproductions" / "dcnnimaf.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up by name
    spec.loader.exec_module(mod)
    return mod


def part_row(prob, masks, threshold: float = 0.5) -> dict:
    """One part's figures: :func:`miss_breakdown` at ``threshold``, the share of images without a lesion given a
    mask, and the lesion Dice at each of ``THRESHOLDS``."""
    from medattn.evaluation.segmentation import binarize, miss_breakdown, per_image_dice

    lesion = binarize(masks).reshape(len(masks), -1).any(axis=1)
    row = {"n_images": int(len(masks)), **miss_breakdown(masks, prob, threshold)}
    pos = binarize(prob, threshold).reshape(len(prob), -1).any(axis=1)
    row["normal_marked"] = float(pos[~lesion].mean()) if (~lesion).any() else float("nan")
    for t in THRESHOLDS:
        row[f"dice_lesion_at_{t}"] = float(per_image_dice(masks, prob, t)[lesion].mean())
    return row


def _parse(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs-dir", required=True, help="the --runs-dir of the dcnnimaf run (holds <paper>-<profile>/)")
    ap.add_argument("--data-dir", required=True, help="the BUSI folder the run used")
    ap.add_argument("--runs", required=True, help="comma-separated <protocol>_s<seed>, e.g. grouped_s0,random_s0")
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--out", required=True, help="folder for misses.{csv,json,md}")
    return ap.parse_args(argv)


class _Refused(Exception):
    """A run this analysis cannot read, reported as one line with exit code 2."""


def _checked_identity(folder: Path, cfg, audit_rule: str, profile: str) -> dict:
    """The run's identity, or _Refused when its split rule or its segmenter differ from this code's."""
    ident = json.loads((folder / "identity.json").read_text())
    if ident.get("audit", audit_rule) != audit_rule:
        raise _Refused(f"{folder} was split with audit rule {ident['audit']!r}, this code's is {audit_rule!r}")
    card = json.loads(path.read_text()) if (path := folder / "models" / "segmenter.json").is_file() else {}
    size = cfg.stage("seg").image_size
    made = (card.get("input_size", size), card.get("tta_flip", cfg.seg_tta))
    if made != (size, cfg.seg_tta):  # a run made with --set changes to the segmenter
        raise _Refused(f"{folder} has a segmenter at {made[0]} px (flip TTA {made[1]}), the {profile} profile "
                       f"{size} px ({cfg.seg_tta}): this analysis rebuilds the profile as it is")
    return ident


def _run_rows(dcn, cfg, data, labels, folder: Path, ident: dict) -> list[dict]:
    """The run's training images predicted out of fold and its validation images by the final segmenter."""
    import keras

    from medattn.datasets import kfold_split
    from medattn.models.linknet import build_linknet
    from medattn.training.custom_loop import predict as loop_predict
    from medattn.training.fit import load_variables

    arm, seed = ident["arm"], int(ident["seed"])
    groups = data["own"] if arm == "random" else data["grouped"]
    split = dcn.protocol_split(labels, groups, seed)
    xs = {k: tuple(a[idx] for a in data["arrays"]) for k, idx in split.items() if k != "test"}  # never the test
    keras.utils.clear_session()
    model = build_linknet(cfg.seg_backbone, cfg.stage("seg").image_size, weights=None,
                          attention=None if arm.endswith("no_attention") else cfg.seg_attention,
                          encoder_width=cfg.encoder_width,
                          final_filters=32 if cfg.seg_final_filters is None else cfg.seg_final_filters)

    def predict(x):  # as the run predicted them
        return dcn.seg_predict(lambda batch: loop_predict(model, batch, 8), cfg, x)

    oof = np.zeros(xs["train"][1].shape, dtype=np.float32)
    folds = kfold_split(labels[split["train"]], np.asarray(groups)[split["train"]], cfg.crossfit_folds, seed=seed)
    for f, fold in enumerate(folds):
        load_variables(list(model.variables), folder / f"seg_fold{f}" / "best.npz")
        oof[fold["test"]] = predict(xs["train"][0][fold["test"]])
    load_variables(list(model.variables), folder / "seg_final" / "best.npz")
    val = predict(xs["val"][0])
    return [{"run": folder.name, "protocol": arm, "seed": seed, "part": part, **part_row(prob, masks)}
            for part, prob, masks in (("train, out of fold", oof, xs["train"][1]), ("validation", val, xs["val"][1]))]


DESCRIPTION = (
    "Before mask cleaning, threshold 0.5. A lesion image is missed when its Dice is below 0.1: `missed_empty` no "
    "pixel predicted, `missed_elsewhere` predicted pixels none of which touch the lesion, `missed_wrong_component` the "
    "lesion is not in the largest component, `missed_small_overlap` the rest. `dice_found`: mean Dice of the lesion "
    "images not missed; `empty_max_prob_median`: median of the highest probability inside the lesion of the empty "
    "misses; `normal_marked`: share of normal images given any mask; `dice_lesion_at_t`: lesion Dice at binarisation "
    "threshold t. Training images: out-of-fold predictions of the cross-fit segmenters (each trained on the other "
    "half); validation: the final segmenter.")


def main(argv=None) -> int:
    args = _parse(argv)
    dcn = _script()
    from medattn.datasets.audit import audit_records
    from medattn.evaluation.tables import write_table
    from medattn.training.records import run_metadata
    from medattn.training.strategy import resolve_mixed_precision, set_mixed_precision

    cfg = dcn.PROFILES[args.profile]
    root = Path(args.runs_dir) / f"dcnnimaf-{args.profile}"
    runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    missing = [root / r / n for r in runs for n in ("identity.json", "seg_final/best.npz") if not (root / r / n).is_file()]
    if missing:
        print(f"error: {missing[0]} not found (the run's checkpoints must still be there)", file=sys.stderr)
        return 2
    precision = set_mixed_precision(resolve_mixed_precision(cfg.mixed_precision))
    audit = {}
    ctx = types.SimpleNamespace(cfg=cfg, data=types.SimpleNamespace(path=Path(args.data_dir)), log=print,
                                handful=lambda recs, n: recs, profile_inputs=lambda **_: None,
                                audit=lambda recs, p, verify=(): audit.update(audit_records(recs, Path(p), verify=verify))
                                or audit)
    data = dcn.load_data(ctx)
    labels = np.array([r.label for r in data["recs"]])
    rows, idents = [], {}
    try:
        for r in runs:
            idents[r] = _checked_identity(root / r, cfg, audit["rule"], args.profile)
            t0 = time.time()
            rows += _run_rows(dcn, cfg, data, labels, root / r, idents[r])
            print(f"{r}: {time.time() - t0:.0f} s", flush=True)
    except _Refused as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    meta = run_metadata(profile=args.profile, seeds=sorted({i["seed"] for i in idents.values()}),
                        data_dir=args.data_dir, argv=None if argv is None else [__file__, *argv],
                        extra={"precision": precision, "audit_rule": audit["rule"], "identities": idents})
    write_table(args.out, "misses", rows, title="Where the BUSI segmenter loses its Dice (images outside the test split)",
                meta=meta, description=DESCRIPTION)
    print(f"wrote {Path(args.out) / 'misses.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
