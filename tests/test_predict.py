"""medattn.predict: masks at each image's own size, overlays, class probabilities (MC mean + entropy), the two-stage
pipeline, unreadable files listed and never skipped silently."""

import csv

import keras
import numpy as np
import pytest
from PIL import Image

from medattn.layers import MCDropout
from medattn.predict import main, predict_folder
from medattn.saving import save_model_card


def _images(folder):
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (50, 70), dtype=np.uint8)).save(folder / "grey.png")
    Image.fromarray(rng.integers(0, 255, (33, 41, 3), dtype=np.uint8)).save(folder / "rgb.jpg")
    (folder / "sub").mkdir()
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(folder / "sub" / "c.bmp")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return folder


def _segmenter():
    inp = keras.Input((32, 32, 3))
    return keras.Model(inp, keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid")(inp))


def _classifier(channels, mc):
    inp = keras.Input((32, 32, channels))
    x = keras.layers.GlobalAveragePooling2D()(inp)
    x = keras.layers.Dense(8, activation="relu")(x)
    if mc:
        x = MCDropout(0.5)(x)
    return keras.Model(inp, keras.layers.Dense(3, activation="softmax")(x))


CARD = {"input_size": 32, "preprocessing": "unit", "threshold": 0.5}


def test_segmenter_masks_at_image_size_and_unreadable_listed(tmp_path, capsys):
    imgs = _images(tmp_path / "imgs")
    model = save_model_card(_segmenter(), tmp_path / "m" / "seg.keras",
                            {**CARD, "kind": "segmenter", "class_names": ["lesion"]})
    rc = main(["--model", str(model), "--images", str(imgs), "--out", str(tmp_path / "out")])
    assert rc == 3 and "broken.png" in capsys.readouterr().err
    out = tmp_path / "out"
    assert Image.open(out / "masks" / "grey.png").size == (70, 50)
    assert Image.open(out / "masks" / "rgb.png").size == (41, 33)
    assert Image.open(out / "overlays" / "sub" / "c.png").size == (64, 64)
    assert "broken.png" in (out / "unreadable.txt").read_text()
    rows = list(csv.DictReader(open(out / "predictions.csv")))
    assert sorted(r["image"] for r in rows) == ["grey.png", "rgb.jpg", "sub/c.bmp"]
    assert all(0 <= float(r["lesion_area_fraction"]) <= 1 for r in rows)


def test_two_stage_pipeline_with_mc_dropout(tmp_path):
    imgs = _images(tmp_path / "imgs")
    (imgs / "broken.png").unlink()
    save_model_card(_segmenter(), tmp_path / "m" / "segmenter.keras",
                    {**CARD, "kind": "segmenter", "class_names": ["lesion"]})
    model = save_model_card(_classifier(4, mc=True), tmp_path / "m" / "classifier.keras",
                            {**CARD, "kind": "classifier", "class_names": ["benign", "malignant", "normal"],
                             "segmenter": "segmenter.keras", "mc_dropout": True, "mc_passes": 5})
    res = predict_folder(model, imgs, tmp_path / "out")
    assert res["n"] == 3 and not res["unreadable"]
    rows = list(csv.DictReader(open(res["csv"])))
    p = np.array([[float(r[f"p_{c}"]) for c in ("benign", "malignant", "normal")] for r in rows])
    assert np.allclose(p.sum(1), 1, atol=1e-5)
    assert all(r["mc_passes"] == "5" and float(r["predictive_entropy"]) >= 0 for r in rows)
    assert all(r["predicted"] == ["benign", "malignant", "normal"][int(np.argmax(q))] for r, q in zip(rows, p))
    assert (tmp_path / "out" / "masks" / "grey.png").exists()  # the pipeline's segmenter output too


def test_two_stage_gate_empties_the_mask_of_an_image_called_normal(tmp_path):
    """A run that chose the classifier gate on validation data (card: ``empty_mask_when``) writes an empty mask for
    an image its classifier calls normal; without it the segmenter's mask stands."""
    imgs = _images(tmp_path / "imgs")
    (imgs / "broken.png").unlink()
    inp = keras.Input((32, 32, 3))  # a lesion everywhere
    seg = keras.Model(inp, keras.layers.Conv2D(1, 1, activation="sigmoid", kernel_initializer="zeros",
                                               bias_initializer=keras.initializers.Constant(5.0))(inp))
    save_model_card(seg, tmp_path / "m" / "segmenter.keras", {**CARD, "kind": "segmenter", "class_names": ["lesion"]})
    inp = keras.Input((32, 32, 4))  # always "normal"
    x = keras.layers.GlobalAveragePooling2D()(inp)
    out = keras.layers.Dense(3, activation="softmax", kernel_initializer="zeros",
                             bias_initializer=keras.initializers.Constant([0.0, 0.0, 5.0]))(x)
    card = {**CARD, "kind": "classifier", "class_names": ["benign", "malignant", "normal"],
            "segmenter": "segmenter.keras"}
    for gate, area in ((None, 1.0), ("normal", 0.0)):
        extra = {"empty_mask_when": gate} if gate else {}
        model = save_model_card(keras.Model(inp, out), tmp_path / "m" / "classifier.keras", {**card, **extra})
        res = predict_folder(model, imgs, tmp_path / f"out_{gate}")
        rows = list(csv.DictReader(open(res["csv"])))
        assert all(r["predicted"] == "normal" for r in rows)
        assert [float(r["lesion_area_fraction"]) for r in rows] == [area] * 3
        assert np.asarray(Image.open(tmp_path / f"out_{gate}" / "masks" / "grey.png")).max() == 255 * area


def test_refusals(tmp_path, capsys):
    m = _classifier(3, mc=False)
    m.save(tmp_path / "bare.keras")
    imgs = _images(tmp_path / "imgs")
    assert main(["--model", str(tmp_path / "bare.keras"), "--images", str(imgs), "--out", str(tmp_path / "o")]) == 2
    assert "no model card" in capsys.readouterr().err
    assert main(["--model", str(tmp_path / "none.keras"), "--images", str(imgs), "--out", str(tmp_path / "o")]) == 2
    model = save_model_card(m, tmp_path / "p.keras", {**CARD, "kind": "patch_classifier", "class_names": ["a", "b"],
                                                     "roi_rule": "25 windows"})
    with pytest.raises(ValueError, match="roi_size"):
        predict_folder(model, imgs, tmp_path / "o")
    model = save_model_card(m, tmp_path / "q.keras", {**CARD, "kind": "survival", "class_names": ["a"]})
    with pytest.raises(ValueError, match="'survival' model"):
        predict_folder(model, imgs, tmp_path / "o")


def test_patch_classifier_votes_over_windows(tmp_path):
    imgs = _images(tmp_path / "imgs")
    (imgs / "broken.png").unlink()
    inp = keras.Input((24, 24, 3))
    m = keras.Model(inp, keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(inp)))
    model = save_model_card(m, tmp_path / "mias.keras", {"kind": "patch_classifier", "input_size": 24,
                                                         "preprocessing": "samplewise_centre", "threshold": 0.5,
                                                         "class_names": ["normal", "tumour"], "roi_size": 40,
                                                         "stride": 4})
    rows = list(csv.DictReader(open(predict_folder(model, imgs, tmp_path / "o")["csv"])))
    assert len(rows) == 3 and all(r["windows"] == "25" for r in rows)  # (40 - 24) / 4 + 1 = 5 per side
    assert all(r["predicted"] == ("tumour" if float(r["vote_fraction"]) > 0.5 else "normal") for r in rows)


