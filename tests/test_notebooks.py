"""The notebooks in notebooks/ run end to end, and are committed without outputs.

Each notebook is executed with ``ECHO_JAX_NOTEBOOK_SMOKE=1`` (its tiny settings) in a kernel running this
very interpreter, with the repository root as working directory; any cell error fails the test.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
EXPECTED = {"echo_noise_layer.ipynb", "rate_distortion_sweep.ipynb", "disentanglement_metrics.ipynb"}
SMOKE_VARIABLE = "ECHO_JAX_NOTEBOOK_SMOKE"
CELL_TIMEOUT_S = 300


def _kernel_manager(kernel_dir: Path) -> KernelManager:
    """A kernel manager whose only kernel spec runs `sys.executable`, whatever kernels are installed.

    The spec is written to a private directory and the spec manager looks nowhere else, so neither a
    user-wide ``python3`` kernel nor the lack of an installed one can change which Python runs the cells.
    """
    spec_dir = kernel_dir / "python3"
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (test interpreter)",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    spec_manager = KernelSpecManager(kernel_dirs=[str(kernel_dir)], ensure_native_kernel=False)
    return KernelManager(kernel_name="python3", kernel_spec_manager=spec_manager)


def test_the_expected_notebooks_are_present():
    assert {path.name for path in NOTEBOOKS} == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_is_committed_clean(path: Path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    for index, cell in enumerate(code_cells):
        assert cell.outputs == [], f"{path.name}: code cell {index} holds outputs; strip them before committing"
        assert cell.execution_count is None, f"{path.name}: code cell {index} has an execution count"
    # The install cell runs only on Colab, and the next one reads the smoke switch the tests rely on.
    assert "google.colab" in code_cells[0].source
    assert SMOKE_VARIABLE in code_cells[1].source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_runs(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(SMOKE_VARIABLE, "1")
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the notebooks' tempfile directories land here
    notebook = nbformat.read(path, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.executable, end='')"))
    client = NotebookClient(
        notebook,
        km=_kernel_manager(tmp_path / "kernels"),
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(REPO_ROOT)}},
    )
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on any error
    errors = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "error"
    ]
    assert not errors
    assert notebook.cells[-1].outputs[0].text == sys.executable  # the cells ran in this interpreter


def _install_cell(path: Path) -> str:
    return next(cell.source for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "code")


def test_the_install_cells_are_one_cell():
    assert len({_install_cell(path) for path in NOTEBOOKS}) == 1


@pytest.mark.parametrize(
    "install_from, jax_after",
    [("", None), ("git+https://example.org/echo-jax", "0.10.2"), ("/content/drive/MyDrive/echo-jax", "0.11.0")],
)
def test_install_cell_on_colab(monkeypatch: pytest.MonkeyPatch, capsys, install_from, jax_after):
    """The install cell as Colab runs it (google.colab importable, echo-jax absent), with pip stubbed out."""
    import importlib.metadata
    import subprocess
    import types

    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setitem(sys.modules, "google", sys.modules.get("google") or types.ModuleType("google"))
    versions = {"jax": "0.10.2"}  # Colab's own jax, before the install

    def version(package):
        if package not in versions:
            raise importlib.metadata.PackageNotFoundError(package)
        return versions[package]

    commands = []

    def pip(command, check):
        commands.append(command)
        versions.update({"echo-jax": "0.1.0", "jax": jax_after})

    monkeypatch.setattr(importlib.metadata, "version", version)
    monkeypatch.setattr(subprocess, "run", pip)
    source = _install_cell(NOTEBOOKS[0]).replace(
        'ECHO_JAX_INSTALL_FROM = ""', f"ECHO_JAX_INSTALL_FROM = {install_from!r}"
    )
    if not install_from:
        with pytest.raises(RuntimeError, match="Set ECHO_JAX_INSTALL_FROM at the top of this cell"):
            exec(source, {})
        assert not commands
        return
    exec(source, {})
    assert commands == [[sys.executable, "-m", "pip", "install", "-q", install_from]]
    printed = capsys.readouterr().out
    if jax_after == "0.10.2":
        assert "jax 0.10.2 is Colab's own" in printed
    else:
        assert "Colab's 0.10.2: pip installed jax 0.11.0" in printed and "jax[cuda12]==0.11.0" in printed
