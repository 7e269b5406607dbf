"""Experiment configuration: one frozen dataclass per paper, named profiles, per-stage settings, ``config.json``.

Each reproduction defines a subclass of :class:`ExperimentConfig` with its own fields, and a ``PROFILES``
mapping ``{"smoke": cfg, "cpu": cfg, "paper": cfg}``:

* ``smoke`` — seconds; what the tests run.
* ``cpu`` — the real data on a 2-core CPU without pretrained weights; what our committed results come from.
* ``paper`` — the paper's protocol (sizes, epochs, ImageNet weights), meant for GPU/TPU with tf.distribute.

Training settings live in :class:`Stage` entries (``cfg.stages``): a one-stage paper has one (``train``), a
two-stage paper one per stage (``seg``, ``cls``), each with its own epochs, batch, learning rate, input size,
optimizer and schedule. The shared flags ``--epochs``, ``--batch-size``, ``--lr`` and ``--image-size`` set that
field in every stage; ``--set seg.epochs=5`` sets one stage's. ``config.json`` holds the stages, not a
top-level ``epochs`` that nothing reads.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from pathlib import Path
from types import UnionType
from typing import Any, ClassVar, Mapping

from ..utils import atomic_write_text, file_sha256

__all__ = ["ExperimentConfig", "Stage", "override", "save_config", "load_config", "coerce_field", "STAGE_FIELDS",
           "EVAL_ONLY_STAGE_FIELDS", "config_hash", "legacy_config_hashes", "RUN_ONLY_FIELDS"]


# variable names (Keras 3 ``Variable.name``, matched as substrings) that ``Stage.weight_decay`` leaves alone:
# normalisation scales and offsets and biases, as AdamW is usually run
WEIGHT_DECAY_EXEMPT = ("gamma", "beta", "bias")


@dataclasses.dataclass(frozen=True)
class Stage:
    """One training stage: what ``fit`` and the optimizer of that stage use."""

    name: str = "train"
    epochs: int = 1
    batch_size: int = 8  # global batch, split across replicas
    learning_rate: float = 1e-3
    image_size: int = 64
    optimizer: str = "adam"  # adam | sgd
    schedule: str = "cosine"  # cosine (decayed over the whole stage) | constant
    cosine_alpha: float = 0.0  # final learning rate as a fraction of the first (cosine only)
    momentum: float = 0.9  # sgd only
    patience: int | None = None  # early stopping on the stage's monitored validation metric; None: never
    warmup_epochs: float = 0.0  # cosine only: linear warm-up from 0 over these epochs, then the cosine decay
    global_clipnorm: float | None = None  # rescale each step's gradients to at most this global L2 norm; None: off
    # decoupled weight decay (AdamW; for sgd Keras' decoupled form too): each step multiplies every weight by
    # 1 - weight_decay * (the step's scheduled learning rate); BatchNorm/LayerNorm scales and offsets and biases are
    # exempt (names in WEIGHT_DECAY_EXEMPT). 0: off
    weight_decay: float = 0.0
    # decay of an exponential moving average of the weights and BatchNorm statistics, updated after every step
    # (with the warm-up min(ema, (1 + t) / (10 + t)) at step t); validation, the best checkpoint and the final model
    # use the average (medattn.training.fit.WeightEma). 0: off
    ema: float = 0.0
    # moving-average momentum of every BatchNormalization layer while this stage trains (set by the runner's fit:
    # medattn.training.batchnorm.set_bn_momentum). Keras' 0.99 (MobileNetV2's 0.999) needs a few hundred steps before inference
    # outputs are usable; a from-scratch run of few steps per epoch wants 0.9. None: each layer keeps its own
    bn_momentum: float | None = None
    # precise BatchNorm statistics (medattn.training.batchnorm.recompute_bn_statistics): after this stage, before evaluation, the
    # trainable BatchNorm layers' moving mean and variance are recomputed over the stage's training inputs (no
    # augmentation, shuffled by the seed, batches of batch_size) with the final weights, instead of the exponential
    # average over the last ~10 batches that momentum 0.9 keeps. Evaluation only (EVAL_ONLY_STAGE_FIELDS): --resume
    # --out NEW evaluates finished checkpoints with it without training again
    precise_bn: bool = False

    def __post_init__(self):
        if self.epochs < 0:
            raise ValueError(f"stage {self.name!r}: epochs must be >= 0, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"stage {self.name!r}: batch_size must be >= 1, got {self.batch_size}")
        if not self.learning_rate > 0:
            raise ValueError(f"stage {self.name!r}: learning_rate must be > 0, got {self.learning_rate}")
        if self.image_size < 8:
            raise ValueError(f"stage {self.name!r}: image_size must be >= 8, got {self.image_size}")
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"stage {self.name!r}: optimizer must be adam or sgd, got {self.optimizer!r}")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"stage {self.name!r}: schedule must be cosine or constant, got {self.schedule!r}")
        if self.warmup_epochs < 0 or (self.warmup_epochs and self.warmup_epochs >= self.epochs):
            raise ValueError(f"stage {self.name!r}: warmup_epochs must be >= 0 and below epochs ({self.epochs}), "
                             f"got {self.warmup_epochs}")
        if self.warmup_epochs and self.schedule != "cosine":
            raise ValueError(f"stage {self.name!r}: warmup_epochs needs schedule=cosine (got {self.schedule!r})")
        if self.global_clipnorm is not None and not self.global_clipnorm > 0:
            raise ValueError(f"stage {self.name!r}: global_clipnorm must be > 0 or none, got {self.global_clipnorm}")
        if not self.weight_decay >= 0:
            raise ValueError(f"stage {self.name!r}: weight_decay must be >= 0, got {self.weight_decay}")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"stage {self.name!r}: ema must be >= 0 and below 1 (0: off), got {self.ema}")
        if self.bn_momentum is not None and not 0.0 < self.bn_momentum < 1.0:
            raise ValueError(f"stage {self.name!r}: bn_momentum must lie in (0, 1) or be none, got {self.bn_momentum}")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"stage {self.name!r}: patience must be >= 1 or none, got {self.patience}")

    def decay_steps(self, n_examples: int) -> int:
        """Optimizer steps of cosine decay: ``epochs * ceil(n_examples / batch_size)`` less the warm-up steps."""
        return max(1, self.epochs * -(-int(n_examples) // self.batch_size) - self.warmup_steps(n_examples))

    def warmup_steps(self, n_examples: int) -> int:
        """Optimizer steps of linear warm-up: ``warmup_epochs * ceil(n_examples / batch_size)``, rounded."""
        return int(round(self.warmup_epochs * -(-int(n_examples) // self.batch_size)))

    def make_optimizer(self, n_examples: int):
        """The stage's optimizer (Keras's, each variable's update one kernel: :mod:`.optimizers`); a cosine schedule
        decays over ``epochs * ceil(n_examples / batch_size)`` steps (the schedule's step lives in the optimizer, so a
        resumed run continues it exactly)."""
        from .optimizers import FusedAdam, FusedAdamW, FusedSGD
        from .reuse import CosineDecaySteps

        warm = self.warmup_steps(n_examples) if self.schedule == "cosine" else 0
        if warm:
            lr = CosineDecaySteps(0.0, self.decay_steps(n_examples), alpha=self.cosine_alpha,
                                  warmup_target=self.learning_rate, warmup_steps=warm)
        elif self.schedule == "cosine":
            lr = CosineDecaySteps(self.learning_rate, self.decay_steps(n_examples), alpha=self.cosine_alpha)
        else:
            lr = self.learning_rate
        kw = {"global_clipnorm": self.global_clipnorm} if self.global_clipnorm is not None else {}
        if self.weight_decay:
            kw["weight_decay"] = self.weight_decay
        if self.optimizer == "sgd":
            opt = FusedSGD(lr, momentum=self.momentum, **kw)
        else:
            opt = (FusedAdamW if self.weight_decay else FusedAdam)(lr, **kw)
        if self.weight_decay:
            opt.exclude_from_weight_decay(var_names=list(WEIGHT_DECAY_EXEMPT))
        return opt

    def to_dict(self) -> dict[str, Any]:
        """The fields that take effect (``momentum`` only for SGD, ``cosine_alpha`` only for cosine,
        ``warmup_epochs``, ``weight_decay`` and ``ema`` only when not 0, ``global_clipnorm`` and ``bn_momentum`` only
        when set and ``precise_bn`` only when on, so the identity of runs made before they existed is unchanged)."""
        d = dataclasses.asdict(self)
        if self.bn_momentum is None:
            d.pop("bn_momentum")
        if not self.precise_bn:
            d.pop("precise_bn")
        if not self.weight_decay:
            d.pop("weight_decay")
        if not self.ema:
            d.pop("ema")
        if not self.warmup_epochs:
            d.pop("warmup_epochs")
        if self.global_clipnorm is None:
            d.pop("global_clipnorm")
        if self.optimizer != "sgd":
            d.pop("momentum")
        if self.schedule != "cosine":
            d.pop("cosine_alpha")
        return d


STAGE_FIELDS = tuple(f.name for f in dataclasses.fields(Stage) if f.name != "name")
# stage fields that change only how a trained model is evaluated: they enter a result row's identity but not its
# training checkpoints' (like an experiment's EVAL_ONLY_FIELDS)
EVAL_ONLY_STAGE_FIELDS = ("precise_bn",)
# fields that say how to run, not what is computed: they do not enter a run's identity
RUN_ONLY_FIELDS = ("data_dir", "out", "runs_dir", "resume", "verbose", "report_only", "strategy", "tensorboard",
                   "dry_run", "rule")


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """Fields every experiment has. Subclasses add their own (frozen, with defaults)."""

    name: str = "experiment"
    profile: str = "smoke"
    seeds: tuple[int, ...] = (0,)
    stages: tuple[Stage, ...] = (Stage(),)
    weights: str = "none"  # none | imagenet | path to a weights file
    strategy: str = "auto"  # auto | default | mirrored | multiworker | tpu
    # off | bf16 | fp16 | auto (bf16 where the hardware computes it natively; per model: medattn.training.precision)
    mixed_precision: str = "off"
    deterministic: bool = False
    data_dir: str | None = None
    out: str | None = None
    runs_dir: str | None = None
    resume: bool = False
    dry_run: bool = False
    report_only: bool = False
    rule: str | None = None  # --rule FILE: the selection rule this run is judged by (committed before it starts)
    tensorboard: bool = True
    verbose: int = 1  # 0 quiet, 1 a line per epoch (and a bar on a terminal), 2 lines only
    # fields that only choose which arms run (see config_hash); a subclass lists its own
    ARM_FIELDS: ClassVar[tuple[str, ...]] = ()
    # fields that change only how a trained model is evaluated (test-time augmentation): they enter a result row's
    # identity but not its training checkpoints', so --resume evaluates a finished run again without training
    EVAL_ONLY_FIELDS: ClassVar[tuple[str, ...]] = ()
    # fields that enter a run's identity only when they differ from the class default: settings that moved from a
    # script's code into its configuration (its augmentation), so runs made with the same values keep their identity
    IDENTITY_IF_CHANGED: ClassVar[tuple[str, ...]] = ()
    # {name: "STAGE.FIELD"}: stage fields that were top-level fields of this experiment under ``name``. In a run's
    # identity they keep that name (so runs made before keep their identity), ``--set name=V`` still sets them, and a
    # config.json written before is read back into the stage
    STAGE_FIELD_NAMES: ClassVar[Mapping[str, str]] = {}

    def __post_init__(self):
        if not self.profile or not self.profile.replace("-", "_").isidentifier():
            raise ValueError(f"profile must be a name such as smoke, cpu or paper, got {self.profile!r}")
        if self.mixed_precision not in ("off", "bf16", "fp16", "auto"):
            raise ValueError(f"mixed_precision must be off, bf16, fp16 or auto, got {self.mixed_precision!r}")
        if self.strategy not in ("auto", "default", "mirrored", "multiworker", "tpu"):
            raise ValueError(f"strategy must be auto, default, mirrored, multiworker or tpu, got {self.strategy!r}")
        if not self.seeds:
            raise ValueError("seeds must name at least one seed")
        bad = [s for s in self.seeds if not isinstance(s, int) or s < 0]
        if bad:
            raise ValueError(f"seeds must be non-negative integers, got {bad[0]!r}")
        if not self.stages or not all(isinstance(s, Stage) for s in self.stages):
            raise ValueError(f"stages must be a non-empty tuple of Stage, got {self.stages!r}")
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique, got {names}")
        if self.verbose not in (0, 1, 2):
            raise ValueError(f"verbose must be 0, 1 or 2, got {self.verbose!r}")

    @property
    def pretrained(self) -> str | None:
        """``weights`` as the model builders take it: None for ``"none"`` (random), else the name or path."""
        return None if self.weights == "none" else self.weights

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(f"{type(self).__name__} has no stage {name!r}; stages are {[s.name for s in self.stages]}")

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["stages"] = {s.name: {k: v for k, v in s.to_dict().items() if k != "name"} for s in self.stages}
        d["seeds"] = list(self.seeds)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def _hash(d: dict) -> str:
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _class_default(cfg: ExperimentConfig, name: str):
    f = next(f for f in dataclasses.fields(cfg) if f.name == name)
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def _identity_dict(cfg: ExperimentConfig) -> dict:
    """``cfg.to_dict()`` with each stage field of ``STAGE_FIELD_NAMES`` under its top-level name (None when the
    stage leaves it out: unset or off)."""
    d = cfg.to_dict()
    for name, path in cfg.STAGE_FIELD_NAMES.items():
        stage, field = path.split(".")
        d[name] = d["stages"][stage].pop(field, None)
    return d


def _hashed_fields(cfg: ExperimentConfig, exclude) -> dict:
    optional = getattr(cfg, "IDENTITY_IF_SET", ())
    unchanged = {k for k in getattr(cfg, "IDENTITY_IF_CHANGED", ()) if getattr(cfg, k) == _class_default(cfg, k)}
    d = {k: v for k, v in _identity_dict(cfg).items() if k not in exclude and k != "seeds"
         and not (k in optional and v is None) and k not in unchanged}
    w = d.get("weights")
    if isinstance(w, str) and w not in ("none", "imagenet") and Path(w).is_file():
        d["weights"] = "sha256:" + file_sha256(w)  # a weights file by its content, wherever it lies
    return d


def config_hash(cfg: ExperimentConfig, exclude=RUN_ONLY_FIELDS) -> str:
    """SHA-256 (16 hex digits) of everything in ``cfg`` that changes a result. Fields an experiment lists in
    ``IDENTITY_IF_SET`` (options added later that only add evaluations, such as ``--external-data``) enter only
    when set, so runs made before the option existed keep their identity. Fields it lists in ``ARM_FIELDS`` (which
    arms run: protocols, variants, backbones, models) and ``seeds`` never enter: an arm's result does not depend
    on which other arms run beside it, so a row made by ``--set variants=concat`` is reused by the full run."""
    arm_fields = tuple(getattr(cfg, "ARM_FIELDS", ()))
    return _hash(_hashed_fields(cfg, tuple(exclude) + arm_fields))


def legacy_config_hashes(cfg: ExperimentConfig, arm: str | None = None) -> set[str]:
    """The hashes runs made before ``ARM_FIELDS`` existed recorded for this configuration: with the arm fields as
    in ``cfg`` (the same command), and, for ``arm``, with each arm field that lists it reduced to that arm alone
    (a run of that one arm, e.g. ``--set variants=dcat``). ``--resume`` accepts rows with these as well."""
    arm_fields = tuple(getattr(cfg, "ARM_FIELDS", ()))
    if not arm_fields:
        return set()
    d = _hashed_fields(cfg, RUN_ONLY_FIELDS)
    out = {_hash(d)}
    if arm is not None:
        single = {k: [arm] for k in arm_fields if isinstance(d.get(k), list) and arm in d[k]}
        if single:
            out.add(_hash({**d, **single}))
    return out


def coerce_field(cls, name: str, value: Any) -> Any:
    """Convert ``value`` (often a string from the command line) to the declared type of field ``name``."""
    # this module's names (Stage, Any...) as locals too: a config class defined in a script that runs under
    # cProfile or another runner is not in sys.modules["__main__"], so its own module's globals cannot be found
    types = typing.get_type_hints(cls, localns=dict(globals()))
    if name not in types:
        known = ", ".join(sorted(types))
        raise ValueError(f"{cls.__name__} has no field {name!r}; fields are: {known}")
    tp = types[name]
    if value is None:
        return None
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union or origin is UnionType:
        non_none = [a for a in args if a is not type(None)]
        if isinstance(value, str) and value.lower() == "none" and type(None) in args:
            return None
        tp = non_none[0]
        origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is dict or origin is dict:  # --set augment='{"flip": null, "zoom": 0.1}'
        return _json_object(value, name)
    if origin is tuple:
        items = value.split(",") if isinstance(value, str) else list(value)
        item_tp = args[0] if args else str
        return tuple(_scalar(item_tp, v, name) for v in items if str(v).strip() != "")
    return _scalar(tp, value, name)


def _json_object(value, name: str) -> dict:
    if isinstance(value, dict):
        return dict(value)
    try:
        out = json.loads(value)
    except (TypeError, ValueError):
        out = None
    if not isinstance(out, dict):
        raise ValueError(f"field {name!r} expects a JSON object such as '{{\"flip\": null}}', got {value!r}")
    return out


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
    if tp is Stage:
        if isinstance(value, Stage):
            return value
        raise ValueError(f"field {name!r} expects Stage objects; set one stage's field with --set STAGE.FIELD=VALUE")
    try:
        return tp(value) if tp in (int, float, str) else value
    except (TypeError, ValueError) as e:
        raise ValueError(f"field {name!r} expects {tp.__name__}, got {value!r}") from e


def override(cfg: ExperimentConfig, changes: Mapping[str, Any]) -> ExperimentConfig:
    """A copy of ``cfg`` with ``changes`` applied, values coerced to the field types (None values ignored).

    A key that names a :class:`Stage` field (``epochs``) sets it in every stage; ``STAGE.FIELD`` (``seg.epochs``)
    sets one stage's. Stage fields are never top-level fields, so there is no ambiguity."""
    cls = type(cfg)
    top, per_stage = {}, {}
    stage_names = [s.name for s in cfg.stages]
    for k, v in changes.items():
        if v is None:
            continue
        k = cfg.STAGE_FIELD_NAMES.get(k, k)
        if "." in k:
            st, field = k.split(".", 1)
            if st not in stage_names:
                raise ValueError(f"{cls.__name__} has no stage {st!r} (in {k!r}); stages are {stage_names}")
            if field not in STAGE_FIELDS:
                raise ValueError(f"stage field {field!r} (in {k!r}) does not exist; stage fields are: "
                                 f"{', '.join(STAGE_FIELDS)}")
            per_stage.setdefault(st, {})[field] = coerce_field(Stage, field, v)
        elif k in STAGE_FIELDS and k not in typing.get_type_hints(cls):
            for st in stage_names:  # STAGE.FIELD, given before or after, wins over the all-stage value
                per_stage.setdefault(st, {}).setdefault(k, coerce_field(Stage, k, v))
        elif k == "stages" and not isinstance(v, (tuple, list)):
            raise ValueError("stages cannot be set from the command line; set one field with --set STAGE.FIELD=VALUE")
        else:
            top[k] = coerce_field(cls, k, v) if k != "stages" else tuple(v)
    stages = top.pop("stages", cfg.stages)
    if per_stage:
        stages = tuple(dataclasses.replace(s, **per_stage.get(s.name, {})) for s in stages)
    return dataclasses.replace(cfg, stages=stages, **top)


