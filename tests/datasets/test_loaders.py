import numpy as np
import pytest

from medattn import datasets as D
from tests.conftest import dataset_dir
from tests.datasets import synth


def test_busi_synthetic_layout_and_mask_union(tmp_path):
    synth.make_busi(tmp_path)
    for root in (tmp_path, tmp_path / "Dataset_BUSI_with_GT"):  # dataset folder or release folder
        recs = D.busi_records(root, verify=True)
        assert [r.label_name for r in recs].count("benign") == 3 and len(recs) == 7
    b1 = next(r for r in recs if r.name == "benign (1).png")
    assert len(b1.mask_paths) == 2
    m = D.load_mask(b1)
    assert m.shape == (48, 40) and m.sum() == 10 * 15 + 5 * 8


def test_mias_synthetic_and_patch_protocol(tmp_path):
    synth.make_mias(tmp_path)
    recs = D.mias_records(tmp_path)
    assert len(recs) == 15 and {r.split for r in recs} == {"train", "val", "test"}
    rois, labels = D.load_rois([r for r in recs if r.split == "train"])
    assert rois.shape == (5, 120, 120) and labels.tolist() == [0, 0, 0, 1, 1]
    p, y, idx = D.random_patches(rois, labels, {0: 4, 1: 10}, seed=0)
    assert p.shape == (3 * 4 + 2 * 10, 72, 72) and (y == 1).sum() == 20
    # every patch is a real crop of its ROI
    for patch, i in zip(p[:5], idx[:5]):
        roi = rois[i]
        assert any(np.array_equal(roi[a:a + 72, b:b + 72], patch) for a in range(49) for b in range(49))
    p2, _, _ = D.random_patches(rois, labels, {0: 4, 1: 10}, seed=0)
    assert np.array_equal(p, p2)
    w, roi_idx = D.sliding_windows(rois)
    assert w.shape == (5 * 25, 72, 72) and np.bincount(roi_idx).tolist() == [25] * 5
    assert np.array_equal(w[24], rois[0][48:120, 48:120])


def test_folder_layouts_synthetic(tmp_path):
    synth.make_brain(tmp_path / "brain")
    recs = D.brain_mri_records(tmp_path / "brain")
    assert len(recs) == 16 and {r.split for r in recs} == {"train", "test"}
    synth.make_kermany(tmp_path / "k")
    recs = D.kermany_records(tmp_path / "k")
    pids = {r.name: r.group for r in recs}
    assert pids["person00_bacteria_0.jpeg"] == "person00" and pids["person00_virus_9.jpeg"] == "person00"
    assert pids["IM-0001-0001.jpeg"] == "IM-0001"
    assert D.kermany_patient_id("NORMAL2-IM-1427-0001.jpeg") == "NORMAL2-IM-1427"
    synth.make_class_tree(tmp_path / "tb", ("Normal", "Tuberculosis"), pattern="{cls}-{i}.png")
    assert [r.label for r in D.tb_records(tmp_path / "tb")] == [0, 0, 1, 1]
    synth.make_class_tree(tmp_path / "cov", ("COVID", "Normal", "Lung_Opacity", "Viral Pneumonia"),
                          subdir="images", pattern="{cls}-{i}.png")
    synth.make_class_tree(tmp_path / "cov", ("COVID", "Normal", "Lung_Opacity", "Viral Pneumonia"),
                          subdir="masks", pattern="{cls}-{i}.png")
    recs = D.covid_radiography_records(tmp_path / "cov")
    assert len(recs) == 8 and all(r.mask_paths and "/masks/" in r.mask_paths[0] for r in recs)
    for split in ("train", "test"):
        synth.make_class_tree(tmp_path / "oct" / split, ("CNV", "DME", "DRUSEN", "NORMAL"),
                              pattern="{cls}-" + ("1" if split == "train" else "2") + "{c}{i}-1.jpeg")
    recs = D.oct_records(tmp_path / "oct")
    assert recs[0].group == "100" and len({r.group for r in recs}) == 16


def test_medmnist_npz(tmp_path):
    p = synth.make_medmnist(tmp_path / "pneumoniamnist.npz")
    data = D.load_medmnist(tmp_path)
    assert data["train"][0].shape == (10, 28, 28) and data["train"][1].shape == (10,)
    assert D.load_medmnist(p)["test"][0].dtype == np.uint8