def test_patch_classifier_with_a_tta_card_averages_the_dihedral_views(tmp_path):
    """A card saved with tta=dihedral: each window's probability is the mean over its 8 views, so the ROI's mean
    probability equals the mean over the 8 rotated and mirrored copies of the image predicted without TTA (the
    window grid, 5 x 5 over 40 px, is symmetric)."""
    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, (40, 40), dtype=np.uint8)
    plain_dir, views_dir = tmp_path / "one", tmp_path / "views"
    plain_dir.mkdir()
    views_dir.mkdir()
    Image.fromarray(img).save(plain_dir / "roi.png")
    for i, v in enumerate([np.rot90(a, k) for a in (img, img[:, ::-1]) for k in range(4)]):
        Image.fromarray(np.ascontiguousarray(v)).save(views_dir / f"v{i}.png")
    inp = keras.Input((24, 24, 3))
    x = keras.layers.Flatten()(keras.layers.AveragePooling2D(4)(inp))  # not rotation-invariant
    m = keras.Model(inp, keras.layers.Dense(2, activation="softmax", kernel_initializer="glorot_normal")(x))
    card = {"kind": "patch_classifier", "input_size": 24, "preprocessing": "samplewise_centre", "threshold": 0.5,
            "class_names": ["normal", "tumour"], "roi_size": 40, "stride": 4}
    plain = save_model_card(m, tmp_path / "plain.keras", card)
    tta = save_model_card(m, tmp_path / "tta.keras", {**card, "tta": "dihedral"})
    p_tta = float(next(csv.DictReader(open(predict_folder(tta, plain_dir, tmp_path / "o1")["csv"])))["mean_p_tumour"])
    p_views = [float(r["mean_p_tumour"]) for r in
               csv.DictReader(open(predict_folder(plain, views_dir, tmp_path / "o2")["csv"]))]
    assert len(p_views) == 8 and np.std(p_views) > 1e-4  # the model does see the views differently
    assert p_tta == pytest.approx(np.mean(p_views), abs=1e-5)


