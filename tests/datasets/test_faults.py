"""Planted faults in temporary copies: each gives a clear error naming the file and what was expected."""

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from medattn import datasets as D
from medattn.datasets.core import DatasetError
from tests.datasets import synth


@pytest.fixture
def busi(tmp_path):
    synth.make_busi(tmp_path)
    return tmp_path, tmp_path / "Dataset_BUSI_with_GT"


def _expect(fn, *patterns):
    with pytest.raises(DatasetError) as e:
        fn()
    for p in patterns:
        assert re.search(p, str(e.value)), (p, str(e.value))
    return str(e.value)


def test_01_missing_root(tmp_path):
    _expect(lambda: D.busi_records(tmp_path / "nope"), r"BUSI: data folder .*nope does not exist")


def test_02_no_root_given():
    _expect(lambda: D.busi_records(None), "pass --data-dir or set MEDATTN_DATA_DIR")


def test_03_missing_class_folder(busi):
    root, base = busi
    shutil.rmtree(base / "malignant")
    _expect(lambda: D.busi_records(root), r"does not have the expected layout.*'malignant'")


def test_04_empty_class_folder(busi):
    root, base = busi
    for p in (base / "normal").iterdir():
        p.unlink()
    _expect(lambda: D.busi_records(root), r"normal has no images")


def test_05_image_without_mask(busi):
    root, base = busi
    (base / "malignant" / "malignant (2)_mask.png").unlink()
    _expect(lambda: D.busi_records(root), r"malignant \(2\)\.png has no mask", r"malignant \(2\)_mask\.png")


def test_06_mask_without_image(busi):
    root, base = busi
    (base / "benign" / "benign (3).png").unlink()
    _expect(lambda: D.busi_records(root), r"mask\(s\) without an image.*benign \(3\)_mask\.png")


def test_07_mask_size_mismatch(busi):
    root, base = busi
    synth.save(base / "benign" / "benign (2)_mask.png", np.zeros((20, 20), np.uint8))
    _expect(lambda: D.busi_records(root), r"mask .*benign \(2\)_mask\.png is 20x20 but its image .* is 40x48")


def test_08_unreadable_image_garbage_bytes(busi):
    root, base = busi
    (base / "normal" / "normal (1).png").write_bytes(b"this is not a png")
    _expect(lambda: D.busi_records(root), r"normal \(1\)\.png: not a readable image")


def test_09_truncated_png(busi):
    root, base = busi
    p = base / "benign" / "benign (2).png"
    synth.save(p, synth.natural_image(9, (200, 200)))
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    synth.save(base / "benign" / "benign (2)_mask.png", np.zeros((200, 200), np.uint8))
    _expect(lambda: D.busi_records(root, verify=True), r"benign \(2\)\.png: cannot decode image", "truncated")


def test_10_zero_byte_mask(busi):
    root, base = busi
    (base / "benign" / "benign (3)_mask.png").write_bytes(b"")
    _expect(lambda: D.busi_records(root), r"benign \(3\)_mask\.png: not a readable image")


def test_11_unexpected_file_in_busi(busi):
    root, base = busi
    (base / "benign" / "notes.txt").write_text("x")
    _expect(lambda: D.busi_records(root), r"unexpected file .*notes\.txt")



def test_13_mias_missing_split(tmp_path):
    synth.make_mias(tmp_path)
    shutil.rmtree(tmp_path / "MIAS_ROIs" / "test")
    _expect(lambda: D.mias_records(tmp_path), r"MIAS ROIs: .*does not have the expected layout.*'test'")


def test_14_mias_bad_file_name(tmp_path):
    synth.make_mias(tmp_path)
    synth.save(tmp_path / "MIAS_ROIs" / "val" / "tumour_7.png", synth.natural_image(1, (120, 120)))
    _expect(lambda: D.mias_records(tmp_path), r"unexpected file name .*tumour_7\.png", "'Normal \\(N\\)\\.png'")


def test_15_mias_split_missing_a_class(tmp_path):
    synth.make_mias(tmp_path)
    for p in (tmp_path / "MIAS_ROIs" / "val").glob("Tumor*"):
        p.unlink()
    _expect(lambda: D.mias_records(tmp_path), r"val must hold both Normal and Tumor ROIs, found classes \['Normal'\]")


def test_16_mias_roi_too_small_or_inconsistent(tmp_path):
    synth.make_mias(tmp_path)
    synth.save(tmp_path / "MIAS_ROIs" / "test" / "Normal (1).png", synth.natural_image(1, (60, 60)))
    recs = [r for r in D.mias_records(tmp_path) if r.split == "test"]
    _expect(lambda: D.load_rois(recs), r"ROIs differ in size \(most are 120x120\).*Normal \(1\)\.png \(60x60\)")
    _expect(lambda: D.load_rois(recs[:1]), r"Normal \(1\)\.png is 60x60, smaller than the 72x72 patch")


