import json

import numpy as np
import pytest
from PIL import Image

from medattn import datasets as D
from medattn.datasets import audit
from tests.conftest import dataset_dir
from tests.datasets import synth


def _variants(img):
    """Exact re-encode, resized, JPEG re-encoded, shifted by 2 pixels."""
    pil = Image.fromarray(img)
    resized = np.asarray(pil.resize((img.shape[1] * 2, img.shape[0] * 2), Image.Resampling.BICUBIC))
    import io

    buf = io.BytesIO()
    pil.save(buf, format="JPEG", quality=80)
    jpeg = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("L"))
    shifted = np.pad(img, ((2, 0), (2, 0)), mode="edge")[:-2, :-2]
    return {"exact": img.copy(), "resized": resized, "jpeg": jpeg, "shifted": shifted}


def test_planted_duplicates_found_and_distinct_kept_apart():
    originals = [synth.natural_image(1000 + i, (96, 96)) for i in range(24)]
    images, names = list(originals), [f"orig{i}" for i in range(24)]
    for k in range(4):  # plant 4 variants of each of the first 4 images
        for kind, v in _variants(originals[k]).items():
            images.append(v)
            names.append(f"{kind}_of_{k}")
    labels = [0] * len(images)
    splits = ["train"] * 24 + ["test"] * (len(images) - 24)
    rep = audit.audit_images(images, names, labels, splits)
    groups = [set(g) for g in rep["near_groups"]]
    for k in range(4):
        expected = {f"orig{k}"} | {f"{kind}_of_{k}" for kind in ("exact", "resized", "jpeg", "shifted")}
        assert expected in groups, (k, groups)
    assert len(groups) == 4  # no distinct image merged into any group
    assert sorted(map(sorted, rep["exact_groups"])) == [sorted([f"orig{k}", f"exact_of_{k}"]) for k in range(4)]
    assert len(rep["cross_split_groups"]) == 4
    assert rep["summary"]["images_after_dedup"] == 24


