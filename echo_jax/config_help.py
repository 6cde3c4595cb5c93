"""The config fields and their meaning, for the command lines' ``--help``.

`echo_jax.defaults` documents every field once, in its comments: ``c.field = value  # meaning`` and a comment
block above each group of fields, whose sentences may start with a field's name (``binarize: ...``,
``num_seeds > 1 adds ...``). This module reads those comments from the source of a defaults function, so that
the help says what defaults.py says; `MEANINGS` gives the few fields whose name is their only comment a line.

Imports neither jax nor the model: ``--help`` answers at once.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import inspect
import io
import os
import re
import textwrap
import tokenize
from collections.abc import Callable, Iterator

import ml_collections

# Fields that defaults.py documents by their name alone (or, for the test split, by its neighbour's comment).
MEANINGS = {
    "experiment": "which experiment the config is for: rate_distortion | disentanglement (adds the metrics)",
    "dataset": (
        "binary_mnist | mnist | fashion_mnist | omniglot | mnist_sample (bundled, no download) | dsprites | "
        "dsprites_correlated"
    ),
    "num_test_examples": "like num_train_examples, for the test split",
    "model.mlp_hidden": "hidden layer widths of the mlp network",
    "model.latent_dim": "dimension of the latent code z",
    "model.echo_fx_bound": "bound on |f(x)| (1 for the tanh activations; the linear one is clipped to it)",
    "model.flow_hidden": "hidden layer widths of each flow step's autoregressive network",
    "model.vamp_components": "number of pseudo-inputs of the VampPrior marginal",
    "beta": "weight of the rate in the loss (when betas is unset)",
    "seed": "seed of the first model (initialisation and noise)",
    "batch_size": "examples per update (Echo's noise is built from the other examples of the batch)",
    "num_epochs": "training length in epochs (when num_train_steps is 0)",
    "learning_rate": "Adam's learning rate (peak of lr_schedule)",
    "adam_eps": "Adam's epsilon",
    "eval_every_epochs": "evaluate on the test split every this many epochs (and at the end)",
    "log_every_steps": "log the training metrics every this many steps",
    "mig_points": "points sampled for the MIG estimate",
    "factor_vae_train": "training votes of the FactorVAE score's majority-vote classifier",
    "factor_vae_eval": "evaluation votes of the FactorVAE score",
    "factor_vae_variance_points": "points for the FactorVAE score's per-dimension variances",
}


@dataclasses.dataclass(frozen=True)
class Field:
    """One leaf field of a config, for the help.

    Attributes:
      path: the dotted name after ``config.``, e.g. ``model.latent_dim``.
      default: its value.
      meaning: one line from the comments of echo_jax/defaults.py ("" for a field defaults.py lacks).
      section: the comment block above its group, less its sentences about single fields ("" above any block).
    """

    path: str
    default: object
    meaning: str
    section: str


@dataclasses.dataclass(frozen=True)
class _Doc:
    clause: str  # the sentence of the group's comment block that starts with the field's name
    comment: str  # the comment at the end of the field's line
    section: str


def _comments(source: str) -> tuple[dict[int, str], dict[int, str]]:
    """The comments of `source` by line: those alone on their line, and those after code."""
    alone, trailing = {}, {}
    lines = source.splitlines()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            row = token.start[0]
            text = token.string.lstrip("#").strip()
            (alone if lines[row - 1].lstrip().startswith("#") else trailing)[row] = text
    return alone, trailing


def _blocks(alone: dict[int, str]) -> list[tuple[int, str]]:
    """Runs of consecutive comment-only lines, joined: (last line number, text)."""
    blocks: list[tuple[int, str]] = []
    for row in sorted(alone):
        if blocks and row == blocks[-1][0] + 1:
            blocks[-1] = (row, f"{blocks[-1][1]} {alone[row]}")
        else:
            blocks.append((row, alone[row]))
    return blocks


def _split(block: str, names: set[str]) -> tuple[str, dict[str, str]]:
    """A comment block's header and the sentences that start with a field's name, by that name."""
    # A new sentence starts after "." or ";" where a field name or a capital letter follows (so "seed+1, ...
    # for every beta" stays one sentence).
    starts = "|".join(sorted(map(re.escape, names), key=len, reverse=True))
    pieces = re.split(rf"(?<=[.;])\s+(?=(?:{starts})\b(?!\.)|[A-Z])", block)
    header, clauses = [], {}
    for piece in pieces:
        name = re.match(rf"({starts})\b(?!\.)", piece)
        if name:
            clauses[name.group(1)] = re.sub(rf"^{re.escape(name.group(1))}:\s*", "", piece).rstrip(".; ")
        else:
            header.append(piece)
    return " ".join(header).rstrip(";: "), clauses


def _attribute_path(node: ast.expr, roots: dict[str, str]) -> str | None:
    """``c.model.network`` -> "model.network" (and ``m.network`` where m = c.model); None for other targets."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name) or node.id not in roots:
        return None
    return ".".join(([roots[node.id]] if roots[node.id] else []) + parts[::-1])


