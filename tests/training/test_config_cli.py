import dataclasses
import json

import pytest

from medattn.training import ExperimentConfig, Stage, load_config, parse_config, save_config
from medattn.training.cli import default_data_dir


@dataclasses.dataclass(frozen=True)
class DemoConfig(ExperimentConfig):
    n_patches: int = 10
    backbones: tuple[str, ...] = ("vgg16",)
    dropout: float = 0.5


PROFILES = {
    "smoke": DemoConfig(profile="smoke", stages=(Stage("train", epochs=1),)),
    "cpu": DemoConfig(profile="cpu", stages=(Stage("train", epochs=10, batch_size=32),)),
    "paper": DemoConfig(profile="paper", stages=(Stage("train", epochs=50),), weights="imagenet"),
}
TWO = DemoConfig(profile="cpu", stages=(Stage("seg", epochs=5, image_size=128), Stage("cls", epochs=7)))


def test_profile_and_flags_override(tmp_path):
    cfg, _ = parse_config(PROFILES, ["--profile", "smoke", "--epochs", "3", "--seeds", "0,1,2",
                                     "--set", "n_patches=25", "--set", "backbones=vgg16,vgg19",
                                     "--mixed-precision", "bf16", "--resume"])
    assert cfg.profile == "smoke" and cfg.stage("train").epochs == 3 and cfg.seeds == (0, 1, 2)
    assert cfg.n_patches == 25 and cfg.backbones == ("vgg16", "vgg19")
    assert cfg.mixed_precision == "bf16" and cfg.resume is True
    path = save_config(cfg, tmp_path / "config.json")
    saved = json.loads(path.read_text())
    assert saved["n_patches"] == 25 and saved["stages"]["train"]["epochs"] == 3
    assert "epochs" not in saved and "learning_rate" not in saved  # only the stages' fields, which run
    assert load_config(DemoConfig, path) == cfg


def test_shared_flags_set_every_stage_and_stage_fields_one():
    profiles = {"cpu": TWO}
    cfg, _ = parse_config(profiles, ["--epochs", "2", "--lr", "0.01", "--image-size", "96", "--set", "cls.epochs=9",
                                     "--batch-size", "4"])
    seg, cls = cfg.stage("seg"), cfg.stage("cls")
    assert (seg.epochs, cls.epochs) == (2, 9)
    assert seg.learning_rate == cls.learning_rate == 0.01 and seg.image_size == cls.image_size == 96
    assert seg.batch_size == cls.batch_size == 4
    # a per-stage value wins whichever order it comes in
    cfg2, _ = parse_config(profiles, ["--set", "cls.epochs=9", "--epochs", "2"])
    assert cfg2.stage("cls").epochs == 9 and cfg2.stage("seg").epochs == 2


def test_optional_fields_are_coerced_from_the_command_line():
    """``int | None`` / ``float | None`` fields (patience, a BN momentum) get numbers, or None from 'none'
    (the command line once kept '12' as a string, and the stage check failed comparing it with 1)."""
    @dataclasses.dataclass(frozen=True)
    class Opt(DemoConfig):
        momentum: float | None = None

    cfg, _ = parse_config({"cpu": Opt(profile="cpu", stages=TWO.stages)},
                          ["--set", "cls.patience=12", "--set", "momentum=0.9", "--set", "seg.patience=none"])
    assert cfg.stage("cls").patience == 12 and isinstance(cfg.stage("cls").patience, int)
    assert cfg.momentum == 0.9 and cfg.stage("seg").patience is None


def test_stage_config_json_records_only_what_takes_effect(tmp_path):
    sgd = DemoConfig(stages=(Stage("train", optimizer="sgd", schedule="constant"),))
    d = sgd.to_dict()["stages"]["train"]
    assert "momentum" in d and "cosine_alpha" not in d
    d = DemoConfig().to_dict()["stages"]["train"]
    assert "momentum" not in d and "cosine_alpha" in d


def test_refused_flag_exits_2_naming_flag_and_script(capsys):
    with pytest.raises(SystemExit) as e:
        parse_config(PROFILES, ["--image-size", "96"], refused={"--image-size": "the ROIs fix the size"},
                     prog="demo.py")
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--image-size is not supported by demo.py: the ROIs fix the size" in err
    with pytest.raises(SystemExit):
        parse_config({"cpu": TWO}, ["--set", "nope.epochs=1"])
    assert "no stage 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_config(PROFILES, ["--seeds", "-1"])
    assert "non-negative" in capsys.readouterr().err


