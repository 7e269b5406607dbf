"""Run a model a reproduction saved on a folder of your own images.

    python -m medattn.predict --model runs/dcnnimaf-cpu/grouped_s0/models/classifier.keras --images DIR --out DIR
    medattn-predict --model PATH.keras --images DIR --out DIR          # the same, as a console script

The model's JSON card (written beside every ``.keras`` file by the reproductions: ``medattn.saving``) says what
it needs: input size, preprocessing, class names, threshold, MC dropout. By the card's ``kind``:

* ``segmenter``: one mask PNG per image at the image's own size (``masks/<name>.png``, 0/255) and an overlay PNG
  (``overlays/<name>.png``), plus ``predictions.csv`` with the predicted lesion area;
* ``classifier``: ``predictions.csv`` with one probability column per class and the predicted class; with MC
  dropout the mean of T passes (``--passes``, default the card's) and the predictive entropy; with the card's
  ``tta`` (``flip``) each pass is the mean over the image and its mirror image; when the card names a
  ``segmenter`` (the BUSI two-stage pipeline) that segmenter runs first and its mask is the classifier's 4th channel,
  and its masks and overlays are written too (empty for an image called the card's ``empty_mask_when`` class,
  when the run chose that gate on validation data);
* ``multitask`` (EMT-Net): the malignancy probability (sigmoid of the logit, positive above the card's threshold)
  and the mask (with the card's ``tta`` ``flip``: both averaged with the mirror image's);
* ``patch_classifier`` (MIAS deep fusion): each image is taken as a region of interest, resized to the card's
  ``roi_size``; the sliding windows of the card's patch size and stride are classified and the ROI label is the
  majority vote of the patch labels (``vote_fraction``: the share of tumour patches), with the mean patch
  probability beside it; a card with ``tta`` (``flip`` or ``dihedral``) averages each window's probability over
  its views first, as the run that saved the model did.

Images: PNG, JPEG, BMP, TIFF, greyscale or RGB, any size (resized to the model's input; masks are resized back).
Files that cannot be read are listed in ``unreadable.txt`` and in the exit message, and the exit code is 3; they
are never skipped silently; other files in the folder (not images, or ``*_mask*`` files) are listed in
``skipped.txt``. Two inputs with one name and two extensions (``x.jpg``, ``x.png``) keep their extensions in the
output names (``masks/x.jpg.png``, ``masks/x.png.png``). ``--out`` must be a new folder (or hold no earlier outputs);
``--overwrite`` replaces them. A model file that cannot be read is named as such (not "file not found"). A progress
bar runs on a terminal. When the card records its training images' ``input_profile`` (greyscale or colour, sizes,
mean intensity: :mod:`medattn.datasets.profile`), images unlike them are listed in ``unlike_training.txt`` with
the reason, and a warning says how many.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

from .utils import import_tensorflow_quietly

__all__ = ["predict_folder", "main"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def _images(folder: Path) -> tuple[list[Path], list[str]]:
    """The images under ``folder`` and the other files found there (named, never dropped without a word)."""
    if not folder.is_dir():
        raise ValueError(f"--images {folder}: no such folder")
    found = sorted(p for p in folder.rglob("*") if p.is_file())
    files = [p for p in found if p.suffix.lower() in IMAGE_SUFFIXES and "_mask" not in p.stem]
    skipped = [f"{p.relative_to(folder)}: " + ("a mask file (name with _mask)" if p.suffix.lower() in IMAGE_SUFFIXES
                                              else f"not an image ({'/'.join(IMAGE_SUFFIXES)})")
               for p in found if p not in set(files)]
    if not files:
        raise ValueError(f"--images {folder}: no {'/'.join(IMAGE_SUFFIXES)} files in it")
    return files, skipped


OUTPUTS = ("masks", "overlays", "predictions.csv", "unreadable.txt", "skipped.txt", "unlike_training.txt")


def _check_out(out: Path, overwrite: bool) -> None:
    """``--out`` must be a folder that holds no earlier outputs, unless ``overwrite`` (which removes them)."""
    import shutil

    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: is a file; give a folder")
    earlier = [out / n for n in OUTPUTS if (out / n).exists()]
    if earlier and not overwrite:
        raise ValueError(f"--out {out}: holds earlier outputs ({', '.join(p.name for p in earlier)}); give a new "
                         f"folder or --overwrite")
    for p in earlier:
        shutil.rmtree(p) if p.is_dir() else p.unlink()


def _output_names(files: list[Path], images: Path) -> dict[Path, Path]:
    """Each input's output name (``.png``): its relative path with ``.png``, or with its own extension kept
    (``x.jpg.png``) when another input has the same name but another extension."""
    from collections import Counter

    rels = [p.relative_to(images) for p in files]
    stems = Counter(r.with_suffix("") for r in rels)
    return {r: (r.with_name(r.name + ".png") if stems[r.with_suffix("")] > 1 else r.with_suffix(".png"))
            for r in rels}


def _load(path: Path):
    """A saved model, or ValueError saying the file cannot be read as one (truncated, not a .keras file)."""
    from .saving import load_model

    try:
        return load_model(path, compile=False)
    except ValueError:
        raise
    except Exception as e:  # zipfile/h5py/OS errors of a damaged file
        raise ValueError(f"--model {path}: cannot be read as a Keras model (truncated or not a .keras file: "
                         f"{type(e).__name__}: {e})") from None


def _prepare(img: np.ndarray, size: int, preprocessing: str) -> np.ndarray:
    """``(H, W, 3)`` uint8 -> the model's input ``(size, size, 3)`` float32."""
    import tensorflow as tf

    from .backbones import preprocess_fn

    x = tf.image.resize(img.astype("float32")[None], (size, size), method="area")
    if preprocessing != "inside":
        x = preprocess_fn(preprocessing)(x)
    return np.asarray(x, dtype="float32")[0]


