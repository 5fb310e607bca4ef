"""The README's example runs and prints what the README says."""
import contextlib
import io
import re
from pathlib import Path


def test_readme_example_runs():
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = re.search(r"## Example\n\n```python\n(.*?)```", text, re.S).group(1)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    assert out.getvalue().strip() == "(10000, 9) (10000, 6)"


def test_readme_runtime_example_runs(tmp_path, monkeypatch):
    """The 'Simulation runtime' block, scaled down (200 agents, 6 steps, checkpoint every 3)."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = re.search(r"## Simulation runtime\n\n```python\n(.*?)```", text, re.S).group(1)
    code = code.replace("10_000", "200").replace("100, recorder", "6, recorder").replace(
        "checkpoint_every=50", "checkpoint_every=3")
    monkeypatch.chdir(tmp_path)
    scope = {"fa_gpu": __import__("fa_gpu")}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["engine2"].t.tolist() == [6] * 200
    assert (tmp_path / "run.zarr").is_dir()