def save_config(cfg: ExperimentConfig, path, extra: Mapping[str, Any] | None = None, drop=()) -> Path:
    """Write ``cfg`` (less the fields named in ``drop``: settings the run does not read) and ``extra``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = {k: v for k, v in cfg.to_dict().items() if k not in drop}
    atomic_write_text(path, json.dumps({"config_class": type(cfg).__name__, **fields, **(extra or {})},
                                        indent=2) + "\n")
    return path


def load_config(cls, path) -> ExperimentConfig:
    """Read ``config.json`` back into ``cls`` (stages included)."""
    data = json.loads(Path(path).read_text())
    data.pop("config_class", None)
    stages = data.pop("stages", None)
    for name, path in cls.STAGE_FIELD_NAMES.items():  # written before the field moved into its stage
        stage, field = path.split(".")
        if name in data and stages is not None:
            value = data.pop(name)
            if value is not None:
                stages.setdefault(stage, {}).setdefault(field, value)
    names = {f.name for f in dataclasses.fields(cls)}
    data = {k: v for k, v in data.items() if k in names}
    cfg = override(cls(), {k: (",".join(map(str, v)) if isinstance(v, list) else v) for k, v in data.items()})
    if stages is not None:
        cfg = dataclasses.replace(cfg, stages=tuple(Stage(name=n, **s) for n, s in stages.items()))
    return cfg
