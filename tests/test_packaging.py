"""pyproject.toml and environment.yml must list the same dependencies."""
from __future__ import annotations

import re
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def _norm(req: str) -> tuple[str, str]:
    """('numba', '>=0.59') from a requirement string; extras like [cu12] dropped from the name."""
    req = req.split(";")[0]  # environment markers: conda resolves the Python version itself
    m = re.match(r"\s*([A-Za-z0-9_.\-]+)(\[[^\]]*\])?\s*(.*)", req)
    return m.group(1).lower().replace("_", "-"), m.group(3).replace(" ", "")


def _conda_env():
    """(conda deps, pip deps) from environment.yml's simple list layout (no YAML library needed)."""
    conda, pip, section = {}, {}, None
    for line in (ROOT / "environment.yml").read_text().splitlines():
        s = line.split("#")[0].rstrip()
        if s.strip() == "dependencies:":
            section = conda
        elif s.strip() == "- pip:":
            section = pip
        elif s.strip().startswith("- ") and section is not None:
            item = s.strip()[2:].strip()
            if item in ("pip", "-e .") or item.startswith("python"):
                continue
            name, spec = _norm(item)
            section[name] = spec
    return conda, pip


def test_environment_matches_pyproject():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = meta["optional-dependencies"]
    want = dict(_norm(r) for r in meta["dependencies"] + extras["test"]
                + extras["crossval"] + extras["docs"])
    conda, pip = _conda_env()
    got = {**conda, **pip}
    assert got == want, f"environment.yml {got} != pyproject.toml {want}"
    assert "-e ." in (ROOT / "environment.yml").read_text()
    py = re.search(r"python\s*(>=\s*[\d.]+)", (ROOT / "environment.yml").read_text()).group(1)
    assert py.replace(" ", "") == meta["requires-python"]


def test_norm_parses_extras_and_specs():
    assert _norm("numba-cuda[cu12]>=0.15") == ("numba-cuda", ">=0.15")
    assert _norm("inferactively_pymdp == 1.0.4") == ("inferactively-pymdp", "==1.0.4")
    assert _norm("zarr>=3.1.3; python_version >= '3.11'") == ("zarr", ">=3.1.3")