def test_default_profile_is_cpu():
    cfg, _ = parse_config(PROFILES, [])
    assert cfg.profile == "cpu" and cfg.stage("train").batch_size == 32


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
        Stage(batch_size=0)
    with pytest.raises(ValueError, match="unique"):
        DemoConfig(stages=(Stage("a"), Stage("a")))


def test_data_dir_from_environment(tmp_path):
    (tmp_path / "busi").mkdir()
    assert default_data_dir("busi", {"MEDATTN_DATA_DIR": str(tmp_path)}) == str(tmp_path / "busi")
    assert default_data_dir("mias_rois", {"MEDATTN_DATA_DIR": str(tmp_path)}) is None
    assert default_data_dir("busi", {}) is None


def test_optional_fields_enter_the_identity_only_when_set():
    """An evaluation-only option added later (IDENTITY_IF_SET) leaves the identity of runs made before it alone,
    and changes it once set; any other field always counts."""
    from typing import ClassVar

    from medattn.training.config import config_hash

    @dataclasses.dataclass(frozen=True)
    class WithExternal(DemoConfig):
        external_data: str | None = None
        IDENTITY_IF_SET: ClassVar[tuple[str, ...]] = ("external_data",)

    old = DemoConfig(profile="cpu")
    assert config_hash(WithExternal(profile="cpu")) == config_hash(old)
    assert config_hash(WithExternal(profile="cpu", external_data="/x")) != config_hash(old)
    assert "IDENTITY_IF_SET" not in WithExternal(profile="cpu").to_dict()
    assert config_hash(dataclasses.replace(old, dropout=0.4)) != config_hash(old)


def test_set_works_for_a_config_class_whose_module_is_not_importable():
    """A script's config class run under cProfile (or exec'd by any runner) lives in a namespace that is not
    ``sys.modules[cls.__module__]``; its string annotations naming ``Stage`` must still resolve for ``--set``."""
    ns: dict = {"__name__": "__main__"}  # as cProfile runs a script: sys.modules["__main__"] is another module
    exec("from __future__ import annotations\n"
         "import dataclasses\n"
         "from medattn.training import ExperimentConfig, Stage\n"
         "@dataclasses.dataclass(frozen=True)\n"
         "class ScriptConfig(ExperimentConfig):\n"
         "    extra_stage: Stage | None = None\n"
         "    protocols: tuple[str, ...] = ('a',)\n", ns)
    profiles = {"cpu": ns["ScriptConfig"](profile="cpu", stages=(Stage("train", epochs=2),))}
    cfg, _ = parse_config(profiles, ["--set", "protocols=b,c", "--seeds", "3"])
    assert cfg.protocols == ("b", "c") and cfg.seeds == (3,)


def test_augmentation_is_configuration_entering_the_identity_only_when_changed():
    """Each script's training augmentation is a configuration field (config.json shows it): the same values keep
    the identity that runs recorded before it was one; other values are another run; values the augmenter refuses
    are one line naming the field; the command line takes a JSON object."""
    import dataclasses

    from medattn.runner.reproduction import UserError, check_augmentation
    from medattn.training.config import coerce_field, config_hash
    from tests.conftest import load_script

    mias = load_script("reproductions", "mias_fusion")
    cfg = mias.PROFILES["cpu"]
    assert cfg.to_dict()["augment"] == {"flip": "horizontal", "fill_mode": "nearest"}
    same = dataclasses.replace(cfg, augment={"fill_mode": "nearest", "flip": "horizontal"})
    assert config_hash(same) == config_hash(cfg)
    other = dataclasses.replace(cfg, augment=coerce_field(type(cfg), "augment", '{"flip": null, "fill_mode": "nearest"}'))
    assert other.augment == {"flip": None, "fill_mode": "nearest"} and config_hash(other) != config_hash(cfg)
    with pytest.raises(ValueError, match="expects a JSON object"):
        coerce_field(type(cfg), "augment", "flip=none")
    with pytest.raises(UserError, match="^augment: flip must be horizontal, vertical"):
        check_augmentation(augment={"flip": "diagonal"})
    with pytest.raises(UserError, match="^seg_augment: .*unexpected keyword argument 'shear'"):
        check_augmentation(seg_augment={"shear": 0.1})
