"""Campaigns: many runs (configs x betas x seeds) that accumulate, run by run, under ``results/``.

A campaign file (ml_collections, e.g. ``configs/campaigns/paper_mlp.py``) lists groups of runs in
priority order; each group names config files (its variants), overrides, betas and seeds. Every run is
one model, identified by its resolved config: `run_key` hashes that config, so a changed config is a
new run and never mixes with old results, and the same run asked for by two groups is trained once.

`run_campaign` trains what is missing, several runs per program (a sweep) where they differ only in beta
and seed, resumes half-done programs from their checkpoints, and stops cleanly at a time budget. Each
finished run gets a directory ``<results>/<campaign>/<dataset>/<variant>/beta<b>_seed<s>_<key>/`` with
its own config.json, metrics.jsonl and results.json (small files, meant to be committed); checkpoints
stay in the programs' scratch work directories.

All runs of a campaign share one data stream (``data_seed``, default 0): seeds vary the models'
initialisation and noise, which lets a sweep train them together and pairs Echo with the VAE on the
same batches.

Provenance: every run's results.json records the commits that trained it (``run.commits``; ``run.commit`` is
the one that finished it) and the environments (``run.environments``: package versions, device, CPU model), since
one config and commit agree bit for bit only within one environment. The runner refuses a work tree with
uncommitted changes unless asked (``allow_dirty``); a run trained from one keeps the diff beside its results
(``code-<hash>.diff``).
A run counts as finished only when its folder can be trusted (`scan_results`: its files parse, its numbers are
finite, its config's key is the folder's); any other is trained again, and the status says why.
`migrate_keys` renames results folders (and the programs' work directories) whose key an earlier key scheme
computed.
"""

from __future__ import annotations

import copy
import dataclasses
import glob
import hashlib
import importlib.util
import json
import os
import re
import shutil
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence

import ml_collections

# Training (jax, the model, the training loop) is imported where a run is trained or its files named: planning a
# campaign and reading its results folders need none of it, so a bad campaign file fails at once.
from echo_jax import files, identity, validation
from echo_jax import workdir as workdir_lib
from echo_jax.errors import ConfigError, UserError
from echo_jax.identity import run_key, single_run_config

LAYOUTS = ("auto", "per_run", "per_beta", "per_variant")


# ----------------------------------------------------------------------------------------------- spec


def group(
    name: str,
    variants: Sequence[tuple[str, str]],
    *,
    betas: Sequence[float],
    seeds: Sequence[int],
    overrides: dict | None = None,
    description: str = "",
) -> ml_collections.ConfigDict:
    """One group of a campaign file.

    Args:
      name: the group's name (e.g. "A").
      variants: (name, config file[:arg]) pairs, e.g. ("echo", "rate_distortion/echo.py:quick"); a
        relative file is found under the campaign's `config_root`. A variant name may carry its own
        overrides as a third item, a dict.
      betas: in priority order (the first ones are trained first).
      seeds: model seeds.
      overrides: config fields set for every variant of the group (a nested dict for a nested group:
        ``{"model": {"tc_weight": 10.0}}``).
      description: one line for the status and the report.
    """
    return ml_collections.ConfigDict(
        {
            "name": name,
            "description": description,
            "betas": tuple(float(b) for b in betas),
            "seeds": tuple(int(s) for s in seeds),
            "overrides": dict(overrides or {}),
            "variants": tuple(
                ml_collections.ConfigDict({"name": v[0], "config": v[1], "overrides": dict(v[2]) if len(v) > 2 else {}})
                for v in variants
            ),
        }
    )


