"""What a Python runtime provides besides the standard library: boto3 and what it needs, as on AWS, beside
selfless's own bootstrap.

They are copied once from this server's own environment into ``<data-dir>/runtime/python`` (rebuilt when
their versions or the bootstrap change), together with the bootstrap's modules, and put last on the
functions' ``sys.path``, after the function's own code, so a function that ships its own boto3 gets its
own. Inside the Linux sandbox the directory is ``/var/runtime`` (read-only, where AWS keeps its runtime):
the zygotes see it there too (a mount namespace of their own) and import boto3 and the bootstrap from it
before forking, so no path of the host (the data directory's above all) shows in a function's modules or
tracebacks. boto3 here needs Python 3.10 or newer: a python3.9 function gets no runtime-provided boto3.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from selfless.runtime.runtimes import BOOTSTRAP_DIR

log = logging.getLogger(__name__)

# snapshot-restore-py: the hook library AWS's Python runtime provides for SnapStart (fork-after-init here).
DISTRIBUTIONS = (
    "boto3",
    "botocore",
    "s3transfer",
    "jmespath",
    "python-dateutil",
    "six",
    "urllib3",
    "snapshot-restore-py",
)
MIN_PYTHON = (3, 10)


def _inventory() -> dict[str, str]:
    found = {}
    for name in DISTRIBUTIONS:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def _bootstrap_digest() -> str:
    digest = hashlib.sha256()
    for source in sorted(BOOTSTRAP_DIR.glob("*.py")):
        digest.update(source.name.encode() + b"\0" + source.read_bytes())
    return digest.hexdigest()


def prepare(data_dir: Path) -> Path:
    """The runtime directory (the bootstrap's modules, and boto3 and friends when this server has them),
    built if missing or stale."""
    versions = _inventory()
    versions["selfless-bootstrap"] = _bootstrap_digest()
    target = data_dir / "runtime" / "python"
    marker = target / ".versions.json"
    try:
        if json.loads(marker.read_text()) == versions:
            return target
    except (OSError, ValueError):
        pass
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".staging-"))
    try:
        for source in BOOTSTRAP_DIR.glob("*.py"):
            shutil.copyfile(source, staging / source.name)
        for name in versions:
            if name == "selfless-bootstrap":
                continue
            dist = importlib.metadata.distribution(name)
            for entry in dist.files or ():
                parts = entry.parts
                if not parts or parts[0] == ".." or "__pycache__" in parts or parts[0].endswith(".dist-info"):
                    continue
                source = Path(str(entry.locate()))
                if not source.is_file():
                    continue
                dest = staging / str(entry)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, dest)
        for dirpath, _dirs, files in os.walk(staging):
            os.chmod(dirpath, 0o755)
            for f in files:
                os.chmod(os.path.join(dirpath, f), 0o644)
        (staging / ".versions.json").write_text(json.dumps(versions))
        if target.exists():
            shutil.rmtree(target)
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("runtime packages for Python functions: %s", ", ".join(f"{k} {v}" for k, v in versions.items()))
    return target
