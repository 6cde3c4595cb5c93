"""--help of the experiment commands: exit status 0, every config field with its default and its meaning."""

import os
import subprocess
import sys

import ml_collections
import pytest

from echo_jax import config_help, defaults

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMANDS = [
    ("experiments.rate_distortion", defaults.rate_distortion_config),
    ("experiments.disentanglement", defaults.disentanglement_config),
]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=120)


def _leaves(config, prefix=""):
    for name, value in config.items():
        if isinstance(value, ml_collections.ConfigDict):
            yield from _leaves(value, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", value


@pytest.mark.parametrize(("module", "function"), COMMANDS)
def test_help_lists_every_field_with_its_default_and_meaning(module, function):
    out = _run("-m", module, "--help")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "--workdir" in out.stdout and "--config" in out.stdout
    for path, default in _leaves(function()):
        line = f"  {path} = {default!r}"
        assert line in lines, f"{line!r} is not in the help"
        meaning = lines[lines.index(line) + 1]
        assert meaning.startswith("      ") and meaning.strip(), f"{path} has no meaning in the help"


@pytest.mark.parametrize(("module", "function"), COMMANDS)
def test_every_field_has_a_meaning(module, function):
    found = config_help.fields(function)
    assert sorted(f.path for f in found) == sorted(path for path, _ in _leaves(function()))
    assert [f.path for f in found if not f.meaning.strip()] == []


def test_the_declared_meanings_are_of_real_fields():
    paths = {p for _, function in COMMANDS for p, _ in _leaves(function())}
    assert set(config_help.MEANINGS) - paths == set()


def test_help_shows_a_config_files_values():
    out = _run("-m", "experiments.rate_distortion", "--config", "configs/rate_distortion/vae.py:quick", "-h")
    assert out.returncode == 0, out.stderr
    assert "  model.encoder = 'gaussian'" in out.stdout.splitlines()
    assert "  dataset = 'mnist_sample'" in out.stdout.splitlines()


def test_help_with_a_missing_config_file_shows_the_defaults():
    out = _run("-m", "experiments.rate_distortion", "--config=configs/nope.py", "--help")
    assert out.returncode == 0, out.stderr
    assert "config file configs/nope.py not found" in out.stdout
    assert "  model.encoder = 'echo'" in out.stdout.splitlines()


def test_helpfull_exits_0_and_adds_absls_flags():
    out = _run("-m", "experiments.disentanglement", "--helpfull")
    assert out.returncode == 0, out.stderr
    assert "--log_dir" in out.stdout and "  representation = 'sample'" in out.stdout.splitlines()


def test_help_does_not_import_jax():
    code = (
        "import runpy, sys\n"
        "sys.argv = ['rate_distortion', '--help']\n"
        "try:\n"
        "    runpy.run_module('experiments.rate_distortion', run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
        "print('jax imported:', 'jax' in sys.modules, file=sys.stderr)\n"
    )
    out = _run("-c", code)
    assert out.returncode == 0, out.stderr
    assert "jax imported: False" in out.stderr


# A pair of defaults functions in defaults.py's style, to test the reading of the comments.
def _base_config(quick: bool = False) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.name = "x"  # the trailing comment

    # Group. alpha: the sentence about alpha; gamma > 0 adds seed+1, ... for every beta. Not a field.
    c.alpha = 1
    c.gamma = 0  # and its own comment
    c.group = ml_collections.ConfigDict()
    g = c.group
    g.size = 3  # the size of the group
    if quick:
        c.alpha = 2  # not documentation
    return c


def _derived_config(quick: bool = False) -> ml_collections.ConfigDict:
    c = _base_config()
    c.alpha = 5  # a derived remark
    c.group.size = 4

    # Extra things.
    c.extra = True  # only here
    return c


def test_the_comments_become_meanings():
    got = {f.path: f for f in config_help.fields(_derived_config)}
    assert list(got) == ["name", "alpha", "gamma", "group.size", "extra"]
    assert got["name"].meaning == "the trailing comment" and got["name"].section == ""
    assert got["alpha"].meaning == "the sentence about alpha; for _derived: a derived remark"
    assert got["alpha"].default == 5
    assert got["gamma"].meaning == "gamma > 0 adds seed+1, ... for every beta; and its own comment"
    assert got["gamma"].section == "Group. Not a field."
    assert got["group.size"].meaning == "the size of the group" and got["group.size"].default == 4
    assert got["extra"].meaning == "only here" and got["extra"].section == "Extra things."
