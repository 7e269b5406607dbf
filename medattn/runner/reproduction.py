"""The one runner every reproduction script stands on.

A script declares what is particular to its paper in a :class:`Reproduction`: its profiles, the paper's numbers,
how to find and load its data, the list of runs (arm x seed), how to run one and how to report. :func:`main` owns
everything else, the same way for every paper:

* the shared command line and profile (:mod:`medattn.training.cli`); a flag the script cannot honour is refused
  with exit code 2 and the reason (``Reproduction.refused``);
* mixed precision, the tf.distribute strategy (models are built and compiled in ``ctx.scope()``; ``ctx.fit``
  uses Keras' ``fit`` or the multi-worker loop), seeds (``--deterministic`` honoured);
* run identity (script, profile, arm, seed, data manifest hash, configuration hash): checkpoints live under
  ``<runs-dir>/<paper>-<profile>/<arm>_s<seed>/<stage>`` with an ``identity.json``; ``--resume`` continues only a
  run of the same identity and refuses (exit 2, naming the field) otherwise; finished runs are rows of
  ``runs.jsonl`` in the results folder, reused by ``--resume`` and by ``--report-only``; settings that change only
  the evaluation (a config's ``EVAL_ONLY_FIELDS``) are left out of the checkpoints' identity, so ``--resume`` with
  a new ``--out`` evaluates finished checkpoints with them instead of training again;
* results folders: ``results/<paper>/`` only for the profile whose results are committed
  (``Reproduction.committed_profile``), ``<runs-dir>/<paper>-<profile>/results`` for the others; ``config.json``
  written when training starts, tables after every run, ``run.json`` with the wall time summed over resumed
  processes and the commit of each;
* ``--dry-run``: the whole pipeline at the profile's model sizes on a handful of images (the script's
  ``load_data`` takes ``ctx.dry_run``), one seed, one epoch of two steps per stage, tables marked DRY RUN;
  ``--weights imagenet`` is checked before anything trains (Keras' cache or the network) and stops with what to
  do, or, in a dry run, says so and builds with random weights;
* user errors (missing data, bad flags, resume mismatch) exit 2 with one line, no traceback.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from ..training.config import ExperimentConfig, Stage, config_hash, save_config
from ..utils import atomic_write_text, import_tensorflow_quietly

__all__ = ["Reproduction", "RunSpec", "Context", "main", "UserError", "DataSource", "ExternalData", "flat_rows",
           "check_augmentation"]


class UserError(Exception):
    """A problem the user can fix (data, flags, resume): reported as one line with exit code 2."""


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One run of a reproduction: an arm (model, protocol, ...) and a seed."""

    arm: str
    seed: int

    @property
    def key(self) -> str:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.arm)
        return f"{safe}_s{self.seed}"


@dataclasses.dataclass
class DataSource:
    """Where the data comes from: a folder, or generated (``synthetic``) data in a temporary folder."""

    path: str | None
    synthetic: bool = False
    cleanup: Callable[[], None] | None = None


@dataclasses.dataclass(frozen=True)
class ExternalData:
    """A second dataset a script evaluates its final models on and never trains on: the runner declares
    ``--external-data PATH`` (the config field ``external_data``), refuses a missing folder, calls ``load(ctx, path)``
    once after the script's own data and logs what it found; the script reads it as ``ctx.external``.

    ``load`` returns a dict with at least ``n`` (images), ``present`` and ``absent`` (class names), and may add a
    ``note`` for the log line; the runner adds ``name`` (the folder's name)."""

    load: Callable[["Context", Path], dict]
    help: str


@dataclasses.dataclass
class Reproduction:
    name: str
    script: str  # the script's __file__: the repository root is its parent's parent
    description: str
    profiles: Mapping[str, ExperimentConfig]
    paper: Mapping[str, Any]
    load_data: Callable[["Context"], Any]
    plan: Callable[[ExperimentConfig], list[RunSpec]]
    run_one: Callable[["Context", RunSpec, Any], dict]
    report: Callable[["Context", list[dict], bool], None]
    dataset: str | None = None  # sub-folder of $MEDATTN_DATA_DIR
    committed_profile: str = "cpu"
    default_profile: str = "cpu"
    profile_without_data: str | None = None  # the default profile when no data is given (e.g. a synthetic demo)
    refused: Mapping[str, str] = dataclasses.field(default_factory=dict)
    backbones: Callable[[ExperimentConfig], list[str]] = lambda cfg: []  # what --weights imagenet must find
    no_data: str = "no data: pass --data-dir or set MEDATTN_DATA_DIR"
    # (cfg) -> (cfg, DataSource): where the data is when none was given (e.g. generated phantoms); None: refuse
    resolve_data: Callable[[ExperimentConfig], tuple[ExperimentConfig, DataSource]] | None = None
    dry_run_overrides: Callable[[ExperimentConfig], Mapping[str, Any]] | None = None
    check: Callable[[ExperimentConfig], None] | None = None  # raises UserError for values the paper cannot run
    extra_flags: Mapping[str, tuple[str, str]] = dataclasses.field(default_factory=dict)  # {"--flag": (field, help)}
    external: ExternalData | None = None  # --external-data: a second dataset, evaluated only
    # (cfg, DataSource) -> name of the dataset, for scripts that take several: runs go to
    # <runs-dir>/<paper>-<profile>-<name>/ and default results to results/<paper>/<name>/, so two datasets never share
    # checkpoints or tables; None: one dataset per script
    dataset_tag: Callable[[ExperimentConfig, DataSource], str] | None = None
    # (cfg, arm) -> [(model name, input size), ...]: the models a run of the arm builds, named as
    # medattn.training.precision names them, so ``--mixed-precision auto`` can train a model measured faster in
    # float32 in float32 (and the run's identity says so)
    models: Callable[[ExperimentConfig, str], list[tuple[str, int]]] = lambda cfg, arm: []
    # (cfg) -> {field: why}: settings of ``cfg`` this run does not read (e.g. a fine-tuning setting when training
    # from scratch); config.json records only what ran, so they are left out of it and named under "not_used", and
    # one the user set to another value than the profile's is refused (_refuse_unused_settings)
    not_used: Callable[[ExperimentConfig], Mapping[str, str]] = lambda cfg: {}
    # {profile: what it is for, its model and sizes}: the one description of each profile, shown by --help (with the
    # committed profile's measured time, read from its run.json) and checked against the paper's page by the tests
    profile_notes: Mapping[str, str] = dataclasses.field(default_factory=dict)