def test_17_brain_missing_testing(tmp_path):
    synth.make_brain(tmp_path)
    shutil.rmtree(tmp_path / "Testing")
    _expect(lambda: D.brain_mri_records(tmp_path), r"Brain Tumor MRI.*expected layout.*'Testing'")


def test_18_brain_unexpected_class_folder(tmp_path):
    synth.make_brain(tmp_path)
    (tmp_path / "Training" / "astrocytoma").mkdir()
    _expect(lambda: D.brain_mri_records(tmp_path), r"unexpected folder\(s\) \['astrocytoma'\]")


def test_19_brain_non_image_file_and_skip_option(tmp_path, capsys):
    synth.make_brain(tmp_path)
    bad = tmp_path / "Training" / "glioma" / "readme.txt"
    bad.write_text("x")
    _expect(lambda: D.brain_mri_records(tmp_path), r"readme\.txt is not an image")
    recs = D.brain_mri_records(tmp_path, skip_bad=True)
    assert len(recs) == 16
    out = capsys.readouterr().out
    assert "skipped 1 bad file(s)" in out and "readme.txt" in out


def test_20_corrupt_jpeg_skipped_with_report(tmp_path, capsys):
    synth.make_brain(tmp_path)
    bad = tmp_path / "Testing" / "pituitary" / "Te-pituitary_0.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    _expect(lambda: D.brain_mri_records(tmp_path, verify=True), r"Te-pituitary_0\.jpg: cannot decode image")
    recs = D.brain_mri_records(tmp_path, skip_bad=True)
    assert len(recs) == 15 and "Te-pituitary_0.jpg" in capsys.readouterr().out


def test_21_kermany_file_without_patient_id(tmp_path):
    synth.make_kermany(tmp_path)
    synth.save(tmp_path / "chest_xray" / "test" / "NORMAL" / "scan_77.jpeg", synth.natural_image(3))
    _expect(lambda: D.kermany_records(tmp_path), r"cannot parse a patient id from .*scan_77\.jpeg")


def test_22_oct_bad_name(tmp_path):
    for split in ("train", "test"):
        synth.make_class_tree(tmp_path / split, ("CNV", "DME", "DRUSEN", "NORMAL"), pattern="{cls}-1{c}{i}-1.jpeg")
    synth.save(tmp_path / "test" / "DME" / "dme_scan.jpeg", synth.natural_image(4))
    _expect(lambda: D.oct_records(tmp_path), r"OCT2017: cannot parse a patient id from .*dme_scan\.jpeg")


def test_23_covid_radiography_missing_images_and_mask(tmp_path):
    classes = ("COVID", "Normal", "Lung_Opacity", "Viral Pneumonia")
    synth.make_class_tree(tmp_path, classes, subdir="images", pattern="{cls}-{i}.png")
    _expect(lambda: D.covid_radiography_records(tmp_path), r"COVID-0\.png has no lung mask \(expected .*masks")
    shutil.rmtree(tmp_path / "Normal" / "images")
    _expect(lambda: D.covid_radiography_records(tmp_path, with_masks=False), r"class folder .*Normal/images is missing")


def test_24_tb_missing_class(tmp_path):
    synth.make_class_tree(tmp_path, ("Normal",), pattern="{cls}-{i}.png")
    _expect(lambda: D.tb_records(tmp_path), r"TB Chest X-ray.*expected layout.*'Tuberculosis'")


def test_25_medmnist_missing_key_and_length_mismatch(tmp_path):
    p = tmp_path / "x.npz"
    np.savez(p, train_images=np.zeros((3, 28, 28), np.uint8), train_labels=np.zeros((2, 1)))
    _expect(lambda: D.load_medmnist(p, splits=("train",)), r"train_images has 3 images but train_labels has 2")
    _expect(lambda: D.load_medmnist(p, splits=("val",)), r"lacks key\(s\) \['val_images', 'val_labels'\]")
    _expect(lambda: D.load_medmnist(tmp_path / "missing.npz"), r"missing\.npz does not exist")


def test_26_wrong_dataset_folder(tmp_path):
    synth.make_mias(tmp_path)
    _expect(lambda: D.busi_records(tmp_path), r"BUSI: .* does not have the expected layout", "found \\['MIAS_ROIs'\\]")


def test_16_bit_png_is_scaled_by_its_range_not_clipped(tmp_path):
    from PIL import Image

    from medattn.datasets import read_image

    a = np.array([[1000, 2000], [3000, 65535]], dtype=np.uint16)
    Image.fromarray(a).save(tmp_path / "deep.png")
    out = read_image(tmp_path / "deep.png")
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255
    assert 0 < out[0, 1] < out[1, 0] < 255  # order kept; PIL's conversion would give 255 everywhere
    rgb = read_image(tmp_path / "deep.png", mode="RGB")
    assert rgb.shape == (2, 2, 3) and (rgb[..., 0] == out).all()


