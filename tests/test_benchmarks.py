"""Smoke test of benchmarks/compare.py: runs in-process with tiny settings; never asserts timings."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks/ is not installed
from benchmarks import compare  # noqa: E402


def test_compare_tiny_run(tmp_path, capsys):
    out = tmp_path / "bench.json"
    result = compare.main(["--models", "grid5", "--n", "1,50", "--policy-len", "1", "--repeats", "2",
                           "--min-time", "0.05", "--backends", "numpy,numba", "--one-agent-steps", "50",
                           "--mem-n", "1000", "--json", str(out)])
    text = capsys.readouterr().out
    table = [line.split() for line in text.splitlines()]
    for backend in ("numpy", "numba"):
        for n in ("1", "50"):
            assert any(cols[:2] == ["grid5", backend] and cols[3] == n and cols[4] == "1"
                       for cols in table if len(cols) > 4), f"no table row for {backend} N={n}"
    assert "targets" not in text  # only with --targets
    assert "fa_gpu vs pymdp: no ratios (pymdp not asked for)" in text
    assert "compile / warm-up seconds:" in text
    assert "n/a" in text  # no pymdp in this run: ratio column says so

    data = json.loads(out.read_text())
    assert set(data) >= {"metadata", "rows", "targets", "scaling", "compile_seconds", "one_agent",
                         "memory", "wall_seconds"}
    meta = data["metadata"]
    assert set(meta) >= {"date", "command", "machine", "versions", "settings"}
    assert set(meta["machine"]) >= {"platform", "cpu_count", "topology"}
    assert set(meta["versions"]) >= {"numpy", "numba", "jax", "pymdp"}
    rows = data["rows"]
    assert {(r["backend"], r["N"]) for r in rows} == {(b, n) for b in ("numpy", "numba") for n in (1, 50)}
    for r in rows:
        assert set(r) >= {"model", "backend", "N", "policy_len", "agent_steps_per_s", "ms_per_step",
                          "peak_bytes_per_agent", "ratio_vs_pymdp", "status"}
        assert r["status"].startswith("ok") and r["agent_steps_per_s"] > 0
        assert r["ratio_vs_pymdp"] is None
    assert data["memory"]["bytes_per_agent"] == data["memory"]["analytic_bytes_per_agent"]
    assert result["rows"] == rows


@pytest.mark.parametrize("argv, word", [(["--models", "grid7"], "grid7"),
                                        (["--backends", "cupy"], "cupy")])
def test_compare_rejects_unknown_names(argv, word, capsys):
    with pytest.raises(SystemExit) as exc:
        compare.main(argv)
    assert exc.value.code != 0
    err = capsys.readouterr().err
    assert word in err and "choose from" in err


def test_targets_only_when_asked_and_ratios_for_users(capsys):
    rows = [dict(model="grid5", policy_len=1, N=10, backend=b, ratio_vs_pymdp=r)
            for b, r in (("numpy", 2.0), ("numba", 31.25), ("pymdp", 1.0))]
    assert compare.format_ratios(rows) == ["  grid5       policy_len=1 N=     10: numpy 2.0x, numba 31.2x"]
    compare.main(["--models", "grid5", "--n", "3", "--policy-len", "1", "--repeats", "1",
                  "--min-time", "0", "--backends", "numpy", "--mem-n", "10", "--targets"])
    assert "targets (the project's own goals" in capsys.readouterr().out