def _annotated(img, seed):
    """An ultrasound-style second save: contrast changed, caliper crosses and a dotted line drawn, a few pixels
    cropped (BUSI's copies that the hash alone misses at 7-16 bits)."""
    rng = np.random.default_rng(seed)
    a = img.astype(float) * 0.85 + 20
    h, w = a.shape
    for _ in range(4):
        y, x = rng.integers(8, h - 8), rng.integers(8, w - 8)
        a[y - 4:y + 5, x] = 255
        a[y, x - 4:x + 5] = 255
    a[h // 2, ::3] = 255
    return np.clip(a[4:, 3:], 0, 255).astype(np.uint8)


def test_second_tier_catches_annotated_copies_the_hash_misses():
    originals = [synth.natural_image(1000 + i, (96, 96)) for i in range(60)]
    copies = [_annotated(im, k) for k, im in enumerate(originals[:30])]
    bits = [bin(int(audit.phash(a)) ^ int(audit.phash(b))).count("1") for a, b in zip(originals, copies)]
    beyond = [k for k, b in enumerate(bits) if 6 < b <= 16]
    assert len(beyond) >= 10  # the planted copies mostly lie beyond the hash tier
    images, names = originals + copies, [f"orig{i}" for i in range(60)] + [f"copy{k}" for k in range(30)]
    labels, splits = [0] * 90, ["a"] * 90

    def grouped(rep):
        return {k for k in range(30) if any({f"orig{k}", f"copy{k}"} <= set(g) for g in rep["near_groups"])}

    hash_only = audit.audit_images(images, names, labels, splits, verify=())
    both = audit.audit_images(images, names, labels, splits, verify=audit.VERIFY_TIERS)
    assert not grouped(hash_only) & set(beyond)
    assert set(beyond) <= grouped(both)
    # no two distinct originals end in one group (one pair of them lies within 16 bits: the NCC check rejects it)
    assert all(sum(n.startswith("orig") for n in g) == 1 for g in both["near_groups"])
    assert both["summary"]["verified_pairs"] == len(both["verified_pairs"]) >= len(beyond)
    p = both["verified_pairs"][0]
    assert 6 < p["bits"] <= 16 and p["ncc"] >= 0.85
    assert both["rule"] == audit.audit_rule(6, audit.VERIFY_TIERS) == \
        "phash<=6 | phash<=12&ncc32>=0.85 | phash<=16&ncc32>=0.9"
    assert hash_only["rule"] == audit.audit_rule() == "phash<=6" and hash_only["verified_pairs"] == []
    assert audit.audit_images(images, names, labels, splits)["rule"] == "phash<=6"  # the default: hash tier only


def test_cli_reports_label_conflict_and_keys(tmp_path):
    synth.make_busi(tmp_path)
    base = tmp_path / "Dataset_BUSI_with_GT"
    # the same lesion stored under benign and malignant (as BUSI's benign (433) / malignant (145))
    img = np.asarray(Image.open(base / "benign" / "benign (2).png").convert("L"))
    synth.save(base / "malignant" / "malignant (3).png", img)
    synth.save(base / "malignant" / "malignant (3)_mask.png", np.zeros_like(img))
    js, md = tmp_path / "a.json", tmp_path / "a.md"
    assert audit.main(["busi", "--data-dir", str(tmp_path), "--json", str(js), "--markdown", str(md)]) == 0
    rep = json.loads(js.read_text())
    for key in ("exact_groups", "near_groups", "cross_split_groups", "label_conflicts", "corrupt", "counts"):
        assert key in rep
    assert rep["exact_groups"] == [["Dataset_BUSI_with_GT/benign/benign (2).png",
                                    "Dataset_BUSI_with_GT/malignant/malignant (3).png"]]
    assert len(rep["label_conflicts"]) == 1
    assert "Same image under different labels (1)" in md.read_text()
    assert audit.main(["busi", "--data-dir", str(tmp_path / "nope")]) == 2
    # the by-eye sheet: one row per second-tier pair; none here, which is said, not drawn
    assert audit.main(["busi", "--data-dir", str(tmp_path), "--pairs-sheet", str(tmp_path / "s.png")]) == 2
    pair = {"a": rep["exact_groups"][0][0], "b": rep["exact_groups"][0][1], "bits": 8, "ncc": 0.93}
    png = audit.pairs_sheet({"verified_pairs": [pair, pair]}, tmp_path, tmp_path / "sheet.png", size=40)
    assert Image.open(png).size == (2 * 40 + 330, 2 * 40)


def test_merge_groups_patients_and_duplicates():
    g = D.merge_groups(6, ["p1", "p1", "p2", "p3", "p4", None], duplicate_groups=[[2, 3]])
    assert g[0] == g[1] and g[2] == g[3] and len(set(g.tolist())) == 4


def test_holdout_and_kfold_stratified_group_aware_deterministic():
    rng = np.random.default_rng(0)
    n = 300
    labels = rng.integers(0, 3, n)
    groups = rng.integers(0, 120, n)  # groups of several images
    s1 = D.holdout_split(labels, groups, (0.7, 0.1, 0.2), seed=3)
    s2 = D.holdout_split(labels, groups, (0.7, 0.1, 0.2), seed=3)
    assert all(np.array_equal(s1[k], s2[k]) for k in s1)
    assert sorted(np.concatenate(list(s1.values())).tolist()) == list(range(n))
    for a in s1:
        for b in s1:
            if a < b:
                assert not set(groups[s1[a]]) & set(groups[s1[b]])
    assert 0.12 < len(s1["test"]) / n < 0.28 and 0.05 < len(s1["val"]) / n < 0.16
    for c in range(3):  # stratified: class shares within a few points
        assert abs(np.mean(labels[s1["test"]] == c) - np.mean(labels == c)) < 0.08
    folds = D.kfold_split(labels, groups, k=5, seed=0)
    assert sorted(np.concatenate([f["test"] for f in folds]).tolist()) == list(range(n))
    with pytest.raises(ValueError, match="group 7 is in both"):
        D.check_no_leak({"train": np.array([0]), "test": np.array([1])}, np.array([7, 7]))
    keep = D.dedup_indices(groups)
    assert len(keep) == len(np.unique(groups))


@pytest.mark.data
def test_real_busi_audit_finds_known_cross_label_duplicate():
    root = dataset_dir("busi")
    recs = D.busi_records(root)
    rep = audit.audit_records(recs, root)
    flat = [" ".join(g) for g in rep["exact_groups"]]
    assert any("benign (433).png" in g and "malignant (145).png" in g for g in flat)
    assert rep["summary"]["label_conflicts"] >= 1
    groups = D.merge_groups(len(rep["_records"]), [r.group for r in rep["_records"]], rep["_near_group_indices"])
    split = D.holdout_split([r.label for r in rep["_records"]], groups, seed=0)
    D.check_no_leak(split, groups)