def _one_random_image(tmp_path, seed):
    """A folder with one random 16 x 16 RGB image, and the image."""
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    img = np.random.default_rng(seed).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(img).save(imgs / "a.png")
    return imgs, img


def test_classifier_with_a_flip_tta_card_averages_the_image_and_its_mirror(tmp_path):
    imgs, img = _one_random_image(tmp_path, seed=2)
    inp = keras.Input((16, 16, 3))
    x = keras.layers.Flatten()(keras.layers.AveragePooling2D(4)(inp))
    m = keras.Model(inp, keras.layers.Dense(3, activation="softmax", kernel_initializer="glorot_normal")(x))
    card = {"kind": "classifier", "input_size": 16, "preprocessing": "unit", "class_names": ["a", "b", "c"],
            "threshold": None, "mc_dropout": False}
    tta = save_model_card(m, tmp_path / "t.keras", {**card, "tta": "flip"})
    row = next(csv.DictReader(open(predict_folder(tta, imgs, tmp_path / "o")["csv"])))
    x = img.astype("float32")[None] / 255.0
    want = 0.5 * (np.asarray(m(x)) + np.asarray(m(x[:, :, ::-1])))[0]
    assert [float(row[f"p_{c}"]) for c in "abc"] == pytest.approx(want.tolist(), abs=1e-5)
    assert not np.allclose(want, np.asarray(m(x))[0], atol=1e-4)  # the mirror image does change the output


def test_multitask_with_a_flip_tta_card_averages_probability_and_mask(tmp_path):
    imgs, img = _one_random_image(tmp_path, seed=3)
    inp = keras.Input((16, 16, 3))
    m = keras.Model(inp, {"label": keras.layers.Dense(1, kernel_initializer="glorot_normal")(keras.layers.Flatten()(inp)),
                          "mask": keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid")(inp)})
    card = {"kind": "multitask", "input_size": 16, "preprocessing": "unit", "class_names": ["benign", "malignant"],
            "threshold": 0.5, "mc_dropout": False}
    plain = save_model_card(m, tmp_path / "p.keras", card)
    tta = save_model_card(m, tmp_path / "t.keras", {**card, "tta": "flip"})
    p_plain = float(next(csv.DictReader(open(predict_folder(plain, imgs, tmp_path / "o1")["csv"])))["p_malignant"])
    p_tta = float(next(csv.DictReader(open(predict_folder(tta, imgs, tmp_path / "o2")["csv"])))["p_malignant"])
    x = img.astype("float32")[None] / 255.0
    logit_mirror = float(np.asarray(m(x[:, :, ::-1])["label"]).ravel()[0])
    assert p_tta == pytest.approx(0.5 * (p_plain + 1 / (1 + np.exp(-logit_mirror))), abs=1e-5)
    assert abs(p_tta - p_plain) > 1e-4


def test_faults_are_named_before_anything_is_written(tmp_path, capsys):
    """A truncated model file, --out naming a file, a reused --out, two inputs with one stem, a non-image file."""
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8)).save(imgs / "x.png")
    Image.fromarray(rng.integers(0, 255, (30, 50, 3), dtype=np.uint8)).save(imgs / "x.jpg")
    (imgs / "notes.txt").write_text("not an image")
    model = save_model_card(_segmenter(), tmp_path / "m" / "seg.keras",
                            {**CARD, "kind": "segmenter", "class_names": ["lesion"]})
    truncated = tmp_path / "m" / "cut.keras"
    truncated.write_bytes(model.read_bytes()[:200])
    (tmp_path / "m" / "cut.json").write_text((tmp_path / "m" / "seg.json").read_text())
    assert main(["--model", str(truncated), "--images", str(imgs), "--out", str(tmp_path / "o1")]) == 2
    err = capsys.readouterr().err
    assert "cannot be read as a Keras model" in err and "not found" not in err.lower()
    (tmp_path / "a_file").write_text("x")
    assert main(["--model", str(model), "--images", str(imgs), "--out", str(tmp_path / "a_file")]) == 2
    assert "is a file; give a folder" in capsys.readouterr().err
    out = tmp_path / "out"
    assert main(["--model", str(model), "--images", str(imgs), "--out", str(out)]) == 0
    assert (out / "masks" / "x.png.png").is_file() and (out / "masks" / "x.jpg.png").is_file()
    assert Image.open(out / "masks" / "x.jpg.png").size == (50, 30)
    assert "notes.txt: not an image" in (out / "skipped.txt").read_text()
    assert "1 other file(s) left out" in capsys.readouterr().err
    (out / "unreadable.txt").write_text("stale\n")
    assert main(["--model", str(model), "--images", str(imgs), "--out", str(out)]) == 2
    assert "holds earlier outputs" in capsys.readouterr().err and (out / "unreadable.txt").exists()
    assert main(["--model", str(model), "--images", str(imgs), "--out", str(out), "--overwrite"]) == 0
    assert not (out / "unreadable.txt").exists() and (out / "masks" / "x.png.png").is_file()


