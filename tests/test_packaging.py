"""Packaging: install_requires is what the library imports, and the extras hold what it imports lazily."""

import ast
import configparser
import importlib.metadata
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _requirements(text: str) -> set[str]:
    names = (re.split(r"[<>=!~\[; ]", line.strip())[0] for line in text.splitlines())
    return {name.lower().replace("_", "-") for name in names if name and not name.startswith("#")}


def _imports() -> tuple[set[str], set[str]]:
    """Third-party top-level modules the library imports: at module level, and inside functions."""
    top, lazy = set(), set()
    for folder, _, files in os.walk(os.path.join(ROOT, "echo_jax")):
        for name in files:
            if not name.endswith(".py"):
                continue
            tree = ast.parse(open(os.path.join(folder, name)).read())
            module_level = {id(node) for node in tree.body}
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    modules = [node.module]
                else:
                    continue
                for module in modules:
                    root = module.split(".")[0]
                    if root in sys.stdlib_module_names or root in ("echo_jax", "__future__"):
                        continue
                    (top if id(node) in module_level else lazy).add(root)
    return top, lazy - top


DISTRIBUTIONS = importlib.metadata.packages_distributions()


def _distribution(module: str) -> str:
    (dist, *_) = DISTRIBUTIONS[module]
    return dist.lower().replace("_", "-")


def test_install_requires_is_what_the_library_imports():
    config = configparser.ConfigParser()
    config.read(os.path.join(ROOT, "setup.cfg"))
    required = _requirements(config["options"]["install_requires"])
    top, lazy = _imports()
    imported = {_distribution(m) for m in top}
    assert imported - required == set(), "imported at module level but not in install_requires"
    # Imported inside a function: a dependency, or an extra's (tfds, hdf5, tensorboard).
    extras = set().union(*(_requirements(v) for v in config["options.extras_require"].values()))
    lazily = {_distribution(m) for m in lazy if m in DISTRIBUTIONS}
    assert lazily - required - extras == set()
    # Nothing in install_requires that no module imports (tfp-nightly comes with distrax).
    assert required - imported - lazily == set()
