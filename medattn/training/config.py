"""Experiment configuration: one frozen dataclass per paper, three named profiles, overrides, ``config.json``.

Each reproduction defines a subclass of :class:`ExperimentConfig` with its own fields, and a ``PROFILES``
mapping ``{"smoke": cfg, "cpu": cfg, "paper": cfg}``:

* ``smoke`` — seconds; what the tests run.
* ``cpu`` — the real data, about an hour on a 2-core CPU; what our committed results come from.
* ``paper`` — the paper's protocol (sizes, epochs, ImageNet weights), meant for GPU/TPU with tf.distribute.

Command-line flags override fields (:func:`medattn.training.cli.parse_config`); the final config is written
beside the results as ``config.json``.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path
from typing import Any, Mapping

__all__ = ["ExperimentConfig", "override", "save_config", "load_config", "coerce_field"]


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """Fields every experiment has. Subclasses add their own (frozen, with defaults)."""

    name: str = "experiment"
    profile: str = "smoke"
    seeds: tuple[int, ...] = (0,)
    epochs: int = 1
    batch_size: int = 8
    learning_rate: float = 1e-3
    image_size: int = 64
    weights: str = "none"  # none | imagenet | path to a weights file
    strategy: str = "auto"  # auto | default | mirrored | multiworker | tpu
    mixed_precision: str = "off"  # off | bf16 | fp16
    deterministic: bool = False
    data_dir: str | None = None
    out: str | None = None
    resume: bool = False
    verbose: int = 1

    def __post_init__(self):
        if self.profile not in ("smoke", "cpu", "paper") and not self.profile.startswith("custom"):
            raise ValueError(f"profile must be smoke, cpu or paper, got {self.profile!r}")
        if self.epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.mixed_precision not in ("off", "bf16", "fp16"):
            raise ValueError(f"mixed_precision must be off, bf16 or fp16, got {self.mixed_precision!r}")
        if self.strategy not in ("auto", "default", "mirrored", "multiworker", "tpu"):
            raise ValueError(f"strategy must be auto, default, mirrored, multiworker or tpu, got {self.strategy!r}")
        if not self.seeds:
            raise ValueError("seeds must name at least one seed")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _field_types(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def coerce_field(cls, name: str, value: Any) -> Any:
    """Convert ``value`` (often a string from the command line) to the declared type of field ``name``."""
    types = _field_types(cls)
    if name not in types:
        known = ", ".join(sorted(types))
        raise ValueError(f"{cls.__name__} has no field {name!r}; fields are: {known}")
    tp = types[name]
    if value is None:
        return None
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union or str(origin) == "types.UnionType":
        non_none = [a for a in args if a is not type(None)]
        if isinstance(value, str) and value.lower() == "none" and type(None) in args:
            return None
        tp = non_none[0]
        origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is tuple:
        items = value.split(",") if isinstance(value, str) else list(value)
        item_tp = args[0] if args else str
        return tuple(_scalar(item_tp, v, name) for v in items if str(v).strip() != "")
    return _scalar(tp, value, name)


def _scalar(tp, value, name):
    if tp is bool:
        if isinstance(value, bool):
            return value
        s = str(value).strip().lower()
        if s in ("1", "true", "yes", "on"):
            return True
        if s in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"field {name!r} expects true/false, got {value!r}")
    try:
        return tp(value) if tp in (int, float, str) else value
    except (TypeError, ValueError) as e:
        raise ValueError(f"field {name!r} expects {tp.__name__}, got {value!r}") from e


def override(cfg: ExperimentConfig, changes: Mapping[str, Any]) -> ExperimentConfig:
    """A copy of ``cfg`` with ``changes`` applied (values coerced to the field types; None values ignored)."""
    cls = type(cfg)
    clean = {k: coerce_field(cls, k, v) for k, v in changes.items() if v is not None}
    return dataclasses.replace(cfg, **clean)


def save_config(cfg: ExperimentConfig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"config_class": type(cfg).__name__, **cfg.to_dict()}, indent=2) + "\n")
    return path


def load_config(cls, path) -> ExperimentConfig:
    data = json.loads(Path(path).read_text())
    data.pop("config_class", None)
    return override(cls(), {k: v for k, v in data.items()})
