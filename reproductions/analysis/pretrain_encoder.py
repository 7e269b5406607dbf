"""Pretrain a registry encoder on a local labelled image folder, for ``--weights FILE`` where ImageNet is out of reach.

ImageNet weights need the network or Keras' cache. Where neither is there, an encoder can still start from features
learned on another local dataset: this trains backbone ``--backbone`` (with its registry options ``--width`` and
``--batch-norm``) under a pooling + softmax head to classify the images of a folder with one sub-folder per class
(for example ``brain_tumor_mri/Training``), keeps the epoch with the lowest validation loss (a stratified share of
the folder, ``--val-fraction``), and saves the backbone's weights as FILE (``.weights.h5``) with a card ``FILE.json``:
backbone, options, preprocessing (``unit``, [0, 1], what it trained with), image size, classes, the folder's file
manifest hash, epochs, the best epoch and its validation accuracy, command, commit and machine. Every script's
``--weights FILE`` then loads it into the same encoder: the registry takes the preprocessing from the card and
refuses the file for another backbone or width (:func:`medattn.backbones.weights_card`), and the runs' identity
holds the file's SHA-256, not its path.

    python reproductions/analysis/pretrain_encoder.py --data-dir $MEDATTN_DATA_DIR/brain_tumor_mri/Training \\
        --backbone vgg16 --width 0.25 --batch-norm --image-size 128 --epochs 20 \\
        --out runs/pretrain/vgg16bn_w025_brain128.weights.h5

Never pretrain on the dataset (or any image of it) the encoder will be evaluated on: features of the test images
would leak into the model. A BUSI encoder pretrained on brain MRI, for instance, has seen no ultrasound image.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]


def _parse(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", required=True, help="a folder with one sub-folder of images per class")
    ap.add_argument("--backbone", required=True, help="a registry backbone name, e.g. vgg16")
    ap.add_argument("--width", type=float, default=None, help="the backbone's width option (VGG, MobileNet)")
    ap.add_argument("--batch-norm", action="store_true", help="VGG with BatchNorm (VGG-BN)")
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--val-fraction", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mixed-precision", default="auto", choices=("auto", "off", "bf16", "fp16"))
    ap.add_argument("--limit", type=int, default=None, help="use only this many images per class (smoke tests)")
    ap.add_argument("--out", required=True, help="the weights file to write (must end in .weights.h5)")
    return ap.parse_args(argv)


class _Refused(Exception):
    """A bad argument, reported as one line with exit code 2."""


def _checked_inputs(args) -> tuple[Path, list[str], dict]:
    """The folder, its classes and the backbone options, or _Refused naming what is wrong."""
    out = Path(args.out)
    if not out.name.endswith(".weights.h5"):
        raise _Refused(f"--out {out}: Keras writes weights files ending in .weights.h5")
    if not 0 < args.val_fraction < 0.5 or args.epochs < 1:
        raise _Refused("--val-fraction must lie in (0, 0.5) and --epochs be at least 1")
    from medattn.backbones import backbone_options, check_backbone

    root = Path(args.data_dir)
    if not root.is_dir():
        raise _Refused(f"--data-dir {root}: no such folder")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise _Refused(f"--data-dir {root}: needs at least two class sub-folders, found {classes}")
    options = {k: v for k, v in (("width", args.width), ("batch_norm", args.batch_norm or None)) if v is not None}
    try:
        check_backbone(args.backbone, None, **options)
    except ValueError as e:
        raise _Refused(f"{e} (options of {args.backbone}: {', '.join(backbone_options(args.backbone)) or 'none'})") from e
    return root, classes, options


def _classifier(args, n_classes: int, n_train: int, options: dict):
    """The backbone under a pooling + dropout + softmax head, compiled with Adam on a cosine schedule."""
    import keras

    from medattn.backbones import get_backbone

    bb = get_backbone(args.backbone, (args.image_size, args.image_size, 3), weights=None, **options)
    h = keras.layers.GlobalAveragePooling2D(name="pool")(bb.model.output)
    h = keras.layers.Dropout(0.3, name="drop")(h)
    y = keras.layers.Dense(n_classes, activation="softmax", dtype="float32", name="classes")(h)
    model = keras.Model(bb.model.input, y)
    steps = int(np.ceil(n_train / args.batch_size)) * args.epochs
    model.compile(keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(args.lr, steps, alpha=0.01)),
                  "sparse_categorical_crossentropy", metrics=["accuracy"])
    return bb, model


def _train(args, bb, model, x, labels, split) -> tuple[dict, list[dict]]:
    """Train epoch by epoch; the backbone ends with the weights of the epoch with the lowest validation loss."""
    from medattn.datasets.pipeline import array_dataset

    aug = {"rotation": 0.05, "zoom": 0.1, "translate": 0.05, "flip": "horizontal", "brightness": 0.1}
    tr, va = split["train"], split["val"]
    val_ds = array_dataset(x[va], labels[va], 64, preprocess=bb.preprocess)
    best, history = None, []
    for epoch in range(args.epochs):  # one pass per epoch, reshuffled and re-augmented by (seed, epoch)
        ds = array_dataset(x[tr], labels[tr], args.batch_size, shuffle=True, seed=args.seed, epoch=epoch,
                           augment=aug, preprocess=bb.preprocess)
        t = time.time()
        fit = model.fit(ds, epochs=1, verbose=0, shuffle=False).history
        val_loss, val_acc = model.evaluate(val_ds, verbose=0)
        history.append({"epoch": epoch + 1, "loss": fit["loss"][0], "accuracy": fit["accuracy"][0],
                        "val_loss": float(val_loss), "val_accuracy": float(val_acc), "seconds": time.time() - t})
        if best is None or val_loss < best["val_loss"]:
            best = history[-1]
            weights = [w.copy() for w in bb.model.get_weights()]
        print(f"[pretrain] epoch {epoch + 1}/{args.epochs}  loss {fit['loss'][0]:.4f}  accuracy "
              f"{fit['accuracy'][0]:.4f}  val_loss {val_loss:.4f}  val_accuracy {val_acc:.4f}  best epoch "
              f"{best['epoch']}  {history[-1]['seconds']:.0f} s", flush=True)
    bb.model.set_weights(weights)
    return best, history


def _decoded(args, root: Path, classes: list[str]):
    """The folder's records (``--limit`` per class), their labels and the images decoded once at the input size."""
    from medattn.datasets.core import scan_class_folders
    from medattn.datasets.pipeline import image_dataset

    recs = scan_class_folders(root, classes, dataset=root.name)
    if args.limit:
        recs = [r for c in range(len(classes)) for r in [r for r in recs if r.label == c][:args.limit]]
    x = np.concatenate([b[0].numpy() for b in image_dataset(recs, args.image_size, 64, cache=False)])
    return recs, np.array([r.label for r in recs]), x