class Context:
    """What a script's ``load_data``, ``run_one`` and ``report`` get: the config and the runner's services."""

    def __init__(self, repro: Reproduction, cfg: ExperimentConfig, *, out: Path, root: Path, strategy, recorder,
                 data: DataSource, data_sha: str | None):
        self.repro, self.cfg, self.out, self.root = repro, cfg, out, root
        self.strategy, self.recorder, self.data = strategy, recorder, data
        self.data_sha = data_sha
        self.audit_rule: str | None = None  # set by audit(): the near-duplicate rule the splits were built on
        self.dry_run = cfg.dry_run
        self.synthetic = data.synthetic
        self.skipped: list[str] = []  # files a loader skipped, named in the tables' footnotes
        self.input_profile: dict | None = None  # the training images' profile, on every saved model's card
        self.class_names: list[str] | dict | None = None  # set by load_data: its labels' names (for messages)
        self.external: dict | None = None  # the --external-data set, as the script's ExternalData.load read it
        from ..training.reuse import ModelPool

        self.pool = ModelPool()
        self.resumed_stages: list[str] = []  # stages of the current run that continued from a checkpoint
        # False while a training process has runs of its plan left (and in --report-only when the training
        # process stopped before its plan was done): the tables' provenance says so
        self.complete: bool | None = None
        self.precision_requested = cfg.mixed_precision
        self._per_model: bool | None = None  # whether medattn.training.precision's exceptions apply here
        self._run_dirs: dict[str, Path] = {}
        self._borrowed: set[str] = set()  # run folders of another results folder whose checkpoints this run reads
        # seconds this process spent building models and training them (tracing happens in the first steps)
        self.phase_s = {"model build": 0.0, "training": 0.0}

    # labels ---------------------------------------------------------------------------------------------------
    @property
    def mark(self) -> str:
        """`` (SYNTHETIC)`` / `` (DRY RUN)`` to append to every title and source name."""
        return "".join(f" ({m})" for m, on in (("SYNTHETIC", self.synthetic), ("DRY RUN", self.dry_run)) if on)

    def log(self, msg: str) -> None:
        if self.cfg.verbose or msg.startswith("!"):
            print(f"[{self.repro.name}] {msg}", flush=True)

    # seeds, strategy, models ----------------------------------------------------------------------------------
    def seed(self, seed: int) -> None:
        from ..training.seed import set_seed

        set_seed(seed, self.cfg.deterministic)

    def scope(self):
        return self.strategy.scope()

    def precision(self, model: str, size: int) -> str:
        """The precision model ``model`` at input ``size`` trains in (the run's, or float32 where ``auto`` met a
        model measured faster in float32 here: :mod:`medattn.training.precision`)."""
        from ..training.precision import cpu_per_model_precision, model_precision, precision_key

        if self.precision_requested != "auto" or self.cfg.mixed_precision != "bf16":
            return self.cfg.mixed_precision
        if self._per_model is None:
            self._per_model = cpu_per_model_precision()
        return model_precision(self.cfg.mixed_precision, self.precision_requested, precision_key(model, size),
                               per_model=self._per_model)

    def precision_overrides(self, arm: str) -> dict[str, str]:
        """``{model@size: precision}`` for the models of ``arm`` that do not train in the run's precision."""
        from ..training.precision import precision_key

        return {precision_key(m, s): p for m, s in self.repro.models(self.cfg, arm)
                if (p := self.precision(m, s)) != self.cfg.mixed_precision}

    def precision_scope(self, model: str, size: int):
        """Build ``model`` inside this block: its layers take the precision :meth:`precision` gives."""
        from ..training.precision import policy_scope

        return policy_scope(self.precision(model, size))

    def build(self, builder: Callable[[], Any], stage: Stage, n_examples: int, loss, metrics=(), *,
              reuse: Any = None, precision: tuple[str, int] | None = None, **compile_kwargs):
        """``builder()`` compiled with the stage's optimizer, inside the strategy's scope.

        ``precision``: ``(model, input size)`` as the script's ``models`` names it; the model is built in the
        precision :meth:`precision` gives (default: the run's).

        ``reuse``: a key naming the architecture (whatever ``builder`` depends on, and the loss and metrics).
        Every later build with the same key and stage in this run returns the first model, reset to the state a
        fresh ``builder()`` would have (initial weights, optimizer, schedule length for ``n_examples``), so Keras
        does not trace its steps again (:class:`medattn.training.reuse.ModelPool`)."""
        def compile_fn(model):
            model.compile(optimizer=stage.make_optimizer(n_examples), loss=loss,
                          metrics=metrics if isinstance(metrics, dict) else list(metrics),
                          **compile_kwargs)

        t0 = time.time()
        try:
            with self.scope(), (self.precision_scope(*precision) if precision else contextlib.nullcontext()):
                if reuse is None:
                    model = builder()
                    compile_fn(model)
                    return model
                return self.pool.get((reuse, stage), builder, compile_fn, stage.decay_steps(n_examples),
                                     stage.warmup_steps(n_examples))
        finally:
            self.phase_s["model build"] += time.time() - t0

    # checkpoints and fit --------------------------------------------------------------------------------------
    def _checkpoint_cfg(self):
        """The configuration with the experiment's ``EVAL_ONLY_FIELDS`` and every stage's
        ``EVAL_ONLY_STAGE_FIELDS`` (settings that change only how a trained model is evaluated, such as test-time
        augmentation or precise BatchNorm statistics) at their defaults: what the training depended on."""
        from ..training.config import EVAL_ONLY_STAGE_FIELDS

        fields = {f.name: f for f in dataclasses.fields(self.cfg)}
        reset = {k: (fields[k].default if fields[k].default is not dataclasses.MISSING else fields[k].default_factory())
                 for k in getattr(self.cfg, "EVAL_ONLY_FIELDS", ())}
        stage_defaults = {f.name: f.default for f in dataclasses.fields(Stage) if f.name in EVAL_ONLY_STAGE_FIELDS}
        reset["stages"] = tuple(dataclasses.replace(s, **stage_defaults) for s in self.cfg.stages)
        return dataclasses.replace(self.cfg, **reset)

    def identity(self, spec: RunSpec, checkpoint: bool = False) -> dict:
        """A run's identity: a row's (every setting) or, with ``checkpoint``, its training checkpoints' (the
        evaluation-only settings left out, so a finished run can be evaluated again with them, e.g. ``--set
        tta=dihedral --resume --out NEW``, without training again)."""
        from ..datasets.audit import audit_rule

        cfg = self._checkpoint_cfg() if checkpoint else self.cfg
        ident = {"script": self.repro.name, "profile": self.cfg.profile, "arm": spec.arm, "seed": spec.seed,
                 "data_sha256": self.data_sha, "config_sha256": config_hash(cfg)}
        # splits built on the audit's groups: another rule, another split. The hash-only rule every run used
        # before the second tier existed is left out, so those runs keep their identity.
        if self.audit_rule not in (None, audit_rule()):
            ident["audit"] = self.audit_rule
        # a model trained in another precision than the run's is another run; absent when there is none, so runs
        # from before per-model precision keep their identity
        overrides = self.precision_overrides(spec.arm)
        if overrides:
            ident["model_precision"] = overrides
        return ident

    def identity_diff(self, stored: dict, spec: RunSpec, checkpoint: bool = False) -> list[str]:
        """The identity fields in which ``stored`` (a row's or, with ``checkpoint``, a checkpoint's) differs from
        ``spec``'s run now. A configuration hash recorded before the arm fields left the hash
        (:func:`legacy_config_hashes`) counts as the same configuration. A finished row without
        ``model_precision`` ran every model in the run's precision (its configuration hash): it is kept where a
        per-model exception would now train one in float32 (rows made before the exceptions existed stay
        reusable); a row or checkpoint made with an exception is another run wherever that exception differs,
        and a checkpoint never continues in another precision than it started in."""
        from ..training.config import legacy_config_hashes

        ident = self.identity(spec, checkpoint)
        diff = [k for k in ident if stored.get(k) != ident[k]]
        if "model_precision" in stored and "model_precision" not in ident:
            diff.append("model_precision")
        if "model_precision" in diff and "model_precision" not in stored and not checkpoint:
            diff.remove("model_precision")
        cfg = self._checkpoint_cfg() if checkpoint else self.cfg
        if "config_sha256" in diff and stored.get("config_sha256") in legacy_config_hashes(cfg, spec.arm):
            diff.remove("config_sha256")
        return diff

    def run_dir(self, spec: RunSpec) -> Path:
        """The run's folder of checkpoints and models. It belongs to one results folder (``owner.txt``): when
        ``<root>/<arm>_s<seed>`` belongs to another (a run with another ``--out``), this run's folder is
        ``<arm>_s<seed>-<8 hex digits of its results folder>``, so neither overwrites the other's models. One
        exception: ``--resume`` with checkpoints of the same training there (an evaluation-only setting with a new
        ``--out``) reads them where they are, and its models go to its own folder (:meth:`model_dir`)."""
        if spec.key not in self._run_dirs:
            plain = self.root / spec.key
            owner = plain / "owner.txt"
            if owner.is_file() and owner.read_text().strip() != str(self.out):
                ident = plain / "identity.json"
                if self.cfg.resume and ident.is_file() and not self.identity_diff(
                        json.loads(ident.read_text()), spec, checkpoint=True):
                    self._borrowed.add(spec.key)
                else:
                    plain = self._own_dir(spec)
            self._run_dirs[spec.key] = plain
        return self._run_dirs[spec.key]

    def _own_dir(self, spec: RunSpec) -> Path:
        import hashlib

        return self.root / f"{spec.key}-{hashlib.sha256(str(self.out).encode()).hexdigest()[:8]}"

    def model_dir(self, spec: RunSpec) -> Path:
        """Where the run's saved models go: its folder's ``models/``, or its own folder's when it reads another
        results folder's checkpoints (:meth:`run_dir`)."""
        d = self.run_dir(spec)
        return (self._own_dir(spec) if spec.key in self._borrowed else d) / "models"

    def prepare_run_dir(self, spec: RunSpec) -> Path:
        """The run's checkpoint folder, checked against (or stamped with) the run's identity."""
        d = self.run_dir(spec)
        ident = self.identity(spec, checkpoint=True)
        path = d / "identity.json"
        if d.exists() and self.cfg.resume and path.exists():
            stored = json.loads(path.read_text())
            diff = self.identity_diff(stored, spec, checkpoint=True)
            if diff:
                what = _what_differs(diff[0], stored, ident, stored.get("config"), self._checkpoint_cfg())
                raise UserError(f"--resume: the checkpoints in {d} belong to another run ({what}); drop --resume to "
                                f"start over or pass --runs-dir to keep both")
        elif d.exists() and not self.cfg.resume:
            shutil.rmtree(d)
        d.mkdir(parents=True, exist_ok=True)
        # the settings behind the hash, so a refused resume can name the one that changed
        settings = _comparable_settings(self._checkpoint_cfg())
        if spec.key not in self._borrowed:
            # the commit the checkpoints were trained at (kept when a later process resumes or re-evaluates them)
            trained_at = (json.loads(path.read_text()).get("git_commit") if path.exists() and self.cfg.resume
                          else None) or self.recorder.meta.get("git_commit")
            atomic_write_text(path, json.dumps({**ident, "config": settings, "git_commit": trained_at}, indent=1,
                                               default=str) + "\n")
            atomic_write_text(d / "owner.txt", f"{self.out}\n")
        return d

    def fit(self, model, data, stage: Stage, ckpt: Path, *, label: str, **kwargs):
        """:func:`medattn.training.fit` with the stage's epochs, batch, patience, weight average and BatchNorm
        momentum, the strategy, resume, TensorBoard and progress settings; a dry run trains one epoch of two steps,
        eagerly (its models' steps are never traced as graphs: the smoke profile's runs check that)."""
        from ..training.batchnorm import set_bn_momentum
        from ..training.fit import fit

        if stage.bn_momentum is not None:  # before the train step is traced: the momentum is a constant in it
            set_bn_momentum(model, stage.bn_momentum)
        if self.dry_run and "TPU" not in type(self.strategy).__name__:  # two steps: tracing a paper-size graph costs
            model.run_eagerly = True  # more than running them eagerly (a TPU runs graphs only)

        epochs = 1 if self.dry_run else stage.epochs
        steps = 2 if self.dry_run else kwargs.pop("steps_per_epoch", None)
        kwargs.pop("steps_per_epoch", None)
        t0 = time.time()
        res = fit(model, data, epochs=epochs, ckpt_dir=ckpt, resume=self.cfg.resume, patience=stage.patience,
                  ema=stage.ema, verbose=self.cfg.verbose, strategy=self.strategy, batch_size=stage.batch_size,
                  tensorboard=self.cfg.tensorboard, label=f"{self.repro.name} {label}", steps_per_epoch=steps,
                  **kwargs)
        self.phase_s["training"] += time.time() - t0
        if res.get("resumed_from"):  # the row's wall time then covers only this process's part
            self.resumed_stages.append(f"{label}: after epoch {res['resumed_from']}")
        return res

    def precise_bn(self, model, stage: Stage, x, *, seed: int, label: str, rows=None, preprocess=None) -> dict | None:
        """With the stage's ``precise_bn`` on, the model's trainable BatchNorm statistics recomputed over its training
        inputs ``x`` (``x[rows]`` when ``rows`` is given; :func:`medattn.training.batchnorm.recompute_bn_statistics_from_arrays`:
        shuffled by ``seed``, no augmentation, batches of the stage's size, ``preprocess`` as in training) and
        logged; ``{"layers", "images"}``, or None when off."""
        if not stage.precise_bn:
            return None
        import numpy as np

        from ..training.batchnorm import recompute_bn_statistics_from_arrays

        if rows is not None:
            x = x[np.asarray(rows)]

        t0 = time.time()
        info = recompute_bn_statistics_from_arrays(model, x, stage.batch_size, seed=seed, preprocess=preprocess,
                                                   progress=self.cfg.verbose == 1 and sys.stdout.isatty())
        self.log(f"{label}: precise BatchNorm statistics, {info['layers']} layers over {info['images']} training "
                 f"inputs ({time.time() - t0:.0f} s)")
        return info

    def handful(self, records, per_class: int):
        """In a dry run, the first ``per_class`` records of each class; otherwise all of them."""
        if not self.dry_run:
            return records
        labels = sorted({r.label for r in records})
        return [r for c in labels for r in [r for r in records if r.label == c][:per_class]]

    def audit(self, records, root, verify=()):
        """The leakage audit of ``records`` (``medattn.datasets.audit.audit_records``, with the dataset's
        second-tier ``verify``, e.g. ``audit.DATASET_VERIFY["busi"]``); every file it could not read is logged
        and kept in ``self.skipped`` for the tables' footnotes."""
        from ..datasets.audit import audit_records

        audit = audit_records(records, Path(root), verify=verify)
        self.audit_rule = audit["rule"]
        self.recorder.meta["audit_rule"] = audit["rule"]
        if audit.get("corrupt"):
            self.skipped.extend(audit["corrupt"])
            self.log(f"! skipped {len(audit['corrupt'])} unreadable file(s): " + "; ".join(audit["corrupt"]))
        from ..datasets.core import CONTENT_PROBLEMS

        bad = [m for k in ("mask_mismatch", *CONTENT_PROBLEMS) for m in audit.get(k, [])]
        if bad:  # images the audit found unusable (a mask of another size, too small, transparent, empty or full mask)
            self.skipped.extend(bad)
            self.log(f"! skipped {len(bad)} unusable image(s): " + "; ".join(bad))
        return audit

    def prediction_file(self, arm: str, seed: int) -> Path:
        """``<results>/predictions/<run key>.npz``: where a run's predictions go (the folder is created), the one
        name every script, table and :mod:`medattn.evaluation.recompute` uses."""
        folder = self.out / "predictions"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{RunSpec(arm, seed).key}.npz"

    def part_file(self, spec: RunSpec, name: str) -> Path:
        """``<results>/parts/<run key>/<name>.npz``: what a finished part of a run (a fold) gives the rest of it."""
        return self.out / "parts" / spec.key / f"{name}.npz"

    def save_part(self, spec: RunSpec, name: str, arrays: Mapping[str, Any], **facts) -> None:
        """Keep a finished part of a run (``arrays`` and JSON ``facts``) in the results folder until the run's row
        is written, stamped with the run's identity (every setting, the evaluation's too: a part holds predictions)
        and this commit: ``--resume`` then takes it instead of training the part again, even where its checkpoints
        are gone (another machine, a cleared ``--runs-dir``). Written under a temporary name first, so an
        interrupted write leaves no part."""
        import numpy as np

        path = self.part_file(spec, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        stamp = {"identity": self.identity(spec), "config": _comparable_settings(self.cfg),
                 "git_commit": self.recorder.meta.get("git_commit"), **facts}
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
        try:
            np.savez_compressed(tmp, facts=np.array(json.dumps(stamp, default=str)), **arrays)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def saved_part(self, spec: RunSpec, name: str) -> dict | None:
        """With ``--resume``, a part :meth:`save_part` kept for this run: its arrays and, under ``"facts"``, its
        facts (the run record lists it among the resumed stages); None without ``--resume`` or part. A part of
        another run (other settings or data) stops the run with one line (UserError)."""
        import numpy as np

        path = self.part_file(spec, name)
        if not self.cfg.resume or not path.is_file():
            return None
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files if k != "facts"}
            facts = json.loads(str(z["facts"]))
        diff = self.identity_diff(facts["identity"], spec)
        if diff:
            what = _what_differs(diff[0], facts["identity"], self.identity(spec), facts.get("config"), self.cfg)
            raise UserError(f"--resume: {path} is a part of another run ({what}); drop --resume to start over or "
                            f"pass --out to keep both")
        trained_at = str(facts.get("git_commit"))[:7]
        self.resumed_stages.append(f"{name}: its saved part (trained at {trained_at})")
        self.log(f"{spec.arm} s{spec.seed} {name}: taken from {path} (trained at {trained_at}), not trained again")
        return {**arrays, "facts": facts}

    def profile_inputs(self, files=None, images=None) -> None:
        """Record what the training images look like on disk (:mod:`medattn.datasets.profile`: greyscale or
        colour, sizes, mean intensity) from their ``files`` or, for a dataset of arrays, the ``images``; every model
        saved afterwards carries it on its card, and ``medattn-predict`` warns about inputs unlike it."""
        from ..datasets.profile import profile_of_arrays, profile_of_files

        if files is not None and len(files):
            self.input_profile = profile_of_files(files)
        elif images is not None and len(images):
            self.input_profile = profile_of_arrays(images)

    def save_model(self, model, run: RunSpec, name: str, **card) -> Path | None:
        """The trained ``model`` as ``<run dir>/models/<name>.keras`` with its JSON card
        (:func:`medattn.saving.save_model_card`: ``kind``, ``input_size``, ``preprocessing``, ``class_names`` and
        whatever else is given, plus the run's provenance). Dry runs save nothing (the paper profile's models are
        hundreds of MB); the path is logged."""
        from ..saving import save_model_card

        if self.dry_run:
            return None
        path = self.model_dir(run) / f"{name}.keras"
        card = {**card, "paper": self.repro.name, "profile": self.cfg.profile, "arm": run.arm, "seed": run.seed,
                "weights": self.cfg.weights, **_weights_provenance(self.cfg.weights),
                "data_manifest_sha256": self.data_sha, **({"input_profile": self.input_profile}
                                                          if self.input_profile and "input_profile" not in card else {}),
                "config_sha256": config_hash(self.cfg), "synthetic": self.synthetic,
                "saved": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        save_model_card(model, path, card)
        models = self.recorder.meta.setdefault("models", [])
        if str(path) not in models:
            models.append(str(path))  # run.json lists the model files its tables describe
        self.log(f"saved {path}")
        return path

    def write_comparison(self, comparison, *, title: str, description: str, meta: dict | None = None) -> None:
        """``comparison.{csv,json,md}`` in the results folder: our figures beside the paper's, one row per metric and
        source (:func:`medattn.evaluation.comparison_rows`). ``comparison`` is ``{source: {metric: value, or (value,
        low, high)}}``, compared with ``Reproduction.paper``; or, for a paper that reports several models or
        datasets, blocks ``[(model, the paper's figures for it, sources), ...]``, each metric then named ``"<model>
        <metric>"`` (a block whose model is None keeps the metric's own name)."""
        from ..evaluation import comparison_rows, write_table

        blocks = comparison if isinstance(comparison, list) else [(None, self.repro.paper, comparison)]
        rows = []
        for model, paper, sources in blocks:
            for r in comparison_rows(paper, sources):
                rows.append({**r, "metric": r["metric"] if model is None else f"{model} {r['metric']}"})
        write_table(self.out, "comparison", rows, kind="comparison", title=title, description=description,
                    meta=self.meta if meta is None else meta)

    def predict(self, model, x, batch_size: int = 32):
        from ..training.custom_loop import predict

        return predict(model, x, batch_size)

    @property
    def meta(self) -> dict:
        """Provenance for every table: the recorder's snapshot plus what marks these numbers."""
        # complete: False in the tables written while a process has runs of its plan left, and in --report-only
        # when the training process stopped before its plan was done
        m = {**self.recorder.snapshot(), "synthetic": self.synthetic, "dry_run": self.dry_run,
             "complete": self.complete is not False}
        if self.skipped:
            m["skipped_files"] = list(self.skipped)
        return m


def _repo_root(script: str) -> Path:
    return Path(script).resolve().parents[1]


def _rows(path: Path) -> list[dict]:
    """Finished runs; rows written before runs had an ``arm`` name it from their ``model`` / ``protocol``."""
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    # strict JSON stores NaN as null; the tables' code computes with NaN
    rows = [{k: (float("nan") if v is None else v) for k, v in r.items()} for r in rows]
    return [r if "arm" in r else {"arm": r.get("model", r.get("protocol")), **r} for r in rows]


def flat_rows(rows: list[dict]) -> list[dict]:
    """Rows for a CSV table: lists as JSON text, the identity dict left out (it is in ``runs.jsonl``)."""
    return [{k: (json.dumps(v) if isinstance(v, (list, tuple)) else v) for k, v in r.items() if k != "identity"}
            for r in rows]


def _append_row(path: Path, row: dict) -> None:
    """Append one JSON line atomically (the whole file is rewritten through a temporary file)."""
    from ..utils import to_jsonable

    text = path.read_text() if path.exists() else ""
    atomic_write_text(path, text + json.dumps(to_jsonable(row), allow_nan=False) + "\n")


def _refuse_unused_settings(repro: Reproduction, cfg) -> None:
    """A setting the script's ``not_used`` names for this configuration, given by the user at another value than
    the profile's, would change nothing, silently: refused, naming the field and why it is not read."""
    base = repro.profiles.get(cfg.profile)
    if base is None:
        return
    for field, why in dict(repro.not_used(cfg)).items():
        val = getattr(cfg, field)
        if val != getattr(base, field):
            raise UserError(f"{field}={val!r} is not read by this run ({why}): drop it (the profile's "
                            f"{getattr(base, field)!r} is what config.json leaves out)")


def main(repro: Reproduction, argv=None) -> int:
    """Run ``repro`` from the command line ``argv``; returns the exit code. Keras' global dtype policy, which the
    run sets from ``--mixed-precision``, is put back as it was when the run ends (a caller in the same process, a
    notebook or a test, keeps its own precision)."""
    _MAIN_STARTED[:] = [time.time()]
    keras = sys.modules.get("keras")  # imported after the command line is parsed: --help answers at once
    policy = keras.mixed_precision.global_policy() if keras else None
    locks_before = set(_HELD_LOCKS)
    try:
        return _main(repro, argv)
    except UserError as e:
        print(f"{Path(repro.script).name}: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk, no permission: one line naming the path; finished runs are kept
        print(f"{Path(repro.script).name}: {e}", file=sys.stderr)
        return 1
    except Exception as e:
        from ..training.fit import ReplicaSplitError, TrainingDiverged

        if not isinstance(e, (TrainingDiverged, ReplicaSplitError)):
            raise
        print(f"{Path(repro.script).name}: {e}", file=sys.stderr)  # a diverging loss, a batch the replicas cannot share
        return 1 if isinstance(e, TrainingDiverged) else 2
    finally:
        if policy is not None:
            sys.modules["keras"].mixed_precision.set_global_policy(policy)
        for key in set(_HELD_LOCKS) - locks_before:  # the folders this call locked
            _HELD_LOCKS.pop(key).close()


def _main(repro: Reproduction, argv) -> int:
    from ..datasets.core import DatasetError
    from ..datasets.splits import TooFewToSplit
    from ..training.custom_loop import needs_custom_loop, worker_index
    from ..training.strategy import get_strategy, resolve_mixed_precision, set_mixed_precision

    argv = list(sys.argv[1:] if argv is None else argv)
    cfg, args = _parse(repro, argv)
    cfg, source = _data_source(repro, cfg)
    cfg, weights_note = _checked_weights(repro, cfg)
    root, out, rule = _folders(repro, cfg, source)
    # the strategy comes first: splitting the CPU into logical devices must happen before TensorFlow starts
    strategy = get_strategy(cfg.strategy)
    averaged = [st.name for st in cfg.stages if st.ema]
    if averaged and needs_custom_loop(strategy):
        raise UserError(f"ema (a moving average of the weights; stage {', '.join(averaged)}) is not supported under "
                        f"the multi-worker strategy: set ema=0 or train on one machine")
    if worker_index(strategy) == 0:  # one process per runs folder and per results folder (held until it ends)
        hold_folder_lock(root)
        if not cfg.report_only:
            hold_folder_lock(out)
    else:  # other workers compute the same thing; only the chief writes results
        out = Path(tempfile.mkdtemp(prefix=f"{repro.name}-worker-"))
    precision_requested = cfg.mixed_precision
    cfg = dataclasses.replace(cfg, mixed_precision=resolve_mixed_precision(cfg.mixed_precision))
    set_mixed_precision(cfg.mixed_precision)
    ctx = _context(repro, cfg, argv, source, root, out, rule, strategy)
    if precision_requested != cfg.mixed_precision:
        ctx.log(f"--mixed-precision {precision_requested}: {cfg.mixed_precision} on this machine")
    _log_onednn(ctx)
    ctx.precision_requested = precision_requested
    ctx.config_changes = args.config_changes
    try:
        return _run(repro, cfg, ctx, out / "runs.jsonl", weights_note, DatasetError)
    except TooFewToSplit as e:  # too few images of a class for the splits: one line naming it, exit 2
        raise UserError(e.message(ctx.class_names)) from None
    finally:
        if source.cleanup:
            source.cleanup()


def _parse(repro: Reproduction, argv: list[str]):
    """The command line as ``(cfg, args)``; Keras is imported after it (and timed): ``--help`` answers at once."""
    from ..training.cli import build_parser, default_data_dir, parse_config

    has_data = any(a == "--data-dir" or a.startswith("--data-dir=") for a in argv) or bool(
        repro.dataset and default_data_dir(repro.dataset))
    default = repro.default_profile if has_data or not repro.profile_without_data else repro.profile_without_data
    flags = dict(repro.extra_flags)
    if repro.external is not None:
        flags["--external-data"] = ("external_data", repro.external.help)
    parser = build_parser(repro.description + profiles_help(repro), tuple(repro.profiles), default_profile=default,
                          prog=Path(repro.script).name, extra_flags=flags)
    cfg, args = parse_config(repro.profiles, argv, dataset=repro.dataset, refused=repro.refused, parser=parser)
    if not _MAIN_STARTED[1:] and "keras" not in sys.modules:  # Keras and TensorFlow, timed as a phase of their own
        t0 = time.time()
        import_tensorflow_quietly()  # without the lines its C++ libraries print on import (the run logs its kernels)
        import keras  # noqa: F401

        _MAIN_STARTED.append(time.time() - t0)
    return cfg, args


def _data_source(repro: Reproduction, cfg):
    """Where the data is, the dry run's settings, and the script's and runner's refusals of settings that cannot
    run."""
    if cfg.data_dir is None and repro.resolve_data is None:
        raise UserError(repro.no_data)
    if repro.resolve_data is not None:
        cfg, source = repro.resolve_data(cfg)
    else:
        source = DataSource(cfg.data_dir)
    if source.path is not None and not Path(source.path).exists():
        raise UserError(f"--data-dir {source.path}: no such folder")
    if cfg.dry_run:
        cfg = dataclasses.replace(cfg, resume=False, seeds=cfg.seeds[:1],
                                  **dict(repro.dry_run_overrides(cfg) if repro.dry_run_overrides else {}))
    if repro.check is not None:
        repro.check(cfg)
    _refuse_unused_settings(repro, cfg)
    if not cfg.report_only and all(st.epochs < 1 for st in cfg.stages):
        raise UserError(f"every training stage has {min(st.epochs for st in cfg.stages)} epochs: nothing would "
                        f"train, and the tables would report untrained models; give --epochs 1 or more")
    return cfg, source


def _checked_weights(repro: Reproduction, cfg):
    """``--weights`` checked before anything trains: ImageNet in Keras' cache or reachable (a dry run goes on with
    random weights and says so), HED's package installed, a file present. Returns ``(cfg, note)``."""
    if cfg.weights == "imagenet":
        from ..backbones import imagenet_weights_status

        problems = imagenet_weights_status(repro.backbones(cfg))
        if problems and not cfg.dry_run:
            raise UserError("--weights imagenet cannot be loaded here: " + "; ".join(problems))
        if problems:
            print(f"[{repro.name}] DRY RUN: --weights imagenet would stop a real run here: " + "; ".join(problems)
                  + ". The dry run goes on with random weights.", flush=True)
            return dataclasses.replace(cfg, weights="none"), problems
    elif cfg.weights == "hed":
        from ..backbones import hed_weights_file

        try:
            hed_weights_file()
        except ValueError as e:
            raise UserError(f"--weights hed: {e}") from None
    elif cfg.weights not in ("none", "imagenet") and not Path(cfg.weights).is_file():
        raise UserError(f"--weights {cfg.weights}: no such file (give none, imagenet, hed or a weights file)")
    return cfg, None


def _folders(repro: Reproduction, cfg, source: DataSource):
    """``(root, out, rule)``: the run folders' root, the results folder and the checked selection rule. The
    committed profile on real data writes ``results/<paper>/``; everything else, and every selection run (a
    script's ``selection`` field: settings chosen without the test split), writes under ``runs/``."""
    repo = _repo_root(repro.script)
    rule = selection_rule(cfg.rule, repo) if cfg.rule and not cfg.report_only else None
    runs_dir = Path(cfg.runs_dir).resolve() if cfg.runs_dir else repo / "runs"
    data_tag = repro.dataset_tag(cfg, source) if repro.dataset_tag is not None else None
    selection = bool(getattr(cfg, "selection", False))
    tag = f"{repro.name}-{'synthetic' if source.synthetic and cfg.profile != 'smoke' else cfg.profile}" + \
        (f"-{data_tag}" if data_tag else "") + ("-selection" if selection else "") + ("-dryrun" if cfg.dry_run else "")
    root = runs_dir / tag
    committed = cfg.profile == repro.committed_profile and not cfg.dry_run and not source.synthetic and not selection
    results = repo / "results" / repro.name / (data_tag or "")
    out = Path(cfg.out).resolve() if cfg.out else (results if committed else root / "results")
    return root, out, rule


def _context(repro: Reproduction, cfg, argv, source: DataSource, root: Path, out: Path, rule, strategy) -> Context:
    """The run's Context with its recorder (the processes before this one kept when resuming or reporting)."""
    from ..training.records import RunRecorder, dataset_fingerprint

    fp = dataset_fingerprint(source.path) if not source.synthetic else None
    data_sha = fp["sha256"] if fp else ("synthetic" if source.synthetic else None)
    previous, prev = [], {}
    if (cfg.resume or cfg.report_only) and (out / "run.json").exists():
        prev = json.loads((out / "run.json").read_text())
        previous = prev.get("processes") or [{k: prev.get(k) for k in ("command", "git_commit", "started",
                                                                        "wall_time_s")}]
    recorder = RunRecorder(out, previous=previous, profile=cfg.profile, seeds=cfg.seeds,
                           data_dir=None if source.synthetic else source.path,
                           argv=[f"reproductions/{Path(repro.script).name}"] + argv,
                           extra={"strategy": type(strategy).__name__, "replicas": strategy.num_replicas_in_sync,
                                  **_weights_provenance(cfg.weights), **({"rule": rule} if rule else {})})
    if prev.get("models"):  # the models of the runs --resume keeps
        recorder.meta["models"] = list(prev["models"])
    ctx = Context(repro, cfg, out=out, root=root, strategy=strategy, recorder=recorder, data=source,
                  data_sha=data_sha)
    ctx.previous_run = prev  # run.json of the processes before this one ({} if none)
    if fp and fp.get("differs"):
        ctx.log(f"! {source.path} differs from its {Path(fp['manifest']).name} ({'; '.join(fp['differs'])}): the "
                f"run records a hash of the files' contents instead, so --resume treats it as other data")
    return ctx


def measured_time(repro: Reproduction) -> list[str]:
    """The committed profile's measured time, one line per committed results folder: the training processes' wall
    time summed from its ``run.json``, and the machine."""
    root = _repo_root(repro.script) / "results" / repro.name
    lines = []
    for run_json in sorted([root / "run.json", *root.glob("*/run.json")]):
        if not run_json.is_file() or "selection" in run_json.parts or run_json.parent.name.startswith("earlier_"):
            continue
        run = json.loads(run_json.read_text())
        machine = run.get("machine") or {}
        if run.get("profile") != repro.committed_profile or not run.get("wall_time_s") or run.get("complete") is False:
            continue  # another profile's, or a table still being made
        lines.append(f"{run['wall_time_s'] / 3600:.1f} h of training on a {machine.get('cores', '?')}-core "
                     f"{machine.get('cpu', '?')} ({run_json.relative_to(root.parents[1])})")
    return lines


def profiles_help(repro: Reproduction) -> str:
    """The profiles' section of ``--help``: :attr:`Reproduction.profile_notes` and the measured time."""
    if not repro.profile_notes:
        return ""
    lines = ["", "", "Profiles:"]
    for name, note in repro.profile_notes.items():
        lines.append(f"  {name}: {note}")
        if name == repro.committed_profile:
            lines += [f"    measured: {t}" for t in measured_time(repro)]
    return "\n".join(lines)


def selection_rule(path: str, repo: Path) -> dict:
    """The selection rule file a run is judged by, checked to be committed and unmodified in ``repo`` (so git shows
    it was written before the run); its path, last commit and commit time. UserError (exit 2) otherwise."""
    from ..training.records import _git

    f = Path(path).resolve()
    try:
        rel = f.relative_to(repo.resolve())
    except ValueError:
        raise UserError(f"--rule {path}: the rule must be a file of this repository ({repo})") from None
    if not f.is_file():
        raise UserError(f"--rule {path}: no such file")
    if _git("ls-files", "--error-unmatch", str(rel), cwd=repo) is None:
        raise UserError(f"--rule {path}: not committed; commit the rule before its run")
    if _git("diff", "--quiet", "HEAD", "--", str(rel), cwd=repo) is None:
        raise UserError(f"--rule {path}: modified since its last commit; commit the rule before its run")
    commit, stamp = (_git("log", "-1", "--format=%H %ct", "--", str(rel), cwd=repo) or " 0").split(" ", 1)
    # the format of run.json's ``started``, so the two compare as text
    return {"file": str(rel), "commit": commit,
            "committed": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(int(stamp)))}


def _comparable_settings(cfg) -> dict:
    """``cfg``'s settings that enter its identity, as plain JSON values (stages by name)."""
    from ..training.config import RUN_ONLY_FIELDS

    return {k: v for k, v in json.loads(json.dumps(cfg.to_dict(), default=str)).items()
            if k not in RUN_ONLY_FIELDS and k != "seeds"}


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _what_differs(field: str, stored: dict, ident: dict, recorded: dict | None, cfg) -> str:
    """The identity field that differs; for the configuration hash, the settings behind it that differ (from the
    settings recorded with the finished run, when there are any), each with both values."""
    if field != "config_sha256" or not recorded:
        return f"{field}: {stored.get(field)!r} there, {ident.get(field)!r} now"
    there, now = _flat(recorded), _flat(_comparable_settings(cfg))
    changed = [k for k in now if k in there and there[k] != now[k]] + [k for k in now if k not in there]
    if not changed:
        return f"{field}: {stored.get(field)!r} there, {ident.get(field)!r} now"
    return "; ".join(f"{k}: {there.get(k)!r} there, {now[k]!r} now" for k in changed[:5])


def check_augmentation(**augmentations: dict) -> None:
    """Refuse (UserError, one line naming the field) an augmentation the augmenter would refuse: each keyword is a
    configuration field, its value the arguments of :func:`medattn.datasets.pipeline.augmenter`."""
    from ..datasets.pipeline import augmenter

    for field, aug in augmentations.items():
        try:
            augmenter(**aug)
        except (TypeError, ValueError) as e:
            raise UserError(f"{field}: {e}") from None


_HELD_LOCKS: dict[str, object] = {}


def hold_folder_lock(folder: Path):
    """An advisory lock (``fcntl.flock`` on ``<folder>/.lock``, which holds the process id) held until this process
    ends or :func:`main` returns; another process that holds it makes this one stop with a UserError naming that
    process. Taking a lock this process already holds is a no-op."""
    import fcntl
    import os

    folder = Path(folder)
    key = str(folder.resolve())
    if key in _HELD_LOCKS:
        return _HELD_LOCKS[key]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ".lock"
    f = open(path, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "unknown"
        f.close()
        raise UserError(f"{folder} is in use by another process (pid {holder}, {path}); wait for it to finish, "
                        f"or give another --runs-dir/--out") from None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    _HELD_LOCKS[key] = f
    return f


def _log_onednn(ctx) -> None:
    """One line: whether TensorFlow's oneDNN CPU kernels run, and who chose (``medattn/__init__.py``)."""
    import os

    import medattn

    onednn = medattn.onednn_enabled()
    if onednn is not None:
        who = "set by medattn" if medattn.ONEDNN_SET_BY_MEDATTN else "set by the user"
        ctx.log(f"TensorFlow's oneDNN CPU kernels: {'on' if onednn else 'off'} "
                f"(TF_ENABLE_ONEDNN_OPTS={os.environ.get('TF_ENABLE_ONEDNN_OPTS')}, {who})")


def _run(repro, cfg, ctx: Context, rows_path: Path, weights_note, DatasetError) -> int:
    out = ctx.out
    if cfg.report_only:
        rows = _rows(rows_path)
        if not rows:
            raise UserError(f"--report-only needs finished runs in {rows_path}")
        _refuse_report_only_changes(cfg, out, ctx.config_changes, ctx.precision_requested)
        # complete: every run of the plan has its row (a process killed before its last run leaves fewer) and the
        # training process did not record itself unfinished
        ctx.complete = ({(s.arm, s.seed) for s in repro.plan(cfg)} <= {(r["arm"], r["seed"]) for r in rows}
                        and ctx.previous_run.get("complete") is not False)
        ctx.recorder.meta["report_command"] = ctx.recorder.meta["command"]
        prev = ctx.recorder.previous
        if prev:  # provenance stays that of the training processes
            ctx.recorder.meta.update({k: prev[-1].get(k) for k in ("command", "git_commit", "started")})
            ctx.recorder.trains = False  # wall time and processes are those of the training runs
        # the machine, packages, split rule and strategy the rows were trained with, not this process's (a table
        # rebuilt on another machine must not name it); every table's meta is built from these
        ctx.recorder.meta.update({k: ctx.previous_run[k] for k in TRAINING_PROVENANCE if k in ctx.previous_run})
        # what the training processes found in the data (files skipped or left out) and how they ran
        skipped = ctx.previous_run.get("skipped")
        if skipped is None and (out / "runs.json").exists():  # run.json from before it recorded them
            skipped = json.loads((out / "runs.json").read_text()).get("meta", {}).get("skipped_files", [])
        ctx.skipped.extend(skipped or [])
        kept = {k: ctx.previous_run[k] for k in ("synthetic", "dry_run", "phases_this_process", "audit_rule")
                if k in ctx.previous_run}
        kept["complete"] = ctx.complete
        repro.report(ctx, rows, True)
        ctx.recorder.finish(n_runs=len(rows), skipped=list(ctx.skipped), **kept)
        return 0
    t_load = time.time()
    try:
        data = repro.load_data(ctx)
        ctx.external = _external_data(repro, ctx)
    except DatasetError as e:
        raise UserError(str(e)) from None
    phases = {"load_data_s": round(time.time() - t_load, 1)}
    ctx.log(f"data ready in {phases['load_data_s']} s")
    plan = repro.plan(cfg)
    # run.json is rewritten every minute while training, so a process that is killed (a machine's shutdown, a crash)
    # still counts in the wall time and the processes that --resume adds up
    def record(**extra):
        return ctx.recorder.finish(synthetic=ctx.synthetic, dry_run=ctx.dry_run, phases_this_process=dict(phases),
                                   skipped=list(ctx.skipped), **extra)

    record(complete=False)  # at once: a process killed before the first heartbeat still has its record
    beat = _Heartbeat(lambda: record(complete=False), HEARTBEAT_S)
    try:
        rows = _train(repro, cfg, ctx, rows_path, data, plan, phases, weights_note)
    finally:
        beat.stop()
    phases.update(_phase_summary(ctx, phases))
    record(n_runs=len(rows), complete=True)
    ctx.log("time by phase: " + ", ".join(f"{k[len('phase '):-len('_s')]} {v:.1f} s" for k, v in phases.items()
                                          if k.startswith("phase ")))
    ctx.log(f"wrote {ctx.out} ({ctx.recorder.wall_time_s} s)")
    return 0


def _external_data(repro: Reproduction, ctx: Context) -> dict | None:
    """The ``--external-data`` set as the script's loader reads it, logged; None when not given."""
    path = getattr(ctx.cfg, "external_data", None)
    if not path or repro.external is None:
        return None
    if not Path(path).is_dir():
        raise UserError(f"--external-data {path}: no such folder")
    ext = {**repro.external.load(ctx, Path(path)), "name": Path(path).resolve().name}
    absent = f"; absent: {', '.join(ext['absent'])}" if ext["absent"] else ""
    note = f"; {ext['note']}" if ext.get("note") else ""
    ctx.log(f"external data {path}: {ext['n']} images ({', '.join(ext['present'])}{absent}{note}); evaluated only, "
            "never trained on")
    return ext


def _process_start() -> float | None:
    """When this process started (Linux ``/proc``), or None."""
    import os

    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


_MAIN_STARTED: list[float] = []  # when main() began (the end of the imports before it), then Keras' import time


def _phase_summary(ctx, phases: dict) -> dict:
    """Where this process's time went: imports, data, model build, training (with graph tracing), evaluation (the
    rest of the runs), tables; so the next slowdown is visible in one line and in run.json."""
    runs = sum(v for k, v in phases.items() if k.startswith("run "))
    tables = sum(v for k, v in phases.items() if k.startswith("report after "))
    start = _process_start()
    out = {}
    if start is not None and _MAIN_STARTED:
        out["phase imports_s"] = round(_MAIN_STARTED[0] - start + sum(_MAIN_STARTED[1:2]), 1)
    build, training = ctx.phase_s["model build"], ctx.phase_s["training"]
    out.update({"phase data_s": phases.get("load_data_s", 0.0), "phase model build_s": round(build, 1),
                "phase training_s": round(training, 1),
                "phase evaluation_s": round(max(runs - build - training, 0.0), 1), "phase tables_s": round(tables, 1)})
    return out


TRAINING_PROVENANCE = ("machine", "packages", "data_dir", "data_manifest_sha256", "audit_rule", "strategy", "replicas",
                       "weights_sha256", "weights_card", "weights_source")


def _weights_provenance(weights) -> dict:
    """A weights file's SHA-256 and, when it has one, its card's provenance (what it was trained on, by which
    command and commit), for run.json; HED's: where they came from; nothing for none/imagenet."""
    from ..backbones import hed_provenance, is_hed_weights, weights_card

    if weights not in (None, "none", "imagenet") and is_hed_weights(weights):
        return hed_provenance()
    if weights in (None, "none", "imagenet") or not Path(weights).is_file():
        return {}
    from ..utils import file_sha256

    card = weights_card(weights) or {}
    keep = ("backbone", "options", "preprocessing", "data_dir", "data_manifest_sha256", "best_epoch",
            "best_val_accuracy", "command", "git_commit")
    return {"weights_sha256": file_sha256(weights),
            **({"weights_card": {k: card.get(k) for k in keep}} if card else {})}


def _refuse_report_only_changes(cfg, out: Path, set_here, precision_requested: str) -> None:
    """``--report-only`` rebuilds the tables of the finished runs as they ran: a setting given on this command line
    (``--set``, ``--epochs``, ``--seeds``...; ``set_here`` names them) that differs from the training process's
    ``config.json`` would be ignored, so it is refused, naming the setting and both values. Settings equal to the
    recorded ones (a training command repeated with ``--report-only``) and run-only flags (``--out``,
    ``--data-dir``...) pass."""
    from ..training.config import RUN_ONLY_FIELDS, STAGE_FIELDS

    fields = []
    for k in set_here:
        field = "stages" if "." in k or k in STAGE_FIELDS else k
        if field not in RUN_ONLY_FIELDS and field not in fields:
            fields.append(field)
    if not fields:
        return
    given = {**json.loads(json.dumps(cfg.to_dict(), default=str)), "mixed_precision": precision_requested}
    path = out / "config.json"
    recorded = json.loads(path.read_text()) if path.exists() else None
    for k in fields:
        if recorded is None:
            raise UserError(f"--report-only: {k} = {given.get(k)!r} was given, but {path} is missing, so it cannot "
                            f"be checked against what ran; --report-only changes no setting: drop it")
        same = given.get(k) == recorded.get(k) or (k == "mixed_precision"
                                                   and given.get(k) == recorded.get("mixed_precision_requested"))
        if not same:
            raise UserError(f"--report-only rebuilds the tables of {out / 'runs.jsonl'} as they ran ({path}); "
                            f"{k} = {given.get(k)!r} here but {recorded.get(k)!r} there would be ignored: drop it, "
                            f"or train with it (--resume adds the runs it changes)")


HEARTBEAT_S = 60.0  # how often run.json is rewritten while a process trains


class _Heartbeat:
    """Calls ``write`` every ``every`` seconds on a daemon thread until :meth:`stop` (which waits for a write in
    progress, so the final record, written after it, is never overwritten by a late beat)."""

    def __init__(self, write, every: float = 60.0):
        import threading

        self._write, self._every = write, every
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self):
        while not self._stop.wait(self._every):
            with self._lock:
                if self._stop.is_set():
                    return
                try:
                    self._write()
                except Exception:  # a record that cannot be written must not stop the training
                    pass

    def stop(self):
        with self._lock:
            self._stop.set()


def _train(repro, cfg, ctx: Context, rows_path: Path, data, plan, phases: dict, weights_note) -> list[dict]:
    """Every run of the plan not already in ``runs.jsonl`` (with --resume), tables after each; the rows."""
    done = {(r["arm"], r["seed"]): r for r in _rows(rows_path)} if cfg.resume else {}
    if not cfg.resume and rows_path.exists():
        rows_path.unlink()
    if not cfg.resume:  # an earlier run's unfinished parts: this run trains its own
        shutil.rmtree(ctx.out / "parts", ignore_errors=True)
    for sub in ("predictions", "plots"):
        (ctx.out / sub).mkdir(parents=True, exist_ok=True)
    write_config = _config_writer(repro, cfg, ctx, plan, done, weights_note)
    config_written = False
    rows = []
    ctx.complete = False
    for i, spec in enumerate(plan, 1):
        prev = done.get((spec.arm, spec.seed))
        if prev is not None:
            rows.append(_kept_row(ctx, cfg, spec, prev, rows_path))
            trained = str(prev.get("training_git_commit") or prev.get("git_commit") or "")[:7]
            ctx.log(f"run {i}/{len(plan)}: {spec.arm} seed {spec.seed} finished earlier: kept from {rows_path}"
                    + (f" (trained at {trained})" if trained else ""))
            continue
        ctx.log(f"run {i}/{len(plan)}: {spec.arm} seed {spec.seed} ({cfg.profile} profile{ctx.mark})")
        row = _run_one(repro, cfg, ctx, spec, data)
        rows.append(row)
        _append_row(rows_path, row)
        _drop_parts(ctx.out / "parts", spec)
        if not config_written:
            write_config()
            config_written = True
        t_report = time.time()
        repro.report(ctx, rows, False)  # tables after every run: an interrupted run keeps what it finished
        phases[f"run {spec.key}_s"] = row["wall_time_s"]
        phases[f"report after {spec.key}_s"] = round(time.time() - t_report, 1)
        to_go = sum((later.arm, later.seed) not in done for later in plan[i:])
        ctx.log(_plan_progress(i, len(plan), to_go, rows, row))
    if not config_written:
        write_config()
    ctx.complete = True
    repro.report(ctx, rows, True)
    return rows


def _drop_parts(parts: Path, spec: RunSpec) -> None:
    """A finished run's parts (:meth:`Context.save_part`): its row and prediction file hold what they held; the
    parts folder goes with its last run."""
    shutil.rmtree(parts / spec.key, ignore_errors=True)
    with contextlib.suppress(OSError):
        parts.rmdir()


def _duration(seconds: float) -> str:
    """``"42 s"``, ``"17 min"`` or ``"3 h 05 min"``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = int(round(seconds / 60))
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def _plan_progress(i: int, n: int, to_go: int, rows: list[dict], row: dict) -> str:
    """After run ``i`` of ``n``: its time and, while ``to_go`` runs remain to train, the time they may take at the
    mean of the finished runs (this process's and those ``--resume`` kept)."""
    line = f"run {i}/{n} finished in {_duration(row.get('wall_time_s') or 0.0)}"
    timed = [r["wall_time_s"] for r in rows if r.get("wall_time_s")]
    if not to_go or not timed:
        return line
    mean = sum(timed) / len(timed)
    return (f"{line}; {to_go} to go, about {_duration(mean * to_go)} at the mean of the {len(timed)} finished "
            f"run{'s' if len(timed) > 1 else ''}")


def _config_writer(repro, cfg, ctx: Context, plan, done: dict, weights_note) -> Callable[[], Path]:
    """What writes ``config.json``: the settings behind the rows beside it, written with the first new row (or when
    every row was kept), so a process that fails before finishing a run leaves the earlier one as it was."""
    # the models this process trains (a finished row kept by --resume says in its identity how it ran)
    over = {k: v for spec in plan if (spec.arm, spec.seed) not in done
            for k, v in ctx.precision_overrides(spec.arm).items()}
    if over:
        ctx.log(f"--mixed-precision auto: {', '.join(f'{k} in {v}' for k, v in over.items())} (measured faster "
                f"than bf16 on this kind of CPU: medattn.training.precision)")
    not_used = dict(repro.not_used(cfg))
    extra = {"synthetic": ctx.synthetic, "data_dir": ctx.data.path if not ctx.synthetic else None,
             "mixed_precision_requested": ctx.precision_requested, **({"model_precision": over} if over else {}),
             **({"weights_unavailable": weights_note} if weights_note else {}),
             **({"not_used": not_used} if not_used else {})}
    return lambda: save_config(cfg, ctx.out / "config.json", extra=extra, drop=tuple(not_used))


def _kept_row(ctx: Context, cfg, spec: RunSpec, prev: dict, rows_path: Path) -> dict:
    """A finished row ``--resume`` keeps, after checking it is this run's (UserError naming what differs)."""
    if not isinstance(prev.get("identity"), dict):
        raise UserError(f"--resume: {rows_path} holds {spec.arm} seed {spec.seed} from before runs had an "
                        f"identity, so it cannot be checked against this run; --report-only rebuilds its "
                        f"tables, or drop --resume (or pass --out) to train anew")
    diff = ctx.identity_diff(prev["identity"], spec)
    if diff:
        path = ctx.out / "config.json"
        recorded = json.loads(path.read_text()) if path.is_file() else None
        what = _what_differs(diff[0], prev["identity"], ctx.identity(spec), recorded, cfg)
        raise UserError(f"--resume: {rows_path} holds {spec.arm} seed {spec.seed} from another run ({what}); "
                        f"drop --resume to start over or pass --out to keep both")
    return prev


def _run_one(repro, cfg, ctx: Context, spec: RunSpec, data) -> dict:
    """One run of the plan, its row with its provenance (identity, commit, rule, weights, wall time)."""
    ident = ctx.identity(spec)
    ctx.prepare_run_dir(spec)
    t0 = time.time()
    ctx.resumed_stages = []
    row = repro.run_one(ctx, spec, data)
    stored = ctx.run_dir(spec) / "identity.json"
    trained_at = json.loads(stored.read_text()).get("git_commit") if stored.is_file() else None
    if trained_at and trained_at != ctx.recorder.meta["git_commit"]:  # evaluated at another commit than trained
        row["training_git_commit"] = trained_at
    rule = ctx.recorder.meta.get("rule")
    return {"arm": spec.arm, "seed": spec.seed, **row, "profile": cfg.profile,
            **({"rule_file": rule["file"], "rule_commit": rule["commit"][:7], "rule_committed": rule["committed"],
                "run_started": ctx.recorder.meta.get("started")} if rule else {}),
            **{k: v for k, v in _weights_provenance(cfg.weights).items() if k == "weights_source"},
            "wall_time_s": round(time.time() - t0, 1),
            **({"resumed_stages": list(ctx.resumed_stages)} if ctx.resumed_stages else {}),
            "git_commit": ctx.recorder.meta["git_commit"],
            "synthetic": ctx.synthetic, "dry_run": ctx.dry_run, "identity": ident}

