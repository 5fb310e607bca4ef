"""Smoke test of benchmarks/runtime.py (tiny N; timings are printed, never asserted)."""
import contextlib
import io
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def test_runtime_benchmark_runs():
    from benchmarks import runtime

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert runtime.main(["--n", "400", "--steps", "3", "--backend", "numpy"]) == 0
    text = out.getvalue()
    assert "snapshot readers:" in text and "with 4 readers" in text
    assert "I/O-bound host_fn, pipeline=2: step" in text and "bound 1.25 x max" in text
