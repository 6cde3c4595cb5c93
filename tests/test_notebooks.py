"""The notebooks in notebooks/ run end to end, and are committed with the outputs of a full run.

Each notebook is executed with ``ECHO_JAX_NOTEBOOK_SMOKE=1`` (its tiny settings) in a kernel running this
very interpreter, with the repository root as working directory; any cell error fails the test. The outputs
committed with the notebooks come from a run at their real settings:

    python -m tests.test_notebooks                          # every notebook this file knows (a few minutes each)
    python -m tests.test_notebooks notebooks/echo_noise_layer.ipynb

executes them the same way, without the smoke switch, and writes them back with their outputs.
"""

from __future__ import annotations

import base64
import json
import re
import sys
import tempfile
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
# The notebooks that install echo-jax with the shared install cell and are committed with their outputs
# (trained_models.ipynb, which reads the model zoo from a clone, has its own first cell).
EXECUTED = ("disentanglement_metrics.ipynb", "echo_noise_layer.ipynb", "rate_distortion_sweep.ipynb")
SMOKE_VARIABLE = "ECHO_JAX_NOTEBOOK_SMOKE"
CELL_TIMEOUT_S = 300
FULL_RUN_CELL_TIMEOUT_S = 3600  # a cell of a full run trains whole sweeps
REPOSITORY = "https://github.com/echo-jax/echo-jax"
INSTALL_TARGET = f"echo-jax @ git+{REPOSITORY}"
# Committed outputs stay small: a notebook's file, and each image in it.
MAX_NOTEBOOK_BYTES = 400_000
MAX_IMAGE_BYTES = 120_000


def colab_badge(name: str) -> str:
    """The "Open in Colab" badge of notebook `name`, pointing at its path in the repository."""
    url = f"https://colab.research.google.com/github/echo-jax/echo-jax/blob/main/notebooks/{name}"
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({url})"


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


def execute(notebook: nbformat.NotebookNode, kernel_dir: Path, timeout: int = CELL_TIMEOUT_S) -> None:
    """Runs every cell of `notebook` in place (outputs into its cells) in this interpreter, from the repository
    root; raises CellExecutionError, with the cell and its traceback, on any error."""
    client = NotebookClient(
        notebook,
        km=_kernel_manager(kernel_dir),
        timeout=timeout,
        resources={"metadata": {"path": str(REPO_ROOT)}},
        record_timing=False,  # no per-cell timestamps in the committed files
    )
    client.execute()


def _code_cells(path: Path) -> list:
    return [cell for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "code"]


def _images(notebook) -> list[bytes]:
    return [
        base64.b64decode(output.data["image/png"])
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if "image/png" in output.get("data", {})
    ]


def test_the_expected_notebooks_are_present():
    assert set(EXECUTED) <= {path.name for path in NOTEBOOKS}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_opens_in_colab_from_its_path(path: Path):
    notebook = nbformat.read(path, as_version=4)
    assert notebook.cells[0].cell_type == "markdown" and colab_badge(path.name) in notebook.cells[0].source


@pytest.mark.parametrize("name", EXECUTED)
def test_notebook_is_committed_with_the_outputs_of_a_full_run(name: str):
    path = NOTEBOOK_DIR / name
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    refresh = f"refresh with: python -m tests.test_notebooks notebooks/{name}"
    assert notebook.metadata.get("echo_jax", {}).get("smoke") is False, f"{name} was not executed in full; {refresh}"
    assert [cell.execution_count for cell in code_cells] == list(range(1, len(code_cells) + 1)), refresh
    outputs = [output for cell in code_cells for output in cell.outputs]
    assert outputs and not [o for o in outputs if o.output_type == "error"], refresh
    assert path.stat().st_size <= MAX_NOTEBOOK_BYTES, f"{name}: {path.stat().st_size} bytes of outputs"
    images = _images(notebook)
    assert 1 <= len(images) <= 4 and max(map(len, images)) <= MAX_IMAGE_BYTES, [len(image) for image in images]
    text = json.dumps([cell.outputs for cell in code_cells])
    assert str(REPO_ROOT) not in text and tempfile.gettempdir() + "/" not in text  # no paths of this machine
    # The install cell is the first code cell, and the next one reads the smoke switch the tests rely on.
    assert INSTALL_TARGET in code_cells[0].source
    assert SMOKE_VARIABLE in code_cells[1].source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_runs(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(SMOKE_VARIABLE, "1")
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the notebooks' tempfile directories land here
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    notebook.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.executable, end='')"))
    execute(notebook, tmp_path / "kernels")
    errors = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "error"
    ]
    assert not errors
    assert notebook.cells[-1].outputs[0].text == sys.executable  # the cells ran in this interpreter


