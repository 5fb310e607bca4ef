"""The API reference builds from the docstrings with every warning an error; every public name
(``fa_gpu.__all__``) exists, has a docstring and appears in it."""
from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import fa_gpu

ROOT = Path(__file__).resolve().parents[1]


def test_every_public_name_exists_and_is_documented():
    for name in fa_gpu.__all__:
        obj = getattr(fa_gpu, name)
        assert inspect.getdoc(obj), f"fa_gpu.{name} has no docstring"


def test_api_reference_builds_without_warnings(tmp_path):
    pytest.importorskip("pdoc", reason="the docs extra: pip install -e '.[docs]'")
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "build_docs.py"), str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    page = (tmp_path / "fa_gpu.html").read_text()
    for name in fa_gpu.__all__ + ["Engine.recorder", "Engine.run"]:
        assert f'id="{name}"' in page or (tmp_path / "fa_gpu" / f"{name}.html").exists(), name