def _resize_mask(prob: np.ndarray, shape) -> np.ndarray:
    import tensorflow as tf

    return np.asarray(tf.image.resize(prob[None, ..., None].astype("float32"), shape, method="bilinear"))[0, ..., 0]


def _save_mask_and_overlay(out: Path, name: Path, img: np.ndarray, mask: np.ndarray) -> None:
    from PIL import Image

    for sub in ("masks", "overlays"):
        (out / sub / name.parent).mkdir(parents=True, exist_ok=True)
    Image.fromarray((mask * 255).astype(np.uint8)).save(out / "masks" / name)
    over = img.astype(np.float32).copy()
    over[mask > 0] = 0.55 * over[mask > 0] + 0.45 * np.array([255.0, 40.0, 40.0])
    Image.fromarray(np.clip(over, 0, 255).astype(np.uint8)).save(out / "overlays" / name)


def _vote(model, img, card, classes) -> dict:
    """MIAS rule: grey ROI resized to ``roi_size``, windows, samplewise centring, majority vote of patch labels."""
    import tensorflow as tf

    from .datasets.mias import sliding_windows
    from .evaluation.tta import tta_predict

    roi_size, size = int(card["roi_size"]), int(card["input_size"])
    grey = img.astype("float32").mean(-1, keepdims=True)
    roi = np.asarray(tf.image.resize(grey[None], (roi_size, roi_size), method="area"))
    win, _ = sliding_windows(roi, size, int(card["stride"]))
    x = np.repeat(win, 3, axis=-1)
    x = x - x.mean(axis=(1, 2, 3), keepdims=True)
    p = tta_predict(lambda v: np.asarray(model.predict(v, verbose=0), dtype=np.float64)[:, 1], x, card.get("tta"))
    thr = float(card.get("threshold") or 0.5)
    frac = float(np.mean(p > thr))
    return {"vote_fraction": frac, f"mean_p_{classes[1]}": float(p.mean()), "windows": int(len(p)),
            "predicted": classes[int(frac > 0.5)]}


def _card_of(path: Path) -> dict:
    from .saving import read_model_card

    try:
        return read_model_card(path)
    except FileNotFoundError as e:
        raise ValueError(str(e)) from None


def _loaded(model_path: Path) -> dict:
    """The model, its card and, for a two-stage classifier, its segmenter and card; ValueError for a kind this
    command cannot run or a card it cannot rebuild the rule from."""
    card = _card_of(model_path)
    kind = card["kind"]
    if kind not in ("segmenter", "classifier", "multitask", "patch_classifier"):
        raise ValueError(f"{model_path.name} is a {kind!r} model; medattn.predict runs segmenters, classifiers, "
                         "multitask and patch classifiers")
    if kind == "patch_classifier" and not {"roi_size", "stride"} <= set(card):
        raise ValueError(f"{model_path.name}: its card lacks roi_size/stride (saved by an older medattn); the ROI "
                         "rule cannot be rebuilt")
    m = {"kind": kind, "card": card, "model": _load(model_path), "seg_model": None, "seg_card": None,
         "classes": list(card["class_names"])}
    if kind == "classifier" and card.get("segmenter"):
        m["seg_card"] = _card_of(model_path.parent / card["segmenter"])
        m["seg_model"] = _load(model_path.parent / card["segmenter"])
    elif kind == "segmenter":
        m["seg_card"], m["seg_model"] = card, m["model"]
    return m