def test_audit_decodes_masks_names_a_truncated_one_and_reads_on(tmp_path):
    from medattn.datasets import busi_records
    from medattn.datasets.audit import audit_records
    from medattn.datasets.phantom import make_phantom_busi

    root = make_phantom_busi(tmp_path / "busi", counts=(4, 3, 3), seed=1)
    base = root / "Dataset_BUSI_with_GT"
    mask = base / "benign" / "benign (2)_mask.png"
    mask.write_bytes(mask.read_bytes()[:200])  # the header survives, the pixels do not
    img = base / "malignant" / "malignant (3).png"
    img.write_bytes(img.read_bytes()[:200])
    recs = busi_records(root)  # header checks only: both pass the loader...
    rep = audit_records(recs, base)
    text = " ".join(rep["corrupt"])
    assert "benign (2)_mask.png" in text and "malignant (3).png" in text  # ...and both are named, in one pass
    kept = {r.name for r in rep["_records"]}
    assert "benign (2).png" not in kept and "malignant (3).png" not in kept and len(kept) == 8


def test_audit_cli_reports_every_bad_file_in_one_pass(tmp_path):
    from medattn.datasets.audit import run_audit
    from medattn.datasets.phantom import make_phantom_busi

    root = make_phantom_busi(tmp_path / "busi", counts=(4, 3, 3), seed=1)
    base = root / "Dataset_BUSI_with_GT"
    (base / "benign" / "benign (1).png").write_bytes(b"not a png")  # unreadable header: the loader alone would stop
    mask = base / "malignant" / "malignant (2)_mask.png"
    mask.write_bytes(mask.read_bytes()[:200])  # truncated pixels
    rep = run_audit("busi", str(root), progress=False)
    text = " ".join(rep["corrupt"])
    assert "benign (1).png" in text and "malignant (2)_mask.png" in text
    assert rep["summary"]["corrupt"] == 2 and rep["n_images"] == 8
    with pytest.raises(DatasetError, match=r"benign \(1\).png"):
        D.busi_records(root)  # without a problems list the loader still stops, naming the file


def _plant_bad_content(base):
    """An all-white mask, a 1x1 image (with its 1x1 mask), an RGBA image with transparent pixels, a lesion image
    with an empty mask, and a mask of another size."""
    synth.save(base / "benign" / "benign (2)_mask.png", np.full((48, 40), 255, np.uint8))  # full mask
    synth.save(base / "malignant" / "malignant (1).png", np.full((1, 1), 90, np.uint8))
    synth.save(base / "malignant" / "malignant (1)_mask.png", np.full((1, 1), 255, np.uint8))
    rgba = np.dstack([synth.natural_image(9, (48, 40))] * 3 + [np.full((48, 40), 255, np.uint8)])
    rgba[:10, :10, 3] = 0
    synth.save(base / "malignant" / "malignant (2).png", rgba)
    synth.save(base / "benign" / "benign (3)_mask.png", np.zeros((48, 40), np.uint8))  # lesion class, empty mask
    synth.save(base / "normal" / "normal (1)_mask.png", np.zeros((20, 20), np.uint8))  # another size


def test_22_the_audit_names_bad_content_and_counts_size_mismatches_as_such(busi):
    from medattn.datasets.audit import run_audit, to_markdown

    root, base = busi
    _plant_bad_content(base)
    rep = run_audit("busi", str(root), progress=False)
    s = rep["summary"]
    assert (s["full_mask"], s["too_small"], s["transparent"], s["empty_mask"]) == (1, 1, 1, 1)
    assert s["mask_mismatch"] == 1 and s["corrupt"] == 0 and "normal (1)_mask.png" in rep["mask_mismatch"][0]
    assert "benign (2).png: its mask covers the whole image" in rep["full_mask"][0]
    assert "malignant (1).png: image is 1x1, under the 16-pixel minimum" in rep["too_small"][0]
    assert "malignant (2).png: has transparent pixels" in rep["transparent"][0]
    assert "benign (3).png: its benign image has an empty mask" in rep["empty_mask"][0]
    kept = {Path(r.path).name for r in rep["_records"]}  # every one of them left out of what a run uses
    assert not kept & {"benign (2).png", "malignant (1).png", "malignant (2).png", "benign (3).png"}
    md = to_markdown(rep, "busi", "cmd")
    assert "| full mask | 1 |" in md and "Images with transparent pixels" in md


def test_23_the_loader_refuses_bad_content_in_one_line_or_skips_and_names_it(busi, capsys):
    root, base = busi
    _plant_bad_content(base)
    synth.save(base / "normal" / "normal (1)_mask.png", np.zeros((48, 40), np.uint8))  # only content problems
    msg = _expect(lambda: D.busi_records(root, verify=True), r"BUSI: .*benign \(2\)\.png: its mask covers the whole")
    assert "\n" not in msg
    recs = D.busi_records(root, verify=True, skip_bad=True)
    out = capsys.readouterr().out
    assert "skipped 4 bad file(s)" in out and "1x1, under the 16-pixel minimum" in out
    assert len(recs) == 7 - 4
