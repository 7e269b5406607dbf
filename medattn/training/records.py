"""What stands beside every result table: how it was made.

:func:`run_metadata` gathers the command line, git commit (and whether the tree was dirty), package versions,
machine (CPU model, core count, GPUs/TPUs), profile, seeds, data path and a hash of the dataset's manifest, and
the start time. :class:`RunRecorder` adds the wall time when the run ends and writes ``run.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

__all__ = ["run_metadata", "dataset_fingerprint", "RunRecorder", "machine_description"]

PACKAGES = ("medattn", "tensorflow", "tensorflow-cpu", "keras", "numpy", "scikit-learn", "scikit-image",
            "matplotlib", "jax")


def _git(*args, cwd=None) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def package_versions() -> dict[str, str]:
    out = {}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            pass
    out["python"] = platform.python_version()
    return out


def machine_description() -> dict[str, object]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    desc: dict[str, object] = {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform()}
    from .strategy import native_bf16

    # "AMD EPYC" names both the AVX2-only machines (bf16 emulated, slower) and AVX512_BF16 ones (bf16 native,
    # faster for some models): the flag tells the records apart
    desc["native_bf16"] = native_bf16()
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        desc["memory_gib"] = round(mem / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    if "tensorflow" in sys.modules:
        tf = sys.modules["tensorflow"]
        desc["gpus"] = [d.name for d in tf.config.list_physical_devices("GPU")]
        desc["tpus"] = [d.name for d in tf.config.list_logical_devices("TPU")]
        from .. import onednn_enabled

        desc["onednn"] = onednn_enabled()
    return desc


MANIFEST = "MANIFEST.sha256"
_FINGERPRINTS: dict = {}  # (folder, every file's path, size and mtime) -> fingerprint: one hashing per process


def dataset_fingerprint(data_dir) -> dict[str, object] | None:
    """What the data a run reads is, by content. With a ``MANIFEST.sha256`` (in the folder or its parent) whose
    entries match the folder's files exactly (same SHA-256 for every file under the folder, none missing, none
    unlisted), the SHA-256 of the manifest itself, as runs have always recorded it. Otherwise (no manifest, or a
    folder that differs from it: a file changed, added or removed) the SHA-256 of every file's relative path and
    content hash, with ``differs`` naming the first differences from the manifest. None when there is no folder."""
    if data_dir is None or not Path(data_dir).exists():
        return None
    root = Path(data_dir).resolve()
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST)
    key = (str(root), tuple((str(p), st.st_size, st.st_mtime_ns) for p in files for st in [p.stat()]))
    if key not in _FINGERPRINTS:
        _FINGERPRINTS.clear()
        _FINGERPRINTS[key] = _fingerprint(root, files)
    return dict(_FINGERPRINTS[key])


def _fingerprint(root: Path, files: list[Path]) -> dict[str, object]:
    digests = {p: _file_sha256(p) for p in files}
    manifest = next((c for c in (root / MANIFEST, root.parent / MANIFEST) if c.is_file()), None)
    differs = _manifest_differences(manifest, root, digests) if manifest else None
    if manifest and not differs:
        return {"manifest": str(manifest), "sha256": hashlib.sha256(manifest.read_bytes()).hexdigest()}
    h = hashlib.sha256()
    for p in files:
        h.update(f"{p.relative_to(root)}\t{digests[p]}\n".encode())
    return {"manifest": str(manifest) if manifest else None, "files": len(files), "sha256": h.hexdigest(),
            **({"differs": differs} if differs else {})}


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _manifest_differences(manifest: Path, root: Path, digests: dict[Path, str]) -> list[str]:
    """How the files under ``root`` differ from the entries of ``manifest`` that lie under it (at most 5 named,
    then a count)."""
    listed = {}
    for line in manifest.read_text(errors="replace").splitlines():
        digest, _, rel = line.strip().partition("  ")
        path = (manifest.parent / rel).resolve()
        if rel and (path == root or root in path.parents):
            listed[path] = digest
    found = {p.resolve(): d for p, d in digests.items()}
    problems = ([f"changed: {p.relative_to(root)}" for p in sorted(listed) if p in found and found[p] != listed[p]]
                + [f"missing: {p.relative_to(root)}" for p in sorted(listed) if p not in found]
                + [f"not in {MANIFEST}: {p.relative_to(root)}" for p in sorted(found) if p not in listed])
    return problems[:5] + ([f"... {len(problems) - 5} more"] if len(problems) > 5 else [])


def run_metadata(*, profile=None, seeds=None, data_dir=None, argv=None, extra=None) -> dict[str, object]:
    repo = Path(__file__).resolve().parents[2]
    commit = _git("rev-parse", "HEAD", cwd=repo)
    dirty = _git("status", "--porcelain", "--untracked-files=no", cwd=repo)
    fp = dataset_fingerprint(data_dir)
    meta = {
        "command": " ".join(["python"] + list(sys.argv if argv is None else argv)),
        "git_commit": (commit + ("+dirty" if dirty else "")) if commit else None,
        "profile": profile,
        "seeds": list(seeds) if seeds is not None else None,
        "data_dir": str(data_dir) if data_dir else None,
        "data_manifest_sha256": fp["sha256"] if fp else None,
        "machine": machine_description(),
        "packages": package_versions(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if extra:
        meta.update(extra)
    return meta


class RunRecorder:
    """Collects :func:`run_metadata` at the start; :meth:`finish` adds wall time and writes ``run.json``.

    ``previous`` lists the processes of earlier, resumed attempts of the same run (each with its command, commit,
    start and wall time): the snapshot's ``wall_time_s`` is the sum over all of them and this one, and
    ``processes`` names every commit that contributed."""

    def __init__(self, out_dir, previous: list[dict] | None = None, **kwargs):
        self.out_dir = Path(out_dir)
        self.t0 = time.time()
        self.meta = run_metadata(**kwargs)
        self.previous = list(previous or [])
        self.trains = True  # False when re-reporting earlier runs: this process adds no time and no process

    @property
    def wall_time_s(self) -> float:
        earlier = sum(p.get("wall_time_s") or 0.0 for p in self.previous)
        return round(earlier + (time.time() - self.t0 if self.trains else 0.0), 1)

    def process(self) -> dict:
        return {k: self.meta.get(k) for k in ("command", "git_commit", "started")} | {
            "wall_time_s": round(time.time() - self.t0, 1)}

    def snapshot(self) -> dict:
        processes = self.previous + ([self.process()] if self.trains else [])
        return {**self.meta, "wall_time_s": self.wall_time_s, "processes": processes}

    def finish(self, **extra) -> dict:
        meta = {**self.snapshot(), **extra}
        self.out_dir.mkdir(parents=True, exist_ok=True)
        from ..utils import atomic_write_text

        atomic_write_text(self.out_dir / "run.json", json.dumps(meta, indent=2, default=str) + "\n")
        return meta
