"""Peak memory of one library call on one file, measured in a fresh Python process.

The child imports the function's module, resets its RSS high-water mark (/proc/self/clear_refs),
caps its data segment so a regression fails with MemoryError instead of eating the machine, calls
the function on the file and reports VmHWM minus the RSS before the call. Linux only; the test
skips elsewhere.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO

_CHILD = r"""
import importlib, json, resource, sys

module_name, function_name, path, cap = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
function = getattr(importlib.import_module(module_name), function_name)
from ninport.errors import NinportError


def status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise SystemExit(f"no {field} in /proc/self/status")


with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # VmHWM := VmRSS: the imports' peak does not count
limit = status("VmData") + cap
resource.setrlimit(resource.RLIMIT_DATA, (limit, resource.getrlimit(resource.RLIMIT_DATA)[1]))
base = status("VmRSS")
try:
    function(path)
    error = None
except NinportError as exc:
    error = str(exc)
except MemoryError:
    error = "MemoryError"
print(json.dumps({"growth": status("VmHWM") - base, "error": error}))
"""


@dataclass
class Measured:
    growth: int        # peak RSS during the call minus the RSS before it, in bytes
    error: str | None  # the NinportError's message (or "MemoryError"), None when the call returned


def peak_rss_growth(function: str, path: Path, cap: int = 1 << 30) -> Measured:
    """Run `function` ("package.module:name") on `path` in a child process; its data segment may
    grow by at most `cap` bytes."""
    if not sys.platform.startswith("linux") or not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("needs Linux's /proc/self/clear_refs to reset the RSS high-water mark")
    module, name = function.split(":")
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", _CHILD, module, name, str(path), str(cap)],
                          capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return Measured(result["growth"], result["error"])