def main(argv=None) -> int:
    args = _parse(argv)
    out = Path(args.out)
    from medattn.datasets.core import DatasetError

    try:
        root, classes, options = _checked_inputs(args)
        t0 = time.time()
        recs, labels, x = _decoded(args, root, classes)
    except (_Refused, DatasetError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from medattn.datasets import holdout_split
    from medattn.training.records import run_metadata
    from medattn.training.seed import set_seed
    from medattn.training.strategy import resolve_mixed_precision, set_mixed_precision

    split = holdout_split(labels, np.arange(len(recs)), (1 - args.val_fraction, args.val_fraction, 0.0),
                          seed=args.seed)
    set_seed(args.seed)
    precision = set_mixed_precision(resolve_mixed_precision(args.mixed_precision))
    print(f"[pretrain] {len(recs)} images of {len(classes)} classes ({', '.join(classes)}) decoded at "
          f"{args.image_size} px in {time.time() - t0:.0f} s; train {len(split['train'])}, val {len(split['val'])}; "
          f"{precision}", flush=True)
    bb, model = _classifier(args, len(classes), len(split["train"]), options)
    best, history = _train(args, bb, model, x, labels, split)
    out.parent.mkdir(parents=True, exist_ok=True)
    bb.model.save_weights(out)
    meta = run_metadata(data_dir=str(root), seeds=[args.seed])
    card = {"backbone": args.backbone, "options": options, "preprocessing": "unit", "image_size": args.image_size,
            "classes": classes, "n_train": int(len(split["train"])), "n_val": int(len(split["val"])),
            "epochs": args.epochs, "best_epoch": best["epoch"], "best_val_loss": best["val_loss"],
            "best_val_accuracy": best["val_accuracy"], "mixed_precision": precision, "history": history,
            "wall_time_s": round(time.time() - t0, 1), **{k: meta.get(k) for k in (
                "command", "git_commit", "data_dir", "data_manifest_sha256", "machine", "packages")}}
    Path(f"{out}.json").write_text(json.dumps(card, indent=2, default=str) + "\n")
    print(f"[pretrain] wrote {out} and {out}.json (best epoch {best['epoch']}, val_accuracy "
          f"{best['val_accuracy']:.4f}, {card['wall_time_s']:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