def test_the_install_cells_are_one_cell():
    assert len({_code_cells(NOTEBOOK_DIR / name)[0].source for name in EXECUTED}) == 1


def test_setup_cfg_names_the_repository_the_notebooks_install_from():
    assert re.search(rf"^url = {re.escape(REPOSITORY)}$", (REPO_ROOT / "setup.cfg").read_text(), re.M)


@pytest.mark.parametrize(
    "importable, jax_after",
    [(True, None), (False, "0.10.2"), (False, "0.11.0")],
    ids=["importable", "keeps_jax", "new_jax"],
)
def test_install_cell(monkeypatch: pytest.MonkeyPatch, capsys, importable, jax_after):
    """The install cell with echo_jax importable (nothing happens) and not (Colab: pip, stubbed out, installs it
    from the repository; the message says whether the jax that was there stayed)."""
    import importlib.metadata
    import importlib.util
    import subprocess

    versions = {"jax": "0.10.2"}  # e.g. Colab's own jax, before the install
    find_spec = importlib.util.find_spec

    def version(package):
        if package not in versions:
            raise importlib.metadata.PackageNotFoundError(package)
        return versions[package]

    commands = []

    def pip(command, check):
        commands.append(command)
        versions.update({"echo-jax": "0.2.0", "jax": jax_after})

    monkeypatch.setattr(importlib.metadata, "version", version)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: find_spec(name, *a) if importable else None)
    monkeypatch.setattr(subprocess, "run", pip)
    exec(_code_cells(NOTEBOOK_DIR / EXECUTED[0])[0].source, {})
    printed = capsys.readouterr().out
    if importable:
        assert not commands and not printed
        return
    assert commands == [[sys.executable, "-m", "pip", "install", "-q", INSTALL_TARGET]]
    if jax_after == "0.10.2":
        assert "echo-jax 0.2.0 installed; jax 0.10.2 was already here" in printed
    else:
        assert "another jax than the 0.10.2 installed here: pip installed jax 0.11.0" in printed
        assert "jax[cuda12]==0.11.0" in printed


def main(argv: list[str]) -> None:
    """Executes notebooks at their real settings and writes them back with their outputs."""
    import os

    os.environ.pop(SMOKE_VARIABLE, None)
    # tqdm warns that ipywidgets is missing (Colab has it), naming this machine's site-packages.
    os.environ["PYTHONWARNINGS"] = "ignore:IProgress not found"
    paths = [Path(arg).resolve() for arg in argv] or [NOTEBOOK_DIR / name for name in EXECUTED]
    for path in paths:
        notebook = nbformat.read(path, as_version=4)
        for cell in notebook.cells:
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = [], None
        with tempfile.TemporaryDirectory() as kernels:
            execute(notebook, Path(kernels), timeout=FULL_RUN_CELL_TIMEOUT_S)
        notebook.metadata["echo_jax"] = {"smoke": False, "executed_by": "python -m tests.test_notebooks"}
        nbformat.validate(notebook)
        nbformat.write(notebook, path)
        print(f"{path.relative_to(REPO_ROOT)}: executed and written ({path.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main(sys.argv[1:])