def _segment(img, segm, sc: dict):
    """The segmenter's cleaned probability mask at its input size and the binary mask at the image's size."""
    x = _prepare(img, int(sc["input_size"]), sc["preprocessing"])
    m = np.asarray(segm(x[None], training=False))[0, ..., 0]
    if sc.get("tta_flip"):  # the mean with the prediction of the mirrored image, mirrored back
        m = 0.5 * (m + np.asarray(segm(x[None, :, ::-1], training=False))[0, :, ::-1, 0])
    thr = float(sc.get("threshold") or 0.5)
    post = sc.get("postprocess")
    if post:  # the cleaning chosen on validation data (largest component, minimum lesion area)
        from .evaluation.segmentation import postprocess_masks

        m = postprocess_masks(m[None], float(post["min_area"]), bool(post["largest_component"]), thr)[0]
    return m, _resize_mask(m, img.shape[:2]) > thr


def _classify(img, m: dict, mask_small, passes: int, row: dict) -> None:
    """The classifier's probabilities (mean over MC passes, each the mean over the card's TTA views) into ``row``;
    a two-stage classifier gets the image in [0, 1] with the predicted mask stacked on it."""
    from .evaluation.tta import tta_predict

    card, model = m["card"], m["model"]
    size = int(card["input_size"])
    x = _prepare(img, size, card["preprocessing"])
    if m["seg_model"] is not None:
        import tensorflow as tf

        msk = np.asarray(tf.image.resize(mask_small[None, ..., None], (size, size)))[0]
        x = np.concatenate([x, msk.astype("float32")], axis=-1)
    samples = np.stack([tta_predict(lambda v: np.asarray(model(v, training=False), dtype=np.float64),
                                    x[None], card.get("tta"))[0] for _ in range(passes)])
    p = samples.mean(0)
    row.update({f"p_{c}": float(v) for c, v in zip(m["classes"], p)})
    row["predicted"] = m["classes"][int(p.argmax())]
    if card.get("mc_dropout"):
        from .evaluation.uncertainty import entropy

        row["predictive_entropy"] = float(entropy(p))
        row["mc_passes"] = passes


def _multitask(img, m: dict, row: dict):
    """The multitask model's P(positive) and mask, each the mean over the card's TTA views (masks mapped back)."""
    from .evaluation.tta import tta_restore, tta_views

    card, classes = m["card"], m["classes"]
    x = _prepare(img, int(card["input_size"]), card["preprocessing"])
    outs = [m["model"](v, training=False) for v in tta_views(x[None], card.get("tta"))]
    prob = float(np.mean([1 / (1 + np.exp(-float(np.asarray(o["label"]).ravel()[0]))) for o in outs]))
    masks = [tta_restore(np.asarray(o["mask"]), card.get("tta"), i)[0, ..., 0] for i, o in enumerate(outs)]
    row[f"p_{classes[1]}"] = prob
    row["predicted"] = classes[int(prob > float(card.get("threshold") or 0.5))]
    return _resize_mask(np.mean(masks, axis=0), img.shape[:2]) > 0.5


def _predict_image(img, m: dict, passes: int, row: dict):
    """One image's row (filled in place) and its lesion mask at the image's size, or None."""
    kind, mask, mask_small = m["kind"], None, None
    if m["seg_model"] is not None:
        mask_small, mask = _segment(img, m["seg_model"], m["seg_card"])
    if kind == "classifier":
        _classify(img, m, mask_small, passes, row)
        if mask is not None and row["predicted"] == m["card"].get("empty_mask_when"):
            mask = np.zeros_like(mask)  # the image-level gate the run chose on validation data
    if kind == "patch_classifier":
        row.update(_vote(m["model"], img, m["card"], m["classes"]))
    if kind == "multitask":
        mask = _multitask(img, m, row)
    if mask is not None:
        row["lesion_area_fraction"] = float(mask.mean())
    return mask