def load_config_file(spec: str, root: str = ".") -> ml_collections.ConfigDict:
    """The config of ``path[:arg]`` (a file with ``get_config(arg)``), like ``--config path:arg``."""
    path, _, arg = spec.partition(":")
    if not os.path.isabs(path):
        path = os.path.join(root, path)
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path} not found (from {spec!r})")
    module_spec = importlib.util.spec_from_file_location(f"_campaign_config_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    config = module.get_config(arg) if arg else module.get_config()
    validation.require_config_dict(config, f"config file {path}")
    return config


# ----------------------------------------------------------------------------------------------- plan


@dataclasses.dataclass(eq=False)
class Run:
    """One model of a campaign: a single-run config (one beta, one seed) and where its files go."""

    variant: str
    beta: float
    seed: int
    config: ml_collections.ConfigDict
    key: str
    groups: list[str]
    keep_params: bool = False  # its results folder keeps the parameters file (the campaign's `keep_params`)

    @property
    def path(self) -> str:
        """Its directory under the campaign's results folder."""
        return os.path.join(self.config.dataset, self.variant, f"beta{self.beta:g}_seed{self.seed}_{self.key}")

    def describe(self) -> str:
        return f"{self.variant} {self.config.dataset} beta={self.beta:g} seed={self.seed}"


@dataclasses.dataclass(eq=False)
class Program:
    """Runs trained together in one sweep: the same config but for beta and seed."""

    runs: list[Run]
    config: ml_collections.ConfigDict

    @property
    def key(self) -> str:
        return program_key(self.config)


def program_key(config: ml_collections.ConfigDict) -> str:
    """A program's work directory name: the run key of its config and a hash of its models' run keys."""
    keys = [run_key(single_run_config(config, b, s)) for b, s in identity.runs_of(config)]
    return run_key(config) + "-" + hashlib.sha256(json.dumps(keys).encode()).hexdigest()[:6]


def config_root(campaign_path: str) -> str:
    """Where a campaign file's relative config paths are found: the folder above ``campaigns/``."""
    return os.path.dirname(os.path.dirname(os.path.abspath(campaign_path)))


def plan(
    campaign: ml_collections.ConfigDict,
    root: str,
    groups: Iterable[str] | None = None,
    variants: Iterable[str] | None = None,
    betas: Iterable[float] | None = None,
    datasets: Iterable[str] | None = None,
) -> list[Run]:
    """Every run the campaign asks for, in priority order (group, then beta, then variant, then seed).

    A run asked for by several groups appears once, at its first place, listing all its groups.

    Args:
      groups: only these groups (default: all).
      variants: only these variants of them (default: all), to train first the runs that decide a question.
      betas: only these betas of them (default: all), likewise.
      datasets: only the runs on these datasets (default: all), likewise.
    """
    validation.require_config_dict(campaign, "the campaign file")
    names = [g.name for g in campaign.groups]
    wanted = list(groups) if groups else names
    unknown = sorted(set(wanted) - set(names))
    if unknown:
        raise ConfigError(f"unknown group(s) {', '.join(unknown)}; the campaign has {', '.join(names)}")
    offered = list(dict.fromkeys(v.name for g in campaign.groups if g.name in wanted for v in g.variants))
    unknown = sorted(set(variants or ()) - set(offered))
    if unknown:
        raise ConfigError(
            f"unknown variant(s) {', '.join(unknown)}; the group(s) {', '.join(wanted)} have {', '.join(offered)}"
        )
    betas = {float(b) for b in betas or ()}
    offered_betas = sorted({b for g in campaign.groups if g.name in wanted for b in g.betas})
    unknown = sorted(betas - set(offered_betas))
    if unknown:
        raise ConfigError(
            f"unknown beta(s) {', '.join(f'{b:g}' for b in unknown)}; the group(s) {', '.join(wanted)} have "
            f"{', '.join(f'{b:g}' for b in offered_betas)}"
        )
    runs: dict[str, Run] = {}
    for g in campaign.groups:
        if g.name not in wanted:
            continue
        bases = []
        for v in g.variants:
            if variants and v.name not in variants:
                continue
            base = load_config_file(v.config, root)
            _override(base, {**campaign.get("overrides", {}), **g.overrides, **v.overrides})
            bases.append((v.name, base))
        for beta in g.betas:
            if betas and beta not in betas:
                continue
            for name, base in bases:
                for seed in g.seeds:
                    config = single_run_config(base, beta, seed)
                    key = run_key(config)
                    if key in runs:
                        if g.name not in runs[key].groups:
                            runs[key].groups.append(g.name)
                        continue
                    keep = keeps_params(campaign, name, config)
                    runs[key] = Run(name, float(beta), int(seed), config, key, [g.name], keep)
    found = list(runs.values())
    if datasets:
        offered_datasets = sorted({r.config.dataset for r in found})
        unknown = sorted(set(datasets) - set(offered_datasets))
        if unknown:
            raise ConfigError(
                f"unknown dataset(s) {', '.join(unknown)}; the runs asked for are on {', '.join(offered_datasets)}"
            )
        found = [r for r in found if r.config.dataset in set(datasets)]
    return found


def keeps_params(campaign: ml_collections.ConfigDict, variant: str, config: ml_collections.ConfigDict) -> bool:
    """Whether the campaign's ``keep_params`` (dicts of ``variants``, ``dataset``, ``betas``, ``seeds`` and
    ``num_epochs``; a missing entry matches everything) asks the run of `variant` with this single-run `config`
    to keep its parameters file."""
    for rule in campaign.get("keep_params", ()):
        if (
            variant in rule.get("variants", (variant,))
            and config.dataset == rule.get("dataset", config.dataset)
            and float(config.beta) in [float(b) for b in rule.get("betas", (config.beta,))]
            and int(config.seed) in [int(s) for s in rule.get("seeds", (config.seed,))]
            and int(config.num_epochs) == int(rule.get("num_epochs", config.num_epochs))
        ):
            return True
    return False


def is_done(run: Run, finished: dict[str, str]) -> bool:
    """A run is done when its results folder exists and, if it keeps its parameters, holds them."""
    directory = finished.get(run.key)
    if directory is None:
        return False
    if not run.keep_params:
        return True
    from echo_jax import trained

    return os.path.isfile(os.path.join(directory, trained.SIDECAR_FILE))


# What every finished run's results row records since the training split's terms and the diagnostics were added.
RECORDED = ("train", "diagnostics")


def is_outdated(directory: str) -> bool:
    """Whether the finished run (or program) in `directory` predates what this version records of every model: a
    row of its results.json lacks one of `RECORDED`, or a diagnostic added since (`needs_new_diagnostics`; a run
    that kept its parameters gets it from `recompute_diagnostics` instead). ``run_campaign(retrain_outdated=True)``
    trains it again."""
    with open(os.path.join(directory, "results.json")) as f:
        rows = json.load(f)["results"]
    return any(any(name not in row for name in RECORDED) or needs_new_diagnostics(row) for row in rows)


def _override(config: ml_collections.ConfigDict, overrides, prefix: str = "") -> None:
    """Sets `overrides` on `config`; a nested dict sets fields of a nested group (``{"model": {...}}``)."""
    for name, value in overrides.items():
        if name not in config:
            raise ConfigError(f"override {prefix}{name}={value!r}: the config has no field {prefix}{name!r}")
        if isinstance(value, (dict, ml_collections.ConfigDict)) and isinstance(config[name], ml_collections.ConfigDict):
            _override(config[name], value, f"{prefix}{name}.")
        else:
            config[name] = value


def programs(missing: Sequence[Run], layout: str = "auto") -> list[Program]:
    """Packs runs that differ only in beta and seed into sweep programs, keeping the priority order.

    per_run: one program per run. Its results land as soon as it is trained, not when the slowest model of a
    program is: on a single CPU device (whose sweep steps models in turn, so packing saves no time) the layout
    for long runs, or for sessions shorter than a program.
    per_beta: one program per (variant, beta) with its missing seeds (each contiguous range of seeds):
    what a single CPU device wants, since its models run back to back anyway and results land sooner.
    per_variant: all missing betas and seeds of a variant in one program when they form a full grid
    (what accelerators want: one vmapped program); otherwise per beta. auto: per_beta when the sweep
    strategy resolves to sequential, else per_variant.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown program layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if layout == "auto":
        from echo_jax import sweep

        layout = "per_beta" if sweep.resolve_strategy("auto") == "sequential" else "per_variant"
    families: dict[str, list[Run]] = defaultdict(list)
    for r in missing:
        families[run_key(_family_config(r.config))].append(r)
    out = []
    for family in families.values():
        betas = list(dict.fromkeys(r.beta for r in family))
        seeds = sorted({r.seed for r in family})
        grid = len(family) == len(betas) * len(seeds) and seeds == list(range(seeds[0], seeds[0] + len(seeds)))
        if layout == "per_variant" and grid:
            out.append(_program(family, betas, seeds))
            continue
        for beta in betas:
            seeds_of_beta = sorted(r.seed for r in family if r.beta == beta)
            for chunk in [[s] for s in seeds_of_beta] if layout == "per_run" else _contiguous(seeds_of_beta):
                out.append(_program([r for r in family if r.beta == beta and r.seed in chunk], [beta], chunk))
    first = {id(r): i for i, r in enumerate(missing)}
    return sorted(out, key=lambda p: min(first[id(r)] for r in p.runs))


def _family_config(config):
    family = copy.deepcopy(config)
    family.beta, family.seed = 0.0, 0
    return family


def _contiguous(seeds: list[int]) -> list[list[int]]:
    chunks: list[list[int]] = []
    for s in seeds:
        if chunks and s == chunks[-1][-1] + 1:
            chunks[-1].append(s)
        else:
            chunks.append([s])
    return chunks


def _program(runs: list[Run], betas: list[float], seeds: list[int]) -> Program:
    config = copy.deepcopy(runs[0].config)
    config.betas = ",".join(repr(float(b)) for b in betas)
    config.seed, config.num_seeds = seeds[0], len(seeds)
    by_pair = {(r.beta, r.seed): r for r in runs}
    ordered = [by_pair[(float(b), s)] for b, s in identity.runs_of(config)]  # the sweep's model order
    return Program(ordered, config)


# ----------------------------------------------------------------------------------------------- status


def finished_runs(results_dir: str) -> dict[str, str]:
    """key -> directory of every finished run under `results_dir` whose files can be trusted (`scan_results`)."""
    return scan_results(results_dir)[0]


def scan_results(results_dir: str) -> tuple[dict[str, str], dict[str, str]]:
    """The run folders under `results_dir` (those with a results.json): key -> directory of the finished ones, and
    key -> why for the others, which are trained again. A run is finished when its config.json and results.json
    parse, its config's `run_key` is its folder's key, and its results are one finite row of its (beta, seed)."""
    found, rejected = {}, {}
    for path in sorted(glob.glob(os.path.join(results_dir, "**", "results.json"), recursive=True)):
        directory = os.path.dirname(path)
        if directory.endswith(files.REPLACED):  # a run being replaced, or one a kill left aside: not yet settled
            continue
        key = os.path.basename(directory).rsplit("_", 1)[-1]
        try:
            config = workdir_lib.read_config(os.path.join(directory, "config.json"))
            if run_key(config) != key:
                raise UserError(f"config.json's run key is {run_key(config)}, not the folder's {key}")
            workdir_lib.read_results(directory, ml_collections.ConfigDict(config))
        except (UserError, AttributeError, KeyError, TypeError, ValueError) as e:
            rejected[key] = " ".join(str(e).split(";")[0].replace(directory + os.sep, "").split())
            continue
        found[key] = directory
    return found, rejected


def count_sentence(runs: Sequence[Run], done: dict[str, str], rejected: dict[str, str] | None = None) -> str:
    """How many of a campaign's runs are finished, in the one sentence that ``--status`` and the reproduction
    report both give.

    A run asked for by several groups is one run (one key, trained once): the sentence counts it once and says
    so, while each group's tally in `status_lines` counts it too. Finished means `is_done`: a run whose results
    exist without the parameters file its group keeps, or whose folder cannot be trusted (`rejected`), is
    trained again, and the sentence says how many there are.

    Args:
      runs: the campaign's planned runs (`plan`), each once.
      done: its finished run folders (`scan_results`).
      rejected: its untrusted run folders (`scan_results`).
    """
    rejected = rejected or {}
    finished = sum(is_done(r, done) for r in runs)
    parts = [f"{finished} of {len(runs)} distinct runs finished"]
    shared: dict[tuple[str, ...], list[Run]] = defaultdict(list)
    for r in runs:
        if len(r.groups) > 1:
            shared[tuple(r.groups)].append(r)
    if shared:
        pieces = [
            f"{len(members)} shared between groups {_and(groups)} ({sum(is_done(r, done) for r in members)} finished)"
            for groups, members in shared.items()
        ]
        parts.append(", ".join(pieces) + ", counted once here and in each group's own tally")
    unkept = sum(r.key in done and not is_done(r, done) for r in runs)
    if unkept:
        parts.append(
            f"{unkept} more {'has' if unkept == 1 else 'have'} results but not the parameters "
            "their group keeps (trained again to keep them)"
        )
    outdated = sum(is_done(r, done) and is_outdated(done[r.key]) for r in runs)
    if outdated:
        parts.append(
            f"{outdated} finished {'run predates' if outdated == 1 else 'runs predate'} the training split's terms "
            "and the diagnostics (--retrain-outdated trains them again)"
        )
    untrusted = sum(r.key in rejected for r in runs)
    if untrusted:
        parts.append(
            f"{untrusted} more {'has a folder' if untrusted == 1 else 'have folders'} that cannot be trusted "
            "(trained again)"
        )
    return "; ".join(parts) + "."


def _and(names: Sequence[str]) -> str:
    """``A and B``, ``A, B and C``."""
    return " and ".join([", ".join(names[:-1]), names[-1]]) if len(names) > 1 else "".join(names)


def status_lines(
    campaign: ml_collections.ConfigDict,
    runs: Sequence[Run],
    done: dict[str, str],
    rejected: dict[str, str] | None = None,
) -> list[str]:
    """Done and pending runs per group, pending ones summarised per (variant, dataset, beta), and those whose
    folder cannot be trusted (`rejected`, from `scan_results`) or that lack the parameters they keep one per line
    with the reason. A group's tally counts every run it asks for, those it shares with other groups too
    (`count_sentence` counts each run once)."""
    rejected = rejected or {}
    lines = []
    for g in campaign.groups:
        members = [r for r in runs if g.name in r.groups]
        if not members:
            continue
        pending = [r for r in members if not is_done(r, done)]
        lines.append(
            f"group {g.name}: {len(members) - len(pending)}/{len(members)} runs done"
            + (f" - {g.description}" if g.description else "")
        )
        summary: dict[tuple, list[int]] = defaultdict(list)
        for r in pending:
            if r.key in rejected:
                lines.append(f"  pending ({rejected[r.key]}): {r.describe()}")
                continue
            if r.key in done:
                lines.append(f"  pending (finished without the parameters its group keeps): {r.describe()}")
                continue
            summary[(r.variant, r.config.dataset, r.beta)].append(r.seed)
        for (variant, dataset, beta), seeds in summary.items():
            lines.append(f"  pending: {variant} {dataset} beta={beta:g} seeds {','.join(map(str, seeds))}")
    return lines


# ----------------------------------------------------------------------------------------------- keys

_RUN_FOLDER = re.compile(r"^(?P<prefix>beta[^_/]+_seed\d+)_(?P<key>[0-9a-f]{10})$")
_PROGRAM_FOLDER = re.compile(r"^[0-9a-f]{10}-[0-9a-f]{6}$")


def migrate_keys(results_dir: str, programs_dir: str | None = None, log: Callable[[str], None] = print) -> int:
    """Renames every run folder under `results_dir` whose key is not the one `identity.run_key` gives its
    config.json (a key of an earlier key scheme), and sets the key recorded inside it (results.json's
    ``run.key``, the parameters sidecar's ``key``) to the same; with `programs_dir` (the campaign's folder of
    program work directories, ``<--workdir>/<campaign>``), renames those too, so that half-done programs
    resume, leaving any a runner holds.

    Idempotent, and safe to run at any time on folders of any earlier scheme: keys are computed from each
    folder's config.json; a folder whose key is right is left as it is, and a folder whose new name is taken
    is left and reported. Files are updated before the rename, so an interrupted migration finishes when run
    again.

    Returns:
      How many folders were renamed.
    """
    from echo_jax import trained

    renamed = 0
    for path in sorted(glob.glob(os.path.join(results_dir, "**", "results.json"), recursive=True)):
        directory = os.path.dirname(path)
        match = _RUN_FOLDER.match(os.path.basename(directory))
        config_path = os.path.join(directory, "config.json")
        if match is None or not os.path.isfile(config_path):
            continue
        with open(config_path) as f:
            key = run_key(json.load(f))
        _set_json_key(path, ("run", "key"), key)
        sidecar = os.path.join(directory, trained.SIDECAR_FILE)
        if os.path.isfile(sidecar):
            _set_json_key(sidecar, ("key",), key)
        if match["key"] == key:
            continue
        target = os.path.join(os.path.dirname(directory), f"{match['prefix']}_{key}")
        renamed += _rename(directory, target, log, " (two folders of one run; keep one of them)")
    for config_path in sorted(glob.glob(os.path.join(programs_dir, "*", "config.json"))) if programs_dir else ():
        directory = os.path.dirname(config_path)
        if not _PROGRAM_FOLDER.match(os.path.basename(directory)):
            continue
        with open(config_path) as f:
            key = program_key(ml_collections.ConfigDict(json.load(f)))
        if os.path.basename(directory) == key:
            continue
        target = os.path.join(os.path.dirname(directory), key)
        busy = f"not renamed: {directory} is in use by a runner; migrate again once it has stopped"
        if _held_by_old_runner(directory):  # before taking the lock, which writes this process into the file
            log(busy)
            continue
        try:
            held = workdir_lib.lock(directory)
        except workdir_lib.WorkdirBusy:
            log(busy)
            continue
        with held:
            renamed += _rename(directory, target, log)
    return renamed


def _rename(directory: str, target: str, log: Callable[[str], None], why_not: str = "") -> int:
    """Renames `directory` to `target` unless that exists, says which it did, and returns how many it renamed."""
    if os.path.exists(target):
        log(f"not renamed: {directory} -> {target} exists{why_not}")
        return 0
    os.rename(directory, target)
    log(f"renamed {directory} -> {os.path.basename(target)}")
    return 1


def _set_json_key(path: str, where: tuple[str, ...], key: str) -> None:
    """Sets the key at `where` in the JSON file at `path` (written as ``json.dumps(..., indent=2)`` and a newline,
    as the runner writes it), if it is not already `key`."""
    with open(path) as f:
        content = json.load(f)
    node = content
    for name in where[:-1]:
        node = node.get(name)
        if not isinstance(node, dict):
            return
    if node.get(where[-1]) != key:
        node[where[-1]] = key
        files.write_atomic(path, json.dumps(content, indent=2) + "\n")


def _held_by_old_runner(directory: str) -> bool:
    """Whether a runner of echo-jax before OS locks holds `directory`: its ``lock`` file names a live process of
    this host (such a runner created the file and removed it when done)."""
    import socket

    try:
        with open(os.path.join(directory, workdir_lib.LOCK_FILE)) as f:
            host, _, pid = f.read().strip().partition(" ")
    except OSError:
        return False
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ----------------------------------------------------------------------------------------------- run


class DirtyTreeError(UserError):
    """The code has uncommitted changes and the runner was not told to train from them."""


def run_campaign(
    campaign: ml_collections.ConfigDict,
    *,
    root: str,
    results_dir: str,
    work_dir: str,
    groups: Iterable[str] | None = None,
    variants: Iterable[str] | None = None,
    betas: Iterable[float] | None = None,
    datasets: Iterable[str] | None = None,
    max_minutes: float | None = None,
    layout: str = "auto",
    allow_dirty: bool = False,
    retrain_outdated: bool = False,
    only_what_fits: bool = False,
    log: Callable[[str], None] = print,
    clock: Callable[[], float] = time.monotonic,
) -> bool:
    """Trains the campaign's missing runs, in priority order, until done or out of time.

    Args:
      campaign: the campaign file's config.
      root: where its relative config paths are found (`config_root`).
      results_dir: the campaign's results folder (finished runs' small files).
      work_dir: the programs' scratch work directories (checkpoints); a half-done program resumes there.
      groups: only these groups (default: all).
      variants: only these variants of them (default: all).
      betas: only these betas of them (default: all).
      datasets: only the runs on these datasets (default: all).
      max_minutes: time budget. Training stops (after a checkpoint) at 90% of it, leaving the rest for a
        final evaluation already under way and for writing files; no program starts in the last 10%.
      layout: how runs are packed into programs (see `programs`).
      allow_dirty: train even though the code has uncommitted changes; each run trained so keeps the diff.
      retrain_outdated: also train again the finished runs that predate the training split and the diagnostics
        (`is_outdated`); their new folders replace the old ones.
      only_what_fits: with `max_minutes`, start no program whose `expected_seconds` exceed the training time left
        (later, shorter ones may still start); a program with a checkpoint always resumes. For machines whose
        scratch folder does not outlive the session, where a program cut off at the end would be lost.
      log: where progress lines go.
      clock: seconds, for the time budget.

    Returns:
      True when every run asked for is finished.

    Raises:
      DirtyTreeError: the code has uncommitted changes and `allow_dirty` is False (before anything is trained).
      train.RunInterrupted: SIGINT or SIGTERM stopped a program (after its checkpoint).
    """
    from echo_jax import disentanglement, train

    start = clock()
    deadline = None if max_minutes is None else start + 0.9 * 60 * max_minutes
    if max_minutes is not None and not max_minutes > 0:
        raise ConfigError(f"--max-minutes {max_minutes}: give a time budget of more than 0 minutes")
    if only_what_fits and max_minutes is None:
        raise ConfigError("--only-what-fits needs a time budget to fit programs into: give --max-minutes too")
    runs = plan(campaign, root, groups, variants, betas, datasets)
    files.settle_replaced(results_dir, recursive=True)  # a run folder a killed `write_run` left aside
    done, rejected = scan_results(results_dir)

    def to_train(run: Run, done: dict[str, str]) -> bool:
        return not is_done(run, done) or (retrain_outdated and is_outdated(done[run.key]))

    missing = [r for r in runs if to_train(r, done)]
    todo = programs(missing, layout)
    commit = identity.code_commit()
    dirty = commit is not None and commit.endswith("+dirty")
    if todo and dirty and not allow_dirty:
        raise DirtyTreeError(
            f"the code has uncommitted changes (commit {commit}): a campaign's runs record the commit that trained "
            "them; commit the changes, or pass --allow-dirty to train anyway (each run then keeps the diff)"
        )
    diff = identity.code_diff() if dirty and todo else ""
    for r in missing:
        if r.key in rejected:
            log(f"{r.describe()} is trained again: {rejected[r.key]}")
    log(
        f"campaign {campaign.name}: {count_sentence(runs, done, rejected)} "
        f"{len(missing)} to train in {len(todo)} program(s)."
    )
    for program in todo:
        if deadline is not None and clock() >= deadline:
            log("time budget spent: stopping before the next program")
            break
        workdir = os.path.join(work_dir, campaign.name, program.key)
        if retrain_outdated and os.path.isfile(os.path.join(workdir, "results.json")) and is_outdated(workdir):
            # A finished program from before: it would answer with the results being replaced.
            log(f"program {program.key}: its work directory's results predate the training split; cleared")
            shutil.rmtree(workdir)
        if only_what_fits and not workdir_lib.checkpoint_files(workdir):
            # Estimated from the runs finished by now: this runner's own first runs of a kind count too.
            expected, left = expected_seconds(program, finished_runs(results_dir)), deadline - clock()
            if expected is not None and expected > left:
                log(
                    f"program {program.key}: not started, it is expected to take {expected / 60:.0f} min and "
                    f"{left / 60:.0f} min are left (--only-what-fits)"
                )
                continue
        try:
            held = workdir_lib.lock(workdir)
        except workdir_lib.WorkdirBusy:
            log(f"program {program.key} is being trained by another runner; skipping it")
            continue
        with held:
            finished = finished_runs(results_dir)  # read again: another runner may have finished this program
            if not any(to_train(r, finished) for r in program.runs):
                continue
            log(f"program {program.key}: {', '.join(r.describe() for r in program.runs)}")
            if dirty:
                keep_diff(workdir, commit, diff)
            stop = None if deadline is None else (lambda: clock() >= deadline)
            try:
                results = train.train_and_evaluate(
                    program.config, workdir, should_stop=stop, evaluators=disentanglement.evaluators(program.config)
                )
            except train.RunInterrupted as e:
                if e.exit_status > 128:  # a signal, not the time budget: the caller says so and stops
                    raise
                log(f"time budget spent: {e}")
                break
            for m, run in enumerate(program.runs):
                write_run(results_dir, run, program, workdir, results["results"][m], results.get("provenance"))
                log(f"finished {run.describe()}: {_summary(results['results'][m]['test'])} -> {run.path}")
    done, rejected = scan_results(results_dir)
    log(f"campaign {campaign.name}: {count_sentence(runs, done, rejected)}")
    for line in status_lines(campaign, runs, done, rejected):
        log(line)
    return all(is_done(r, done) for r in runs)


# The config fields that, with the variant, decide how long a program trains.
_SCHEDULE = ("dataset", "batch_size", "num_epochs", "num_train_steps", "num_train_examples")


def expected_seconds(program: Program, finished: dict[str, str]) -> float | None:
    """How long `program` is expected to take: the median training time (results.json ``seconds``) of the
    `finished` runs (key -> directory) of its variant with the same dataset, batch size and length; None when
    there are none. A guide, not a bound: a run trained in a program of several models records that program's
    time, and the cores may have been shared."""
    variant, schedule = program.runs[0].variant, [program.config.get(name) for name in _SCHEDULE]
    times = []
    for directory in finished.values():
        if os.path.basename(os.path.dirname(directory)) != variant:  # `Run.path`: <dataset>/<variant>/<run>
            continue
        config = workdir_lib.read_config(os.path.join(directory, "config.json"))
        if [config.get(name) for name in _SCHEDULE] != schedule:
            continue
        with open(os.path.join(directory, "results.json")) as f:
            times += [row["seconds"] for row in json.load(f)["results"] if "seconds" in row]
    return float(statistics.median(times)) if times else None


def keep_diff(workdir: str, commit: str, diff: str) -> None:
    """Keeps uncommitted changes (`diff`, on top of the dirty `commit`) in `workdir` as ``code-<hash>.diff``, one
    file per distinct diff (a program resumed from other changes keeps both); `write_run` copies them."""
    name = f"code-{hashlib.sha256(diff.encode()).hexdigest()[:8]}.diff"
    if not os.path.exists(os.path.join(workdir, name)):
        files.write_atomic(
            os.path.join(workdir, name), f"# uncommitted changes on top of {commit[: -len('+dirty')]}\n{diff}"
        )


def write_run(
    results_dir: str, run: Run, program: Program, workdir: str, row: dict, provenance: dict | None = None
) -> None:
    """Writes one finished run's directory in one rename (`files.replace_directory`: an old folder of the run is
    replaced so that a kill leaves one or the other): config.json, metrics.jsonl, results.json, the model's
    pictures, the diffs of uncommitted changes it was trained from and, when the run keeps them, its parameters
    file and sidecar.

    Args:
      provenance: the program's (its results.json's): ``commits`` and ``environments``, every commit and
        environment (`identity.environment`) that trained it, in order.
    """
    from echo_jax import sweep, trained

    target = os.path.join(results_dir, run.path)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    index = program.runs.index(run)
    tmp = tempfile.mkdtemp(dir=os.path.dirname(target), prefix=".tmp-")
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; a results folder is shared
    model_dir = os.path.join(workdir, trained.MODELS_DIR, trained.model_dir_name(run.beta, run.seed))
    commits = (provenance or {}).get("commits") or [None]
    environments = (provenance or {}).get("environments") or [None]
    try:
        for name in sorted(os.listdir(model_dir)) if os.path.isdir(model_dir) else ():
            if name.endswith(".png") or (run.keep_params and name in (trained.PARAMS_FILE, trained.SIDECAR_FILE)):
                shutil.copyfile(os.path.join(model_dir, name), os.path.join(tmp, name))
        for path in sorted(glob.glob(os.path.join(workdir, "code-*.diff"))):
            shutil.copyfile(path, os.path.join(tmp, os.path.basename(path)))
        with open(os.path.join(tmp, "config.json"), "w") as f:
            f.write(json.dumps(json.loads(run.config.to_json_best_effort()), indent=2, sort_keys=True) + "\n")
        with open(os.path.join(tmp, "metrics.jsonl"), "w") as f:
            for record in run_metrics(os.path.join(workdir, "metrics.jsonl"), index):
                f.write(json.dumps(record) + "\n")
        results = {
            "experiment": program.config.experiment,
            "results": [row],
            "run": {
                "key": run.key,
                "variant": run.variant,
                "groups": run.groups,
                "commit": commits[-1],
                "commits": commits,
                "environments": environments,
                "program": {
                    "betas": identity.betas_of(program.config),
                    "seed": program.config.seed,
                    "num_seeds": program.config.num_seeds,
                    "strategy": sweep.resolve_strategy(program.config.sweep_strategy),
                },
            },
        }
        with open(os.path.join(tmp, "results.json"), "w") as f:
            f.write(json.dumps(results, indent=2) + "\n")
        files.replace_directory(tmp, target)  # a kill midway leaves the old run or the new one
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def run_metrics(path: str, index: int) -> list[dict]:
    """One model's records of a program's metrics.jsonl, one per (split, step), in step order.

    A resumed program may have logged a step twice (once before an interruption): the last record wins.
    """
    records: dict[tuple, dict] = {}
    with open(path) as f:
        for line in f:
            record = json.loads(line)
            one = {}
            for name, value in record.items():
                one[name] = value[index] if isinstance(value, list) else value
            records[(one["split"], one["step"])] = one
    return sorted(records.values(), key=lambda r: (r["step"], r["split"]))


def _summary(test: dict) -> str:
    return ", ".join(f"{k} {test[k]:.2f}" for k in ("rate", "distortion", "neg_elbo", "iwae_nll") if k in test)


def needs_new_diagnostics(row: dict) -> bool:
    """Whether a finished run's results row lacks a diagnostic the code now records: the flow bound on
    KL(q(z) || p(z)) of a Gaussian or IAF encoder (`echo_jax.diagnostics.flow_kl_lower_bound`)."""
    if row.get("encoder") not in ("gaussian", "iaf"):
        return False
    return "flow_kl_lower_bound" not in row.get("diagnostics", {}).get("mutual_information", {})


def recompute_diagnostics(
    results_dir: str,
    *,
    everything: bool = False,
    data_dir: str | None = None,
    fit_steps: int | None = None,
    log: Callable[[str], None] = print,
) -> int:
    """Recomputes, with the code of now, the diagnostics of the finished runs under `results_dir` that kept their
    parameters, where `needs_new_diagnostics` (every one with `everything`); returns how many were rewritten.

    The model is read back from its parameters file and encoded again on its dataset's splits; only the row's
    ``diagnostics`` change (with ``diagnostics.recomputed``: the commit that computed them), in one atomic write of
    results.json. The test and training-split terms stay those of training. Runs that kept no parameters cannot be
    recomputed (--retrain-outdated trains them again). `fit_steps`: the flow bound's fit (default: its own).
    """
    import jax

    from echo_jax import diagnostics, train, trained

    if not os.path.isdir(results_dir):
        raise ConfigError(f"--results {results_dir}: no such folder; give a campaign's results folder")
    done, _ = scan_results(results_dir)
    rewritten = 0
    for directory in sorted(done.values()):
        if not os.path.isfile(os.path.join(directory, trained.SIDECAR_FILE)):
            continue
        path = os.path.join(directory, "results.json")
        results = files.read_json(path, "restore it from git")
        (row,) = results["results"]
        if not (everything or needs_new_diagnostics(row)):
            continue
        model = trained.load_run(directory)
        config = model.config.copy_and_resolve_references()
        if data_dir:
            config.data_dir = data_dir
        train_set, test_set = train.load_datasets(config)
        found = diagnostics.run_diagnostics(
            model.model,
            model.params,
            train_set,
            test_set,
            config.batch_size,
            jax.random.fold_in(jax.random.PRNGKey(config.seed), 1),
            test_rate=row["test"]["rate"],
            fit_steps=diagnostics.FLOW_FIT_STEPS if fit_steps is None else fit_steps,
        )
        found["recomputed"] = {"commit": identity.code_commit()}
        bad = files.first_non_finite(found, "diagnostics")
        if bad:
            raise UserError(f"{directory}: the recomputed {bad} is not finite; results.json is left as it was")
        row["diagnostics"] = found
        files.write_atomic(path, files.dumps_strict(results, indent=2) + "\n")
        rewritten += 1
        log(f"{os.path.relpath(directory, results_dir)}: diagnostics recomputed")
    return rewritten
