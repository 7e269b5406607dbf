"""reproductions/analysis/pretrain_encoder.py: an encoder pretrained on a local class folder, saved with a card,
loads through every script's ``--weights FILE`` with the card's preprocessing; the registry refuses it for another
backbone or width, and a run's identity holds the file's content hash, not its path."""

import dataclasses
import json
import shutil

import numpy as np
import pytest

from tests.conftest import load_script


def _folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, level in (("dark", 60), ("bright", 190)):
        (tmp_path / "data" / c).mkdir(parents=True)
        for i in range(8):
            img = np.clip(rng.normal(level, 30, (40, 48)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(tmp_path / "data" / c / f"{c}_{i}.png")
    return tmp_path / "data"


def test_pretrained_encoder_loads_with_its_card_and_is_refused_elsewhere(tmp_path, capsys):
    from medattn.backbones import get_backbone, preprocessing_for, weights_card

    mod = load_script("reproductions/analysis", "pretrain_encoder")
    data, out = _folder(tmp_path), tmp_path / "enc" / "vgg.weights.h5"
    assert mod.main(["--data-dir", str(data), "--backbone", "vgg16", "--width", "0.125", "--batch-norm",
                     "--image-size", "32", "--epochs", "2", "--batch-size", "8", "--val-fraction", "0.25",
                     "--mixed-precision", "off", "--out", str(out)]) == 0
    card = weights_card(str(out))
    assert card["backbone"] == "vgg16" and card["options"] == {"width": 0.125, "batch_norm": True}
    assert card["preprocessing"] == "unit" and card["classes"] == ["bright", "dark"]
    assert card["n_train"] + card["n_val"] == 16 and card["best_epoch"] in (1, 2) and len(card["history"]) == 2
    assert card["data_dir"] == str(data) and card["git_commit"]
    assert preprocessing_for("vgg16", str(out)) == "unit"  # not ImageNet's caffe transform
    assert preprocessing_for("vgg16", "/some/imagenet_copy.weights.h5") == "caffe"  # no card: an ImageNet copy
    bb = get_backbone("vgg16", (32, 32, 3), weights=str(out), width=0.125, batch_norm=True)
    fresh = get_backbone("vgg16", (32, 32, 3), weights=None, width=0.125, batch_norm=True)
    fresh.model.load_weights(out)
    for a, b in zip(bb.model.get_weights(), fresh.model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert bb.preprocess is not None
    with pytest.raises(ValueError, match="holds vgg16 with options"):
        get_backbone("vgg16", (32, 32, 3), weights=str(out), width=0.25)
    with pytest.raises(ValueError, match="holds vgg16 with options"):  # no width given: the full-width VGG16
        get_backbone("vgg16", (32, 32, 3), weights=str(out))
    with pytest.raises(ValueError, match="not vgg19"):
        get_backbone("vgg19", (32, 32, 3), weights=str(out), width=0.125)
    # bad input: one line, exit 2
    assert mod.main(["--data-dir", str(data), "--backbone", "vgg16", "--out", str(tmp_path / "x.h5")]) == 2
    assert mod.main(["--data-dir", str(data), "--backbone", "resnet50", "--width", "0.5",
                     "--out", str(tmp_path / "x.weights.h5")]) == 2
    assert "resnet50 has no width option" in capsys.readouterr().err


def test_a_weights_file_enters_the_identity_by_its_content(tmp_path):
    """Two copies of one weights file at different paths are the same configuration; another file is not."""
    from medattn.training.config import config_hash

    cfg = load_script("reproductions", "dcnnimaf").PROFILES["cpu"]
    a, b, c = tmp_path / "a.weights.h5", tmp_path / "sub" / "b.weights.h5", tmp_path / "c.weights.h5"
    a.write_bytes(b"same bytes")
    b.parent.mkdir()
    shutil.copy(a, b)
    c.write_bytes(b"other bytes")
    h = {p: config_hash(dataclasses.replace(cfg, weights=str(p))) for p in (a, b, c)}
    assert h[a] == h[b] != h[c]
    assert config_hash(cfg) not in h.values()
    assert json.dumps(dataclasses.replace(cfg, weights=str(a)).to_dict()["weights"]) == json.dumps(str(a))
