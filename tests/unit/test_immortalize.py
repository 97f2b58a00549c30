"""A fork-after-init template makes what its init left behind immortal (PEP 683) before it forks, so that a
child's reference counting does not copy the pages it shares with the template. Checked in the interpreters
functions run on: 3.12+ get it, earlier ones are left alone, and either way the heap keeps working."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from selfless.runtime.runtimes import discover_interpreters

BOOTSTRAPS = Path(__file__).resolve().parents[2] / "src" / "selfless" / "runtime" / "bootstraps"

CHECK = """
import gc, sys
sys.path.insert(0, {bootstraps!r})
import python_bootstrap

class Holder:
    def __init__(self):
        self.items = [("x" * 50, 10**20), 2.5]

state = {{"holder": Holder(), "calls": 0}}
frozen_before = gc.get_freeze_count()
gc.collect()
python_bootstrap._immortalize(gc)
gc.freeze()
big = 2**30
expect = sys.version_info >= (3, 12)
for obj in (state, state["holder"], state["holder"].items, state["holder"].items[0][0], state["holder"].items[1]):
    assert (sys.getrefcount(obj) > big) == expect, (obj, sys.getrefcount(obj))
fresh = {{"later": [1]}}
assert sys.getrefcount(fresh) < 10, "objects made after it are not immortal"
# The heap keeps working: mutate, drop and replace immortal objects, collect.
state["calls"] += 1
state["holder"].items.append(3)
del state["holder"]
state["holder"] = Holder()
gc.collect()
assert state["calls"] == 1 and state["holder"].items[1] == 2.5
print("ok", expect)
"""


@pytest.mark.parametrize("minor", [11, 12, 13])
def test_the_template_heap_becomes_immortal_from_python_3_12(minor: int) -> None:
    interpreter = discover_interpreters({}).get((3, minor))
    if interpreter is None:
        pytest.fail(f"python3.{minor} is not installed here (CI machines have 3.9-3.13)")
    out = subprocess.run(
        [interpreter, "-c", CHECK.format(bootstraps=str(BOOTSTRAPS))], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["ok", str(minor >= 12)]
