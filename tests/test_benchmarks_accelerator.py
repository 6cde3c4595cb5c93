"""`python -m benchmarks.accelerator` in its smoke size: it runs on the CPU and writes the Markdown table."""

import os
import subprocess
import sys

import jax

from benchmarks import accelerator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_smoke_size_writes_the_sweep_table(tmp_path):
    out = tmp_path / "table.md"
    accelerator.main(["--out", str(out)] + ([] if jax.default_backend() == "cpu" else ["--smoke"]))  # CPU: smoke
    text = out.read_text()
    assert text.startswith("# Sweep speed: ") and "## MLP 784-32-4" in text
    header = "| N | back to back | vmapped sweep | vmapped sweep, on-device loop | MiB per model (same order) |"
    assert header in text
    rows = [line for line in text.splitlines() if line.startswith("| 1 |") or line.startswith("| 2 |")]
    assert len(rows) == 2 and all("(1.00x)" in row and "skipped" not in row for row in rows)


def test_rows_past_the_time_budget_are_marked_skipped(tmp_path):
    text = accelerator.run(accelerator.SMOKE, str(tmp_path / "t.md"), budget_s=0.0)
    assert text.count("skipped") == 6 and (tmp_path / "t.md").read_text() == text


def test_runs_as_a_module():
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.accelerator", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and "--smoke" in proc.stdout, proc.stderr[-2000:]
