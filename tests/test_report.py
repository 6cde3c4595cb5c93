"""Run reports: the Markdown table and plots, and the quickstart's statement of its budget."""

import os
import subprocess
import sys

from echo_jax import report

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def row(method, beta, rate, distortion):
    encoder, marginal = ("echo", "none") if method == "echo" else ("gaussian", "std_normal")
    return {
        "beta": beta,
        "seed": 0,
        "dataset": "mnist_sample",
        "network": "mlp",
        "encoder": encoder,
        "marginal": marginal,
        "test": {"rate": rate, "distortion": distortion, "neg_elbo": rate + distortion},
        "steps": 10,
        "seconds": 2.0,
    }


def test_write_report_puts_the_note_above_the_table(tmp_path):
    rows = [row("echo", 1.0, 20.0, 80.0), row("echo", 2.0, 10.0, 95.5), row("vae", 1.0, 25.0, 76.25)]
    table = report.write_report(str(tmp_path), rows, note="Budget: two steps.")
    text = (tmp_path / "results.md").read_text()
    assert text.startswith("Budget: two steps.\n\n| method |") and text.endswith(table)
    assert "| echo | mnist_sample | 2 | 0 | 10.00 | 95.50 | 105.50 | 10 | 2 |" in table
    assert "| gaussian+std_normal | mnist_sample | 1 | 0 | 25.00 | 76.25 | 101.25 | 10 | 2 |" in table
    assert (tmp_path / "rate_distortion.png").exists() and (tmp_path / "neg_elbo_vs_beta.png").exists()


def test_quickstart_says_what_budget_it_used(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "experiments.quickstart", "--workdir", str(tmp_path), "--betas", "1", "--epochs", "1"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Budget: 1 epoch of the 9,000 bundled training digits" in out.stdout
    assert "docs/reproduction.md" in out.stdout
    assert (tmp_path / "results.md").read_text().startswith("Budget: 1 epoch of")
