"""Every committed table's rows keep the identity their configuration has under this code: its ``config.json``
read back (:func:`load_config`, fields that moved into a stage included) hashes to the ``config_sha256`` its rows
recorded, so ``--resume`` reuses them and a change to how configurations are hashed cannot slip in unseen."""

from __future__ import annotations

import json

import pytest

from tests.conftest import REPO, load_script

SCRIPTS = ("dcnnimaf", "emtnet", "mias_fusion", "brain_tumor_transfer", "dcat")
# history kept beside the tables, whose rows do not carry their config.json's identity under this code; they are
# never resumed (the tables in front of them are)
NOT_RESUMABLE = {"dcnnimaf/earlier_4559d92", "dcnnimaf/selection/P", "dcat/chest_xray/earlier_6ae87a0",
                 "dcat/pneumoniamnist/earlier_6ae87a0", "dcat/pneumoniamnist/selection/warmup"}


def _folders(script: str):
    for rows in sorted((REPO / "results" / script).rglob("runs.jsonl")):
        if (rows.parent / "config.json").is_file():
            yield rows.parent


def mismatched_folders(script: str) -> list[str]:
    from medattn.training.config import config_hash, legacy_config_hashes, load_config

    cls = type(load_script("reproductions", script).PROFILES["cpu"])
    out = []
    for folder in _folders(script):
        cfg = load_config(cls, folder / "config.json")
        rows = [json.loads(line) for line in (folder / "runs.jsonl").read_text().splitlines() if line.strip()]
        idents = [r["identity"] for r in rows if "identity" in r]
        if not all(i["config_sha256"] in {config_hash(cfg)} | legacy_config_hashes(cfg, i.get("arm")) for i in idents):
            out.append(str(folder.relative_to(REPO / "results")))
    return out


@pytest.mark.parametrize("script", SCRIPTS)
def test_committed_rows_keep_the_identity_of_their_configuration(script):
    assert sorted(mismatched_folders(script)) == sorted(f for f in NOT_RESUMABLE if f.startswith(script + "/"))
    assert any(_folders(script))


def test_a_stage_field_keeps_the_name_it_had_as_a_config_field(tmp_path):
    """dcnnimaf's BatchNorm momentum and precise statistics moved into its stages: ``--set cls_bn_momentum`` still
    sets stage "cls", the identity still names it ``cls_bn_momentum``, and a config.json written with the old
    top-level fields reads back into the stages with the same hash."""
    from medattn.training.config import config_hash, load_config, override, save_config

    cfg = load_script("reproductions", "dcnnimaf").PROFILES["smoke"]
    moved = override(cfg, {"cls_bn_momentum": "0.9", "cls_precise_bn": "true"})
    assert moved.stage("cls").bn_momentum == 0.9 and moved.stage("cls").precise_bn
    assert moved.stage("seg").bn_momentum == 0.99 and not moved.stage("seg").precise_bn
    assert config_hash(moved) != config_hash(cfg)
    assert override(cfg, {"cls.bn_momentum": "0.9", "cls.precise_bn": "true"}) == moved
    path = save_config(moved, tmp_path / "config.json")
    old = json.loads(path.read_text())
    for stage, name, field in (("seg", "bn_momentum", "bn_momentum"), ("cls", "cls_bn_momentum", "bn_momentum"),
                               ("cls", "cls_precise_bn", "precise_bn")):
        old[name] = old["stages"][stage].pop(field)
    path.write_text(json.dumps(old))
    assert load_config(type(cfg), path) == moved
