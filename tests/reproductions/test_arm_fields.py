"""Every script names the fields that only choose its arms (``ARM_FIELDS``): they exist, they change the plan, and
they stay out of the run identity, so rows of a partial run (``--set variants=concat``) resume in the full run."""

import dataclasses

import pytest

from medattn.training.config import config_hash
from tests.conftest import load_script

EXPECTED = {"dcnnimaf": ("protocols",), "mias_fusion": ("models", "multi_seed_models"),
            "emtnet": ("sweep", "ablation"), "brain_tumor_transfer": ("backbones",), "dcat": ("variants", "multi_seed_variants")}


def _script(name):
    return load_script("reproductions", name).REPRODUCTION


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_arm_fields_choose_arms_and_leave_the_identity(name):
    repro = _script(name)
    cfg = repro.profiles["cpu"]
    assert type(cfg).ARM_FIELDS == EXPECTED[name]
    fields = {f.name for f in dataclasses.fields(cfg)}
    assert set(type(cfg).ARM_FIELDS) <= fields
    full = repro.plan(cfg)
    first = type(cfg).ARM_FIELDS[0]
    value = getattr(cfg, first)
    fewer = dataclasses.replace(cfg, **{first: value[:1] if isinstance(value, tuple) else not value})
    assert repro.plan(fewer) != full and set(repro.plan(fewer)) < set(full)
    assert config_hash(fewer) == config_hash(cfg)
    # a field that changes results still changes the hash
    stage = cfg.stages[0]
    other = dataclasses.replace(cfg, stages=(dataclasses.replace(stage, epochs=stage.epochs + 1), *cfg.stages[1:]))
    assert config_hash(other) != config_hash(cfg)