def _parse(function: Callable) -> tuple[Callable | None, dict[str, _Doc]]:
    """A defaults function's base (the defaults function it starts from, if any) and its fields' comments.

    Only the statements of the function's own body count: an ``if quick:`` variant's overrides say nothing
    new about a field.
    """
    source = textwrap.dedent(inspect.getsource(function))
    alone, trailing = _comments(source)
    blocks = _blocks(alone)
    body = ast.parse(source).body[0].body
    roots: dict[str, str] = {}  # variable name -> the config path it stands for ("" for the config)
    base = None
    assigned: list[tuple[str, ast.stmt]] = []
    for statement in body:
        if not (isinstance(statement, ast.Assign) and len(statement.targets) == 1):
            continue
        target, value = statement.targets[0], statement.value
        if isinstance(target, ast.Name):
            if isinstance(value, ast.Call) and not roots:  # c = ConfigDict() or c = another_defaults()
                roots[target.id] = ""
                called = value.func.id if isinstance(value.func, ast.Name) else None
                base = function.__globals__.get(called) if called else None
            elif (path := _attribute_path(value, roots)) is not None:  # m = c.model
                roots[target.id] = path
            continue
        path = _attribute_path(target, roots)
        if path is not None:
            assigned.append((path, statement))

    names = {path.rsplit(".", 1)[-1] for path, _ in assigned}
    split = {row: _split(text, names) for row, text in blocks}
    docs = {}
    for path, statement in assigned:
        above = [row for row, _ in blocks if row < statement.lineno]
        header, clauses = split[above[-1]] if above else ("", {})
        rows = range(statement.lineno, statement.end_lineno + 1)
        comment = " ".join(trailing[row] for row in rows if row in trailing)
        docs[path] = _Doc(clauses.get(path.rsplit(".", 1)[-1], ""), comment, header)
    return base, docs


def _leaves(config: ml_collections.ConfigDict, prefix: str = "") -> Iterator[tuple[str, object]]:
    for name, value in config.items():
        if isinstance(value, ml_collections.ConfigDict):
            yield from _leaves(value, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", value


def fields(function: Callable, config: ml_collections.ConfigDict | None = None) -> list[Field]:
    """Every leaf field of a defaults function's config with its value and meaning, in defaults.py's order.

    A field's meaning is what the function that first sets it says (its group's sentence about it and its
    line's comment, else `MEANINGS`), followed by what the functions built on that one add.

    Args:
      function: a defaults function, e.g. `echo_jax.defaults.rate_distortion_config`.
      config: the values to show (e.g. a config file's); default: ``function()``.
    """
    values_of = config if config is not None else function()
    chain = []  # the docs of the base function first
    while function is not None:
        name = function.__name__.removesuffix("_config")
        function, docs = _parse(function)
        chain.insert(0, (name, docs))
    values = dict(_leaves(values_of))
    order = list(dict.fromkeys([path for _, docs in chain for path in docs] + list(values)))
    out = []
    for path in order:
        if path not in values:  # a group (c.model = ConfigDict()), not a leaf
            continue
        own = [(name, docs[path]) for name, docs in chain if path in docs]
        parts = [own[0][1].clause, own[0][1].comment] if own else []
        if not any(parts):
            parts = [MEANINGS.get(path, "")]
        for name, doc in own[1:]:  # what a derived config says: "for disentanglement: ..."
            parts += [f"for {name}: {part}" for part in (doc.clause, doc.comment) if part]
        meaning = "; ".join(part for part in parts if part)
        out.append(Field(path, values[path], meaning, own[0][1].section if own else ""))
    return out


def help_text(function: Callable, config: ml_collections.ConfigDict | None = None, *, source: str = "") -> str:
    """The config fields section of a command's ``--help``: every field, its value and its meaning.

    Args:
      function: the defaults function the command's configs start from.
      config: the values to show (a config file's); default: ``function()``.
      source: where `config` came from, for the heading (e.g. "configs/rate_distortion/vae.py").
    """
    where = source or f"{function.__module__}.{function.__name__}()"
    lines = [f"config fields (values: {where}); set one with --config.FIELD=VALUE, e.g. --config.model.latent_dim=16:"]
    section = None
    for field in fields(function, config):
        if field.section != section:
            section = field.section
            lines += ["", textwrap.fill(section, 100) if section else "General:"]
        lines.append(f"  {field.path} = {field.default!r}")
        meaning = field.meaning or "(set by the config file; not a field of echo_jax/defaults.py)"
        lines += textwrap.wrap(meaning, 100, initial_indent=" " * 6, subsequent_indent=" " * 6)
    return "\n".join(lines) + "\n"


def load_config_file(argument: str) -> ml_collections.ConfigDict:
    """The config of ``--config path.py[:arg]`` (its ``get_config(arg)``), as config_flags loads it."""
    path, _, arg = argument.partition(":")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path} not found")
    spec = importlib.util.spec_from_file_location("_echo_jax_help_config", path)
    if spec is None or spec.loader is None:
        raise ValueError(f"{path} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()