def _write_outputs(out: Path, rows: list[dict], lists: dict) -> Path:
    """``predictions.csv`` and a text file for each non-empty list (``unreadable``, ``skipped``, ``unlike``)."""
    csv_path = out / "predictions.csv"
    cols = list(dict.fromkeys(k for r in rows for k in r))
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols or ["image"])
        w.writeheader()
        w.writerows(rows)
    for name, lines in lists.items():
        if lines:
            (out / f"{'unlike_training' if name == 'unlike' else name}.txt").write_text("\n".join(lines) + "\n")
    return csv_path


def predict_folder(model_path, images, out, passes: int | None = None, progress: bool | None = None,
                   overwrite: bool = False) -> dict:
    """Run the model at ``model_path`` on every image under ``images``; write the outputs under ``out`` (a new
    folder, or ``overwrite``). Returns ``{"n": processed, "unreadable": [lines], "skipped": [lines], "csv": path}``."""
    from .datasets.core import DatasetError, read_image
    from .datasets.profile import image_facts, unlike_profile

    model_path, images, out = Path(model_path), Path(images), Path(out)
    files, skipped = _images(images)
    _check_out(out, overwrite)
    m = _loaded(model_path)
    passes = (passes or int(m["card"].get("mc_passes", 30))) if m["card"].get("mc_dropout") else 1
    names = _output_names(files, images)
    out.mkdir(parents=True, exist_ok=True)
    unreadable, rows, unlike = [], [], []
    profile = m["card"].get("input_profile")  # what the training images looked like (medattn.datasets.profile)
    if progress is None:
        progress = sys.stderr.isatty()
    if progress:
        from tqdm.auto import tqdm

        files = tqdm(files, desc="predicting", unit="image")
    for path in files:
        rel = path.relative_to(images)
        try:
            img = read_image(path, mode="RGB")
        except DatasetError as e:
            unreadable.append(f"{rel}: {e}")
            continue
        if profile and (problems := unlike_profile(image_facts(img), profile)):
            unlike.append(f"{rel}: " + "; ".join(problems))
        row = {"image": str(rel), "height": img.shape[0], "width": img.shape[1]}
        mask = _predict_image(img, m, passes, row)
        if mask is not None:
            _save_mask_and_overlay(out, names[rel], img, mask)
        rows.append(row)
    csv_path = _write_outputs(out, rows, {"unreadable": unreadable, "skipped": skipped, "unlike": unlike})
    return {"n": len(rows), "unreadable": unreadable, "skipped": skipped, "unlike": unlike, "csv": csv_path}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="medattn-predict", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--model", required=True, help="a .keras file saved by a reproduction (its .json card beside)")
    ap.add_argument("--images", required=True, help="folder of images (searched recursively)")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--passes", type=int, default=None, help="MC-dropout passes (default: the card's)")
    ap.add_argument("--overwrite", action="store_true", help="replace the outputs of an earlier run in --out")
    a = ap.parse_args(argv)
    if not Path(a.model).is_file():
        print(f"medattn-predict: --model {a.model}: no such file", file=sys.stderr)
        return 2
    import_tensorflow_quietly()
    try:
        res = predict_folder(a.model, a.images, a.out, a.passes, overwrite=a.overwrite)
    except ValueError as e:
        print(f"medattn-predict: {e}", file=sys.stderr)
        return 2
    print(f"medattn-predict: {res['n']} image(s) -> {res['csv']}")
    if res["unlike"]:
        print(f"medattn-predict: warning: {len(res['unlike'])} of {res['n']} image(s) do not look like the images "
              f"this model trained on ({res['unlike'][0].split(': ', 1)[1]}{'; ...' if len(res['unlike']) > 1 else ''}"
              f"); its outputs for them may mean nothing. Listed in {Path(a.out) / 'unlike_training.txt'}",
              file=sys.stderr)
    if res["skipped"]:
        print(f"medattn-predict: {len(res['skipped'])} other file(s) left out (listed in "
              f"{Path(a.out) / 'skipped.txt'})", file=sys.stderr)
    if res["unreadable"]:
        print(f"medattn-predict: {len(res['unreadable'])} file(s) could not be read (listed in "
              f"{Path(a.out) / 'unreadable.txt'}):\n  " + "\n  ".join(res["unreadable"]), file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
