"""Runtimes: which runtime names selfless runs, and how an environment of each is started.

- ``python3.9`` ... ``python3.14`` run selfless's own bootstrap (``bootstraps/python_bootstrap.py``) on an
  installed CPython of that minor version; where that version is missing, on the nearest installed one
  (``Runtime.substitute`` says which, and the environment's log says so once).
- ``provided``, ``provided.al2``, ``provided.al2023`` run the package's own executable ``bootstrap``.

Interpreters are found once at start-up: SELFLESS_PYTHON_RUNTIMES (``python3.12=/path/to/python3.12,...``)
first, then ``python3.X`` on PATH (pyenv shims skipped: they are shell scripts costing ~50 ms a start), then
pyenv's version directories, then this interpreter itself.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

PYTHON_RUNTIMES = tuple(f"python3.{minor}" for minor in range(9, 15))
PROVIDED_RUNTIMES = ("provided", "provided.al2", "provided.al2023")
SUPPORTED = PYTHON_RUNTIMES + PROVIDED_RUNTIMES

BOOTSTRAP_DIR = Path(__file__).parent / "bootstraps"
PYTHON_BOOTSTRAP = BOOTSTRAP_DIR / "python_bootstrap.py"


@dataclasses.dataclass(frozen=True)
class Runtime:
    name: str
    interpreter: str | None  # None for provided runtimes
    actual_version: str | None = None  # "3.13" when python3.14 runs on 3.13
    substitute: bool = False

    @property
    def is_python(self) -> bool:
        return self.interpreter is not None

    def argv(self, task_root: Path) -> list[str]:
        if self.interpreter is not None:
            # -I: no user site, no PYTHON* variables, no script dir on sys.path; -S: skip site (and with it
            # every .pth hook of the host); -u: output reaches the log as it is written.
            return [self.interpreter, "-I", "-S", "-u", str(PYTHON_BOOTSTRAP)]
        return [str(task_root / "bootstrap")]

    @property
    def execution_env(self) -> str | None:
        return f"AWS_Lambda_{self.name}" if self.is_python else None


def _version_of(path: str) -> tuple[int, int] | None:
    m = re.search(r"python(\d)\.(\d+)$", path)
    if m:
        return int(m.group(1)), int(m.group(2))
    try:
        out = subprocess.run(
            [path, "-S", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    major, _, minor = out.partition(".")
    return int(major), int(minor)


def discover_interpreters(configured: Mapping[str, str]) -> dict[tuple[int, int], str]:
    """Installed CPython interpreters by (major, minor), as absolute real paths."""
    found: dict[tuple[int, int], str] = {}
    for name, path in configured.items():
        m = re.fullmatch(r"python3\.(\d+)", name)
        if m and os.access(path, os.X_OK):
            found[(3, int(m.group(1)))] = path
    for minor in range(9, 15):
        key = (3, minor)
        if key in found:
            continue
        candidate = shutil.which(f"python3.{minor}")
        if candidate and "/shims/" not in candidate:
            found[key] = os.path.realpath(candidate)
            continue
        pyenv_root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
        matches = sorted(glob.glob(os.path.join(pyenv_root, "versions", f"3.{minor}.*", "bin", f"python3.{minor}")))
        if matches:
            found[key] = matches[-1]
    own = (sys.version_info.major, sys.version_info.minor)
    if own not in found:
        base = getattr(sys, "_base_executable", sys.executable)
        found[own] = os.path.realpath(base)
    return found


class RuntimeCatalog:
    """Maps runtime names to how they start. Built once; read-only afterwards."""

    def __init__(self, interpreters: Mapping[tuple[int, int], str]) -> None:
        self._interpreters = dict(interpreters)
        self._runtimes: dict[str, Runtime] = {}
        self._noted: set[str] = set()
        for name in PYTHON_RUNTIMES:
            minor = int(name.split(".")[1])
            runtime = self._python(name, minor)
            if runtime is not None:
                self._runtimes[name] = runtime
        for name in PROVIDED_RUNTIMES:
            self._runtimes[name] = Runtime(name, None)

    def _python(self, name: str, minor: int) -> Runtime | None:
        if not self._interpreters:
            return None
        if (3, minor) in self._interpreters:
            return Runtime(name, self._interpreters[(3, minor)], f"3.{minor}")
        # Nearest installed minor version; on a tie the newer one.
        best = min(self._interpreters, key=lambda v: (abs(v[1] - minor), -v[1]))
        return Runtime(name, self._interpreters[best], f"{best[0]}.{best[1]}", substitute=True)

    def first_substitution(self, function_name: str) -> bool:
        """True the first time (per server run) a function starts on a stand-in interpreter: the function's
        log says so once."""
        if function_name in self._noted:
            return False
        self._noted.add(function_name)
        return True

    def get(self, name: str) -> Runtime | None:
        return self._runtimes.get(name)

    def names(self) -> list[str]:
        return list(self._runtimes)

    def describe(self) -> dict[str, str]:
        out = {}
        for name, rt in self._runtimes.items():
            if rt.interpreter is None:
                out[name] = "package bootstrap"
            else:
                out[name] = rt.interpreter + (f" (Python {rt.actual_version} stands in)" if rt.substitute else "")
        return out
