"""README.md runs as written: its Python blocks execute, and its commands name modules, flags and files that exist.

The Python blocks run one by one, each in a fresh namespace, from a scratch folder. The one that opens a trained
model reads ``runs/echo_q``, the work directory of the README's ``:quick`` rate-distortion command: a test-sized
run of the same config file stands in for it. The bash blocks' ``python -m`` commands are not run (they train):
each module must exist, and each flag must be one its ``--help`` lists (``--config.FIELD`` a config field).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import shlex
import subprocess
import sys
import types

import pytest

from tests.helpers import load_config, tiny

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = open(os.path.join(REPO, "README.md")).read()
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)


def blocks(language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(README) if lang == language]


def commands() -> list[tuple[str, list[str]]]:
    """(module, arguments) of every ``python -m`` command in the README's bash blocks (continuations joined)."""
    found = []
    for block in blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
            lexer.whitespace_split = True  # words split at blanks and at && ; | (comments dropped)
            command = []
            for token in [*lexer, ";"]:
                if token in ("&&", ";", "||", "|"):
                    if command[:2] == ["python", "-m"]:
                        found.append((command[2], command[3:]))
                    command = []
                else:
                    command.append(token)
    return found


@functools.cache
def help_text(module: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", module, "--help"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, f"python -m {module} --help: {out.stderr[-2000:]}"
    return out.stdout


def test_the_readme_has_code_to_check():
    assert len(blocks("python")) >= 3 and len(commands()) >= 10


@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_python_block_runs(index, tmp_path, monkeypatch):
    from echo_jax import train

    block = blocks("python")[index]
    monkeypatch.chdir(tmp_path)
    if "runs/echo_q" in block:
        config = tiny(load_config(os.path.join(REPO, "configs", "rate_distortion", "echo.py"), "quick"))
        train.train_and_evaluate(config, "runs/echo_q")
    module = types.ModuleType(f"readme_block_{index}")  # a real module: dataclasses (Flax modules) look it up
    monkeypatch.setitem(sys.modules, module.__name__, module)
    exec(compile(block, f"README.md, python block {index}", "exec"), module.__dict__)


@pytest.mark.parametrize(("module", "args"), commands(), ids=lambda v: v if isinstance(v, str) else " ".join(v)[:60])
def test_command_names_a_module_and_flags_that_exist(module, args):
    assert importlib.util.find_spec(module) is not None, f"python -m {module}: no such module"
    for i, arg in enumerate(args):
        if not arg.startswith("--"):
            if re.fullmatch(r"[\w./-]+\.(ipynb|py)", arg) and not args[i - 1 : i] == ["--out"]:
                assert os.path.exists(os.path.join(REPO, arg)), f"{arg} does not exist"
            continue
        name, _, value = arg[2:].partition("=")
        if name.startswith("config."):
            field = name.removeprefix("config.")
            assert f"  {field} = " in help_text(module), f"python -m {module}: {field} is not a config field"
            continue
        assert re.search(rf"--(\[no\])?{re.escape(name)}\b", help_text(module)), f"python -m {module} has no --{name}"
        if name in ("config", "campaign"):
            path = (value or args[i + 1]).split(":")[0]
            assert os.path.isfile(os.path.join(REPO, path)), f"--{name} {path}: no such file"


def test_the_files_the_readme_links_exist():
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README):
        if not target.startswith(("http://", "https://")):
            assert os.path.exists(os.path.join(REPO, target)), target


def test_the_extras_the_readme_installs_exist():
    import configparser

    config = configparser.ConfigParser()
    config.read(os.path.join(REPO, "setup.cfg"))
    named = {extra for group in re.findall(r'"\.\[([\w,-]+)\]"', README) for extra in group.split(",")}
    assert named and named <= set(config["options.extras_require"]), named - set(config["options.extras_require"])
