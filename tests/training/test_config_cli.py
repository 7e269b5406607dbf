import dataclasses
import json

import pytest

from medattn.training import ExperimentConfig, load_config, parse_config, save_config
from medattn.training.cli import default_data_dir


@dataclasses.dataclass(frozen=True)
class DemoConfig(ExperimentConfig):
    n_patches: int = 10
    backbones: tuple[str, ...] = ("vgg16",)
    dropout: float = 0.5


PROFILES = {
    "smoke": DemoConfig(profile="smoke", epochs=1),
    "cpu": DemoConfig(profile="cpu", epochs=10, batch_size=32),
    "paper": DemoConfig(profile="paper", epochs=50, weights="imagenet"),
}


def test_profile_and_flags_override(tmp_path):
    cfg, _ = parse_config(PROFILES, ["--profile", "smoke", "--epochs", "3", "--seeds", "0,1,2",
                                     "--set", "n_patches=25", "--set", "backbones=vgg16,vgg19",
                                     "--mixed-precision", "bf16", "--resume"])
    assert cfg.profile == "smoke" and cfg.epochs == 3 and cfg.seeds == (0, 1, 2)
    assert cfg.n_patches == 25 and cfg.backbones == ("vgg16", "vgg19")
    assert cfg.mixed_precision == "bf16" and cfg.resume is True
    path = save_config(cfg, tmp_path / "config.json")
    assert json.loads(path.read_text())["n_patches"] == 25
    assert load_config(DemoConfig, path) == cfg


def test_default_profile_is_cpu():
    cfg, _ = parse_config(PROFILES, [])
    assert cfg.profile == "cpu" and cfg.batch_size == 32


def test_bad_field_and_value_exit_with_message(capsys):
    with pytest.raises(SystemExit):
        parse_config(PROFILES, ["--set", "nope=1"])
    assert "no field 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_config(PROFILES, ["--set", "n_patches=ten"])
    assert "expects int, got 'ten'" in capsys.readouterr().err


def test_config_validates():
    with pytest.raises(ValueError, match="mixed_precision"):
        DemoConfig(mixed_precision="fp8")
    with pytest.raises(ValueError, match="batch_size"):
        DemoConfig(batch_size=0)


def test_data_dir_from_environment(tmp_path):
    (tmp_path / "busi").mkdir()
    assert default_data_dir("busi", {"MEDATTN_DATA_DIR": str(tmp_path)}) == str(tmp_path / "busi")
    assert default_data_dir("mias_rois", {"MEDATTN_DATA_DIR": str(tmp_path)}) is None
    assert default_data_dir("busi", {}) is None