def test_images_unlike_the_training_images_are_listed_and_warned_about(tmp_path, capsys):
    """A card that records its training images' profile (greyscale, 40-80 px, mean intensity 100-150): colour
    images, far smaller or larger ones and much darker ones are listed with the reason and counted in a warning;
    the outputs are still written for every image."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(100, 155, (50, 70), dtype=np.uint8)).save(folder / "alike.png")
    Image.fromarray(rng.integers(0, 255, (50, 70, 3), dtype=np.uint8)).save(folder / "colour.png")
    Image.fromarray(rng.integers(100, 155, (400, 60), dtype=np.uint8)).save(folder / "tall.png")
    Image.fromarray(rng.integers(0, 20, (60, 60), dtype=np.uint8)).save(folder / "dark.png")
    profile = {"n": 50, "grey_fraction": 1.0, "height": [40, 80], "width": [40, 80], "mean_intensity": [100, 150]}
    model = save_model_card(_segmenter(), tmp_path / "m" / "seg.keras",
                            {**CARD, "kind": "segmenter", "class_names": ["lesion"], "input_profile": profile})
    assert main(["--model", str(model), "--images", str(folder), "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "warning: 3 of 4 image(s) do not look like the images this model trained on" in err
    listed = (tmp_path / "out" / "unlike_training.txt").read_text().splitlines()
    assert listed == ["colour.png: colour (the model trained on greyscale images)",
                      "dark.png: mean intensity 9 (training images: 100-150)",
                      "tall.png: height 400 px (training images: 40-80)"]
    assert len(list(csv.DictReader(open(tmp_path / "out" / "predictions.csv")))) == 4


def test_an_input_profile_summarises_images_as_read_from_disk(tmp_path):
    from medattn.datasets.profile import input_profile, profile_of_files, unlike_profile

    grey = [np.full((40 + i, 60, 3), 100 + i, np.uint8) for i in range(10)]
    p = input_profile(grey)
    assert p["n"] == 10 and p["grey_fraction"] == 1.0 and p["width"] == [60.0, 60.0]
    assert p["height"] == [40.1, 48.9] and p["mean_intensity"] == [100.1, 108.9]  # 1st and 99th percentiles
    for i, img in enumerate(grey[:3]):
        Image.fromarray(img).save(tmp_path / f"{i}.png")
    assert profile_of_files(sorted(tmp_path.glob("*.png")))["n"] == 3
    colour = {"grey": False, "height": 50, "width": 60, "mean": 104.0}
    assert unlike_profile(colour, p) == ["colour (the model trained on greyscale images)"]
    assert unlike_profile({**colour, "grey": True}, p) == []
    with pytest.raises(ValueError, match="at least one image"):
        input_profile([])
