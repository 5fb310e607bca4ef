"""Every README code block runs as written, in a fresh interpreter, injecting nothing.

In document order, in one temporary directory: each ```python block runs in its own
subprocess, and each `fa-gpu ...` line of a ```bash block (but `fa-gpu bench`, minutes long)
runs as a command. A ``print(...)  # OUTPUT`` line's comment is the output shown: it must be
what the block prints, unless it says "(abbreviated". The ```text block after the block with
`fa-gpu simulate` must match that command's output line by line with the numbers masked.
"""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
_BLOCK = re.compile(r"```(\w+)\n(.*?)```", re.S)


def _blocks():
    return [(m.group(1), m.group(2)) for m in _BLOCK.finditer(README.read_text())]


def _expected(code: str) -> list[str]:
    """The outputs shown as ``# ...`` after each print, or None for an abbreviated one."""
    out = []
    for line in code.splitlines():
        if line.startswith("print(") and "#" in line:
            shown = line.split("#", 1)[1].strip()
            out.append(None if "(abbreviated" in shown else shown)
    return out


def _mask(line: str) -> str:
    return re.sub(r"\d[\d.,]*", "#", line.strip())


def _run(cmd, cwd, **kw):
    env = {k: v for k, v in os.environ.items() if k not in ("FA_GPU_BACKEND", "NUMBA_ENABLE_CUDASIM")}
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600, env=env, **kw)
    assert done.returncode == 0, f"{cmd}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout


#: packages of the optional extras a README block may import (that block says which extra)
_OPTIONAL = {"pymdp": "crossval", "ray": "distributed", "cupy": "gpu"}


def _needs_missing_extra(code: str):
    """The extra a block needs that is not installed here, or None."""
    for pkg, extra in _OPTIONAL.items():
        if re.search(rf"^\s*(import|from) {pkg}\b", code, re.M) and importlib.util.find_spec(pkg) is None:
            return extra
    return None


def test_every_block_runs_as_written(tmp_path):
    blocks = _blocks()
    ran_python = ran_cli = 0
    simulate_out = None
    for i, (lang, code) in enumerate(blocks):
        if lang == "python" and _needs_missing_extra(code):
            if os.environ.get("CI"):  # CI installs every extra: a block must never be skipped there
                pytest.fail(f"README block {i} needs the {_needs_missing_extra(code)} extra, not installed on CI")
            continue  # the README's plain `pip install -e ".[test]"` set-up: that block is the extra's
        if lang == "python":
            out = _run([sys.executable, "-c", code], tmp_path).splitlines()
            want = _expected(code)
            assert len(out) == len(want), f"block {i} printed {out}, README shows {want}"
            for got, shown in zip(out, want):
                assert shown is None or got == shown, f"block {i}: {got!r} != README {shown!r}"
            ran_python += 1
        elif lang == "bash":
            for line in code.splitlines():
                cmd = line.split("#", 1)[0].split()
                if "--shards" in cmd and importlib.util.find_spec("ray") is None and not os.environ.get("CI"):
                    continue  # the distributed extra's line
                if cmd[:1] == ["fa-gpu"] and cmd[1:2] != ["bench"]:
                    out = _run([sys.executable, "-m", "fa_gpu"] + cmd[1:], tmp_path)
                    ran_cli += 1
                    if cmd[1:2] == ["simulate"]:
                        simulate_out = (i, out)
        elif lang == "text" and simulate_out is not None and simulate_out[0] == i - 1:
            got = [_mask(x) for x in simulate_out[1].splitlines()
                   if not x.startswith(("backend:", "  skipped"))]
            shown = [_mask(x) for x in code.splitlines()
                     if not x.startswith(("backend:", "  skipped"))]
            assert got == shown, f"fa-gpu simulate printed {got}, README shows {shown}"
    assert ran_python >= 3 and ran_cli >= 3 and simulate_out is not None