@pytest.mark.data
def test_real_busi_counts_and_masks():
    root = dataset_dir("busi")
    recs = D.busi_records(root)
    counts = {c: sum(r.label_name == c for r in recs) for c in ("benign", "malignant", "normal")}
    assert counts == {"benign": 437, "malignant": 210, "normal": 133}
    assert sum(len(r.mask_paths) > 1 for r in recs) == 17  # 16 benign + 1 malignant with extra masks
    normal = next(r for r in recs if r.label_name == "normal")
    assert D.load_mask(normal).sum() == 0
    assert len(D.busi_records(root / "Dataset_BUSI_with_GT")) == 780


@pytest.mark.data
def test_real_mias_brain_chest_pneumoniamnist_counts():
    recs = D.mias_records(dataset_dir("mias_rois"))
    by = {(s, c): sum(r.split == s and r.label_name == c for r in recs) for s in ("train", "val", "test")
          for c in ("Normal", "Tumor")}
    assert by == {("train", "Normal"): 125, ("train", "Tumor"): 72, ("val", "Normal"): 41, ("val", "Tumor"): 24,
                  ("test", "Normal"): 41, ("test", "Tumor"): 23}
    brain = D.brain_mri_records(dataset_dir("brain_tumor_mri"))
    assert sum(r.split == "train" for r in brain) == 5708 and sum(r.split == "test" for r in brain) == 1311
    chest = D.chest4_records(dataset_dir("chest_xray"))
    assert [sum(r.label_name == c for r in chest) for c in ("NORMAL", "PNEUMONIA", "COVID19")] == [234, 386, 81]
    pm = D.load_medmnist(dataset_dir("pneumoniamnist"))
    assert [len(pm[s][0]) for s in ("train", "val", "test")] == [3882, 524, 624]


def test_phantom_busi_reads_like_busi_and_is_deterministic(tmp_path):
    from medattn.datasets.phantom import make_phantom_busi, phantom_image

    make_phantom_busi(tmp_path / "a", counts=(3, 2, 2), seed=1)
    recs = D.busi_records(tmp_path / "a", verify=True)
    assert [r.label_name for r in recs].count("malignant") == 2
    assert (tmp_path / "a" / "SYNTHETIC.txt").exists()
    masks = {r.label_name: D.load_mask(r).sum() for r in recs}
    assert masks["normal"] == 0 and masks["benign"] > 0 and masks["malignant"] > 0
    a, ma = phantom_image("malignant", 5)
    b, mb = phantom_image("malignant", 5)
    assert np.array_equal(a, b) and np.array_equal(ma, mb)
    # the lesion is hypo-echoic: darker inside the mask than around it
    assert a[ma > 0].mean() < 0.6 * a[ma == 0].mean()


def test_busi_subset_of_classes_keeps_busi_labels(tmp_path, capsys):
    """Another hospital's benign/malignant set (no normal folder), or only malignant and normal: read what is there
    with BUSI's labels; a folder with none of the classes names the expected layout."""
    import shutil

    from medattn.datasets.phantom import make_phantom_busi

    root = make_phantom_busi(tmp_path / "ext", counts=(3, 2, 2), seed=1)
    shutil.rmtree(root / "Dataset_BUSI_with_GT" / "normal")
    recs = D.busi_records(root, classes="present")
    assert {(r.label_name, r.label) for r in recs} == {("benign", 0), ("malignant", 1)}
    assert "no normal folder" in capsys.readouterr().out
    with pytest.raises(D.DatasetError, match="does not have the expected layout"):
        D.busi_records(root)  # all three required by default
    shutil.rmtree(root / "Dataset_BUSI_with_GT" / "benign")
    assert {r.label for r in D.busi_records(root / "Dataset_BUSI_with_GT", classes="present")} == {1}
    (tmp_path / "wrong" / "images").mkdir(parents=True)
    with pytest.raises(D.DatasetError, match=r"looked for \['benign', 'malignant', 'normal'\]"):
        D.busi_records(tmp_path / "wrong", classes="present")
    with pytest.raises(D.DatasetError, match="unknown class"):
        D.busi_records(root, classes=("benign", "cyst"))
