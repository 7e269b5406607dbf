"""Leakage audit: exact and near duplicates, groups that span splits, label conflicts, corrupt files.

    python -m medattn.datasets.audit {busi,mias,brain_mri,chest_xray,pneumoniamnist} --data-dir PATH \
        [--json FILE] [--markdown FILE] [--threshold 6]

* Exact duplicates: identical decoded greyscale pixels (SHA-256 of shape + pixels), so a PNG and a re-encoded
  PNG of the same image match while file bytes would not.
* Near duplicates, two tiers: a 64-bit DCT perceptual hash (pHash: 32x32 greyscale resize, 2-D DCT, the 8x8
  lowest frequencies without the DC term... compared with their median) within Hamming distance ``threshold``
  (default 6 of 64 bits) is a near duplicate outright; a pair within a looser distance is one when a second check
  agrees: the normalised cross-correlation of 32x32 box-filtered copies (zero mean, unit norm) reaches the tier's
  bar (``verify``; :data:`VERIFY_TIERS`: <= 12 bits with NCC >= 0.85, <= 16 bits with NCC >= 0.90). The second
  tier catches the copies that carry extra caliper marks, text or a few pixels of crop (BUSI has such pairs at
  7-16 bits that the hash alone missed). It is on for BUSI only (``DATASET_VERIFY``): on chest X-rays and brain MRI
  distinct patients' 32x32 copies correlate above 0.9 (their anatomy is alike), and the tier chained 446 of 701
  chest images and 2,637 brain images into single groups. Pairs are joined by union-find into groups. Resized,
  re-encoded and slightly shifted copies land within the first tier; distinct images of one modality rarely pass
  either (the tests plant both). How the tiers were chosen, with a by-eye check of every pair the second tier
  adds on BUSI: ``results/audits/near_duplicates.md``.
* ``cross_split_groups``: groups with members in more than one split; ``label_conflicts``: groups (exact or near)
  with more than one label; ``corrupt``: files that do not decode; ``mask_mismatch``: masks of another size.

Groups are lists of paths relative to the data dir. The splitter (:mod:`medattn.datasets.splits`) takes the
near-duplicate groups (which include the exact ones) so no group spans two splits.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np

from ..utils import data_root_writer
from .core import CONTENT_PROBLEMS, DatasetError, Record, content_problems, read_image
from .splits import group_pairs

__all__ = ["phash", "exact_hash", "small_copy", "hamming_pairs", "group_pairs", "audit_images", "audit_records",
           "audit_rule", "pairs_sheet", "main", "DEFAULT_THRESHOLD", "DEFAULT_VERIFY", "VERIFY_TIERS", "DATASET_VERIFY"]

DEFAULT_THRESHOLD = 6
# (looser Hamming distance, NCC bar of the 32x32 copies): a pair beyond ``threshold`` is a near duplicate when it
# is within one tier's distance and reaches its bar. Chosen on BUSI by eye (results/audits/near_duplicates.md).
VERIFY_TIERS: tuple[tuple[int, float], ...] = ((12, 0.85), (16, 0.90))
DEFAULT_VERIFY: tuple = ()  # the hash tier alone unless a dataset's tiers are given
SMALL = 32
# 28x28 MedMNIST images carry too little detail for 6 bits: distinct low-resolution chest X-rays chain into one
# giant group there, so its default is stricter.
DATASET_THRESHOLDS = {"pneumoniamnist": 2}
# the second tier where it was checked by eye; on chest X-ray and brain MRI it merges distinct patients
DATASET_VERIFY: dict[str, tuple] = {"busi": VERIFY_TIERS}


def audit_rule(threshold: int = DEFAULT_THRESHOLD, verify=DEFAULT_VERIFY) -> str:
    """The near-duplicate rule as one line (runs record it in their identity: another rule, another split)."""
    tiers = [f"phash<={threshold}"] + [f"phash<={d}&ncc{SMALL}>={t:g}" for d, t in (verify or ())]
    return " | ".join(tiers)


def exact_hash(pixels: np.ndarray) -> str:
    a = np.ascontiguousarray(pixels)
    return hashlib.sha256(str(a.shape).encode() + a.tobytes()).hexdigest()


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2 / n)
    m[0] /= np.sqrt(2)
    return m


_D32 = _dct_matrix(32)


def phash(pixels: np.ndarray) -> np.uint64:
    """64-bit DCT perceptual hash of a greyscale image (any size)."""
    from PIL import Image

    im = Image.fromarray(np.asarray(pixels, dtype=np.uint8)).resize((32, 32), Image.Resampling.BILINEAR)
    a = np.asarray(im, dtype=np.float64)
    d = _D32 @ a @ _D32.T
    low = d[:8, :8].ravel()[1:]  # 63 coefficients without DC
    bits = np.concatenate([[0], (low > np.median(low)).astype(np.uint8)])
    return np.uint64(int("".join(map(str, bits)), 2))


def small_copy(pixels: np.ndarray, size: int = SMALL) -> np.ndarray:
    """The image box-filtered to ``size`` x ``size``, zero mean, unit norm (float32, flattened): the dot product
    of two copies is their normalised cross-correlation."""
    from PIL import Image

    im = Image.fromarray(np.asarray(pixels, dtype=np.uint8)).resize((size, size), Image.Resampling.BOX)
    a = np.asarray(im, dtype=np.float64).ravel()
    a -= a.mean()
    return (a / (np.linalg.norm(a) + 1e-9)).astype(np.float32)


def _popcount64(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.uint64)
    out = np.zeros(x.shape, dtype=np.uint8)
    for shift in range(0, 64, 8):
        out += _POP8[((x >> np.uint64(shift)) & np.uint64(0xFF)).astype(np.uint8)]
    return out


_POP8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def hamming_pairs(hashes: np.ndarray, threshold: int, chunk: int = 1024, lower: int = -1,
                  with_distance: bool = False) -> list:
    """Index pairs ``i < j`` whose hashes differ in more than ``lower`` and at most ``threshold`` bits
    (``(i, j, bits)`` with ``with_distance``)."""
    h = np.asarray(hashes, dtype=np.uint64)
    pairs = []
    for s in range(0, len(h), chunk):
        block = h[s:s + chunk]
        dist = _popcount64(block[:, None] ^ h[None, :])
        ii, jj = np.nonzero((dist <= threshold) & (dist > lower))
        d = dist[ii, jj]
        ii = ii + s
        keep = ii < jj
        cols = (ii[keep].tolist(), jj[keep].tolist()) + ((d[keep].tolist(),) if with_distance else ())
        pairs += list(zip(*cols))
    return pairs


def verified_pairs(hashes: np.ndarray, copies: np.ndarray, threshold: int, verify) -> list[tuple[int, int, int, float]]:
    """The second tier: ``(i, j, bits, ncc)`` for pairs beyond ``threshold`` bits that pass a ``verify`` tier."""
    if not verify:
        return []
    cand = hamming_pairs(hashes, max(d for d, _ in verify), lower=threshold, with_distance=True)
    if not cand:
        return []
    c = np.asarray(cand)
    ncc = np.einsum("ij,ij->i", copies[c[:, 0]], copies[c[:, 1]])
    ok = np.zeros(len(c), dtype=bool)
    for d, bar in verify:
        ok |= (c[:, 2] <= d) & (ncc >= bar)
    return [(int(i), int(j), int(b), round(float(r), 4)) for (i, j, b), r, k in zip(c, ncc, ok) if k]


def audit_images(images: Sequence[np.ndarray], names: Sequence[str], labels: Sequence, splits: Sequence,
                 threshold: int = DEFAULT_THRESHOLD, corrupt=(), mask_mismatch=(), progress: bool = False,
                 verify=DEFAULT_VERIFY) -> dict:
    """The audit report of decoded greyscale images with their names, labels and splits."""
    n = len(images)
    ex = [exact_hash(im) for im in images]
    ph = np.empty(n, dtype=np.uint64)
    copies = np.zeros((n if verify else 0, SMALL * SMALL), dtype=np.float32)
    for i, im in enumerate(_progress(images, progress, "hashing")):
        ph[i] = phash(im)
        if verify:
            copies[i] = small_copy(im)
    by_exact = defaultdict(list)
    for i, h in enumerate(ex):
        by_exact[h].append(i)
    exact_groups = sorted((g for g in by_exact.values() if len(g) > 1), key=lambda g: g[0])
    exact_pairs = [(g[0], j) for g in exact_groups for j in g[1:]]
    hash_pairs = hamming_pairs(ph, threshold)
    second = verified_pairs(ph, copies, threshold, verify)
    near_groups = group_pairs(n, hash_pairs + [(i, j) for i, j, _, _ in second] + exact_pairs)

    def names_of(g):
        return [names[i] for i in g]

    cross = [g for g in near_groups if len({splits[i] for i in g}) > 1]
    conflicts = [g for g in near_groups if len({labels[i] for i in g}) > 1]
    counts: dict = defaultdict(lambda: defaultdict(int))
    for lab, sp in zip(labels, splits):
        counts[str(sp)][str(lab)] += 1
    in_groups = sum(len(g) for g in near_groups)
    return {
        "n_images": n,
        "threshold_bits": threshold,
        "verify": [list(t) for t in (verify or ())],
        "rule": audit_rule(threshold, verify),
        "verified_pairs": [{"a": names[i], "b": names[j], "bits": b, "ncc": r} for i, j, b, r in second],
        "exact_groups": [names_of(g) for g in exact_groups],
        "near_groups": [names_of(g) for g in near_groups],
        "cross_split_groups": [names_of(g) for g in cross],
        "label_conflicts": [[f"{names[i]} [{labels[i]}]" for i in g] for g in conflicts],
        "corrupt": list(corrupt),
        "mask_mismatch": list(mask_mismatch),
        "counts": {k: dict(v) for k, v in counts.items()},
        "summary": {
            "exact_groups": len(exact_groups),
            "images_in_exact_groups": sum(len(g) for g in exact_groups),
            "hash_pairs": len(hash_pairs),
            "verified_pairs": len(second),
            "near_groups": len(near_groups),
            "largest_near_group": max(map(len, near_groups), default=0),
            "images_in_near_groups": in_groups,
            "images_after_dedup": n - in_groups + len(near_groups),
            "cross_split_groups": len(cross),
            "label_conflicts": len(conflicts),
            "corrupt": len(corrupt),
            "mask_mismatch": len(mask_mismatch),
        },
        "_near_group_indices": near_groups,
    }


def _progress(it, on, desc):
    if not on:
        return it
    try:
        from tqdm import tqdm

        return tqdm(it, desc=desc, file=sys.stderr)
    except ImportError:
        return it


def audit_records(records: Sequence[Record], root, threshold: int = DEFAULT_THRESHOLD, progress=False,
                  verify=DEFAULT_VERIFY) -> dict:
    """Decode every image and mask (corrupt files are reported, not raised: the audit reads on to the end) and
    audit them. ``_records`` keeps the records whose image and masks all decode."""
    root = Path(root)
    imgs, names, labels, splits, corrupt, mism = [], [], [], [], [], []
    content: dict[str, list[str]] = {k: [] for k in CONTENT_PROBLEMS}
    unusable: set[str] = set()
    for r in _progress(records, progress, "decoding"):
        rel = _rel(r.path, root)
        try:
            im = read_image(r.path)
        except DatasetError as e:
            corrupt.append(f"{rel}: {e}")
            continue
        mask_ok, masks = True, []
        for m in r.mask_paths:  # decoded in full: a truncated mask has a valid header
            try:
                masks.append(read_image(m))
                mshape = masks[-1].shape
                if mshape[:2] != im.shape[:2]:
                    mism.append(f"{_rel(m, root)}: {(mshape[1], mshape[0])} vs image {(im.shape[1], im.shape[0])}")
                    mask_ok = False
            except DatasetError as e:
                corrupt.append(f"{_rel(m, root)}: {e}")
                mask_ok = False
        if not mask_ok:  # an image whose mask cannot be read or has another size cannot be used
            continue
        for kind, message in content_problems(r.path, im, masks, r.label_name if r.mask_paths else None, name=rel):
            content[kind].append(message)  # named in the report; audited for duplicates, left out of the runs
            unusable.add(rel)
        imgs.append(im)
        names.append(rel)
        labels.append(r.label_name)
        splits.append(r.split or "all")
    rep = audit_images(imgs, names, labels, splits, threshold, corrupt, mism, progress, verify)
    rep.update(content)
    rep["summary"].update({k: len(v) for k, v in content.items()})
    # the records a run uses: decodable and usable; the group indices renumbered to them
    position = {n: i for i, n in enumerate(n for n in names if n not in unusable)}
    rep["_records"] = [r for r in records if _rel(r.path, root) in position]
    groups = [[position[names[i]] for i in g if names[i] in position] for g in rep["_near_group_indices"]]
    rep["_near_group_indices"] = [g for g in groups if len(g) > 1]
    return rep


def _rel(path, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)


def _load(dataset: str, data_dir: str):
    """(records, root used for relative names, problems the loader found and left out)."""
    from . import brain_mri, busi, chest_xray, mias

    if dataset == "busi":
        problems: list[str] = []
        recs = busi.busi_records(data_dir, problems=problems)
        return recs, Path(data_dir), problems
    if dataset == "mias":
        return mias.mias_records(data_dir), Path(data_dir), []
    if dataset == "brain_mri":
        return brain_mri.brain_mri_records(data_dir), Path(data_dir), []
    if dataset == "chest_xray":
        return chest_xray.chest4_records(data_dir), Path(data_dir), []
    raise DatasetError(f"unknown dataset {dataset!r}")


DATASETS = ("busi", "mias", "brain_mri", "chest_xray", "pneumoniamnist")


def run_audit(dataset: str, data_dir: str, threshold: int = DEFAULT_THRESHOLD, progress=True,
              verify=DEFAULT_VERIFY) -> dict:
    if dataset not in DATASETS:
        raise DatasetError(f"unknown dataset {dataset!r}; choose from {DATASETS}")
    if dataset == "pneumoniamnist":
        from .medmnist import load_medmnist

        data = load_medmnist(data_dir)
        imgs, names, labels, splits = [], [], [], []
        for s, (x, y) in data.items():
            for i, (im, lab) in enumerate(zip(x, y)):
                imgs.append(im if im.ndim == 2 else im.mean(-1).astype(np.uint8))
                names.append(f"{s}_images[{i}]")
                labels.append(int(lab))
                splits.append(s)
        return audit_images(imgs, names, labels, splits, threshold, progress=progress, verify=verify)
    records, root, problems = _load(dataset, data_dir)
    rep = audit_records(records, root, threshold, progress, verify)
    if problems:  # files the loader could not take: reported beside the decode failures, nothing stops early
        sizes = [p for p in problems if "they must match" in p]  # a mask of another size is a size mismatch
        rep["mask_mismatch"] = sizes + rep["mask_mismatch"]
        rep["corrupt"] = [p for p in problems if p not in sizes] + rep["corrupt"]
        rep["summary"]["corrupt"] = len(rep["corrupt"])
        rep["summary"]["mask_mismatch"] = len(rep["mask_mismatch"])
    return rep


def to_markdown(rep: dict, dataset: str, command: str, max_groups: int = 15) -> str:
    s = rep["summary"]
    lines = [f"# Leakage audit: {dataset}", "", f"Command: `{command}`", "",
             f"Images: {rep['n_images']}; near duplicates: `{rep['rule']}` (pHash Hamming distance in bits of 64; "
             f"ncc{SMALL}: normalised cross-correlation of {SMALL}x{SMALL} copies; the second tier checks pairs "
             "beyond the first's distance); exact = identical decoded pixels.", "", "| finding | count |",
             "|---|---|"]
    for k, v in s.items():
        lines.append(f"| {k.replace('_', ' ')} | {v} |")
    lines += ["", "## Class counts per split", "", "| split | " + " | ".join(sorted({c for v in rep['counts'].values() for c in v})) + " |"]
    classes = sorted({c for v in rep["counts"].values() for c in v})
    lines.append("|---|" + "---|" * len(classes))
    for sp, v in rep["counts"].items():
        lines.append(f"| {sp} | " + " | ".join(str(v.get(c, 0)) for c in classes) + " |")
    verdict = ("the official split is leaky: duplicate groups span its splits, so use the de-duplicated / "
               "group-aware split" if s["cross_split_groups"] else "no duplicate group spans two splits")
    lines += ["", f"Verdict on the release's splits: {verdict}.", ""]
    for key, title in (("label_conflicts", "Same image under different labels"),
                       ("cross_split_groups", "Groups spanning splits"), ("exact_groups", "Exact duplicate groups"),
                       ("near_groups", "Near-duplicate groups (include the exact ones)"), ("corrupt", "Corrupt files"),
                       ("mask_mismatch", "Mask/image size mismatches"), ("too_small", "Images under the minimum size"),
                       ("transparent", "Images with transparent pixels"), ("empty_mask", "Lesion images with empty masks"),
                       ("full_mask", "Masks covering the whole image")):
        items = rep.get(key, [])
        lines += [f"## {title} ({len(items)})", ""]
        for g in items[:max_groups]:
            lines.append("- " + (", ".join(f"`{x}`" for x in g) if isinstance(g, list) else f"`{g}`"))
        if len(items) > max_groups:
            lines.append(f"- ... {len(items) - max_groups} more in the JSON report")
        lines.append("")
    vp = rep.get("verified_pairs") or []
    lines += [f"## Pairs the second tier added ({len(vp)})", ""]
    if vp:
        lines += ["| bits | ncc | image | image |", "|---|---|---|---|"]
        lines += [f"| {p['bits']} | {p['ncc']:.3f} | `{p['a']}` | `{p['b']}` |" for p in vp[:3 * max_groups]]
        if len(vp) > 3 * max_groups:
            lines.append(f"\n... {len(vp) - 3 * max_groups} more in the JSON report")
        lines.append("")
    return "\n".join(lines)


def pairs_sheet(rep: dict, root, path, size: int = 160, limit: int = 200) -> Path:
    """A PNG of the second tier's pairs side by side, each with its bits and NCC, to check them by eye (written
    where the user says: it holds thumbnails of the data, so keep it out of the repository)."""
    from PIL import Image, ImageDraw

    pairs = (rep.get("verified_pairs") or [])[:limit]
    if not pairs:
        raise DatasetError("no second-tier pairs to draw (the dataset's rule has no second tier, or it found none)")
    sheet = Image.new("L", (2 * size + 330, len(pairs) * size), 255)
    draw = ImageDraw.Draw(sheet)
    for k, p in enumerate(pairs):
        for c, name in enumerate((p["a"], p["b"])):
            im = read_image(Path(root) / name)  # greyscale
            sheet.paste(Image.fromarray(im).resize((size, size)), (c * size, k * size))
        draw.text((2 * size + 6, k * size + 8), f"#{k}  {p['bits']} bits  ncc {p['ncc']:.3f}\n{p['a']}\n{p['b']}",
                  fill=0)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return Path(path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", choices=DATASETS)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--threshold", type=int, default=None,
                    help=f"Hamming threshold in bits (default {DEFAULT_THRESHOLD}; {DATASET_THRESHOLDS})")
    ap.add_argument("--no-verify", action="store_true",
                    help=f"hash tier only, also where the dataset has a second tier ({sorted(DATASET_VERIFY)})")
    ap.add_argument("--pairs-sheet", metavar="PNG",
                    help="draw the second tier's pairs side by side to check them by eye (holds thumbnails of the "
                         "data: write it outside the repository)")
    ap.add_argument("--json")
    ap.add_argument("--markdown")
    args = ap.parse_args(argv)
    t0 = time.time()
    try:
        threshold = args.threshold if args.threshold is not None else DATASET_THRESHOLDS.get(args.dataset,
                                                                                               DEFAULT_THRESHOLD)
        verify = () if args.no_verify else DATASET_VERIFY.get(args.dataset, DEFAULT_VERIFY)
        rep = run_audit(args.dataset, args.data_dir, threshold, verify=verify)
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rep = {k: v for k, v in rep.items() if not k.startswith("_")}
    rep["wall_time_s"] = round(time.time() - t0, 1)
    cmd = "python -m medattn.datasets.audit " + " ".join(argv if argv is not None else sys.argv[1:])
    rep["command"] = cmd
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rep, indent=1) + "\n")
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(to_markdown(rep, args.dataset, data_root_writer(args.data_dir)(cmd)))
    if args.pairs_sheet:
        try:
            print(f"pairs sheet: {pairs_sheet(rep, args.data_dir, args.pairs_sheet)}", file=sys.stderr)
        except DatasetError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    print(json.dumps(rep["summary"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
