"""What a run is: the one place that says which config fields define what a run computes, and names it.

A config's identity is its resolved fields as one flat dict (leaf names: a field of ``config.model`` and the
same field at the top level of an echo-jax 0.1 config are one field), less the fields that only say how the
run is executed (`EXECUTION_FIELDS`), with the data seed resolved (`data_seed_of`). Unset is ``None`` and
stays ``None``: it is never confused with 0, False or "" (beta 0 is a beta; data_seed 0 is a seed).

- A work directory holds one config's run: `workdir_mismatch` compares config identities (`config_identity`,
  which includes the sweep's betas and seeds).
- One model (one beta, one seed) is a run: `run_identity` leaves the sweep's composition out, and `run_key`
  hashes it. Campaign results folders, parameter files' sidecars and campaign programs are named by it.
- A checkpoint holds the models `checkpoint_identity` names.
- A config's models are the (beta, seed) pairs `runs_of` lists (its betas: `betas_of`); `echo_jax.sweep` trains
  them together, and validation reads them without importing jax.

Two declared lists keep earlier runs what they were:

- `ADDED_FIELDS`: a field added after runs were written, with the value that reproduces what those runs
  computed; at that value it is left out of the identity, so adding it changes no earlier run's identity.
  A new field that changes what a run computes goes there (or into `echo_jax.defaults.EXECUTION_FIELDS`);
  tests/test_identity.py fails until it does.
- `V01_UNSET_AS_ZERO`: echo-jax 0.1 wrote its flat configs with 0 for these unset (derived) fields, whose
  0 is not a valid value; in a config without a ``model`` group, 0 there reads as unset.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
import os
import subprocess
from collections.abc import Mapping, Sequence

import ml_collections

from echo_jax import defaults

EXECUTION_FIELDS = defaults.EXECUTION_FIELDS
# The composition of a sweep: which models a work directory trains together, not what one model computes.
SWEEP_FIELDS = frozenset({"betas", "num_seeds"})
KEYLESS_FIELDS = EXECUTION_FIELDS | SWEEP_FIELDS

# field -> the value that reproduces the runs written before the field existed.
ADDED_FIELDS: dict[str, object] = {
    "metrics": "",  # disentanglement metrics beyond MIG and FactorVAE; "" = those two
}

V01_UNSET_AS_ZERO = ("echo_clip", "mmd_bandwidth")

_ABSENT = object()


def fields(config: ml_collections.ConfigDict | Mapping) -> dict:
    """A config's fields as one flat dict of canonical values: leaf names (nesting dropped), numbers as floats
    (1 and 1.0 are one beta), sequences as lists, booleans, strings and None (unset) as they are.

    Args:
      config: a ConfigDict, or the dict of a config.json (any echo-jax version).

    Raises:
      ValueError: a leaf name appears twice (the flat form needs unique names).
    """
    tree = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else config
    flat: dict = {}

    def visit(node: Mapping) -> None:
        for name, value in node.items():
            if isinstance(value, (Mapping, ml_collections.ConfigDict)):
                visit(value)
                continue
            if name in flat:
                raise ValueError(f"config field name {name!r} appears twice; a config's leaf names must be unique")
            flat[name] = _canonical(value)

    visit(tree)
    if "model" not in tree:  # echo-jax 0.1: a flat config, "unset" written as 0 where 0 is not a value
        for name in V01_UNSET_AS_ZERO:
            if flat.get(name, _ABSENT) == 0:
                flat[name] = None
    return flat


def _canonical(value):
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    raise TypeError(f"config value {value!r} ({type(value).__name__}) has no canonical form")


def data_seed_of(config: ml_collections.ConfigDict | Mapping) -> int:
    """The seed of the run's data stream (order and binarization of the batches): data_seed, else seed."""
    data_seed = config.get("data_seed")
    return int(config.get("seed")) if data_seed is None else int(data_seed)


def config_identity(config: ml_collections.ConfigDict | Mapping) -> dict:
    """What a config computes (a sweep's betas and seeds included): its `fields` less `EXECUTION_FIELDS` and
    the `ADDED_FIELDS` at their earlier value, with the data seed resolved."""
    flat = fields(config)
    flat["data_seed"] = float(data_seed_of(flat))
    return {
        name: value
        for name, value in flat.items()
        if name not in EXECUTION_FIELDS and not (name in ADDED_FIELDS and value == ADDED_FIELDS[name])
    }


def run_identity(config: ml_collections.ConfigDict | Mapping) -> dict:
    """What one model of a config computes: `config_identity` less the sweep's composition (`SWEEP_FIELDS`).
    For a single-run config (`single_run_config`) this is the content of its key."""
    return {name: value for name, value in config_identity(config).items() if name not in SWEEP_FIELDS}


def run_key(config: ml_collections.ConfigDict | Mapping) -> str:
    """Ten hex digits of the sha256 of `run_identity` (as canonical JSON)."""
    return hashlib.sha256(_json(run_identity(config)).encode()).hexdigest()[:10]


def differing_fields(a: Mapping, b: Mapping) -> list[str]:
    """The names whose values differ between two identities (a name missing from one differs), sorted."""
    return sorted(name for name in set(a) | set(b) if _json(a.get(name, _ABSENT)) != _json(b.get(name, _ABSENT)))


def workdir_mismatch(held: Mapping, config: ml_collections.ConfigDict | Mapping) -> list[str]:
    """The fields in which the config a work directory holds (`held`, its config.json) and `config` compute
    different things; empty when they are the same run (execution fields may differ)."""
    return differing_fields(config_identity(held), config_identity(config))


def betas_of(config: ml_collections.ConfigDict) -> list[float]:
    """The betas a config asks for: ``betas`` ("0.1,0.3,1" or a sequence) if set, else ``[beta]``."""
    betas = config.get("betas", "")
    if isinstance(betas, str):
        try:
            values = [float(b) for b in betas.replace(" ", "").split(",") if b]
        except ValueError:
            raise ValueError(f"betas must be a comma-separated list of numbers, got {betas!r}") from None
    elif isinstance(betas, (int, float)):
        values = [float(betas)]
    else:
        values = [float(b) for b in betas]
    return values or [float(config.beta)]


def runs_of(config: ml_collections.ConfigDict) -> list[tuple[float, int]]:
    """(beta, seed) for every model of the run: each beta with seeds seed, seed + 1, ..."""
    seeds = range(config.seed, config.seed + config.get("num_seeds", 1))
    return [(beta, seed) for beta in betas_of(config) for seed in seeds]


def single_run_config(base: ml_collections.ConfigDict, beta: float, seed: int) -> ml_collections.ConfigDict:
    """`base` for one model: one beta, one seed, the data seed made explicit (the base's, else 0: the models of a
    campaign share one data stream)."""
    config = copy.deepcopy(base)
    config.data_seed = base.get("data_seed") if base.get("data_seed") is not None else 0
    config.beta, config.betas, config.seed, config.num_seeds = float(beta), "", int(seed), 1
    return config


def checkpoint_identity(runs: Sequence[tuple[float, int]], chunk: int, chunk_size: int, num_models: int) -> dict:
    """What a population's checkpoint holds: its (beta, seed) models and its place in the sweep's chunks. A
    checkpoint is resumed only by the population it names (the config is the work directory's to check)."""
    return {"runs": [list(r) for r in runs], "chunk": chunk, "chunk_size": chunk_size, "num_models": num_models}


def _json(value) -> str:
    return "<absent>" if value is _ABSENT else json.dumps(value, sort_keys=True)


# ----------------------------------------------------------------------------------------------- provenance


def _git(*args: str) -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    return subprocess.run(["git", *args], cwd=here, capture_output=True, text=True, check=True).stdout


@functools.cache
def code_commit() -> str | None:
    """The code's git commit, with "+dirty" when tracked files have uncommitted changes (None outside git).

    Asked once per process: the code a process runs is what it loaded, whatever is committed after."""
    try:
        sha = _git("rev-parse", "HEAD").strip()
        dirty = _git("status", "--porcelain", "--untracked-files=no").strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return sha + ("+dirty" if dirty else "")


@functools.cache
def environment() -> dict:
    """What besides the code decides a run's floating-point results: the versions of the numerical stack and the
    device XLA compiles for (its CPU model too: XLA's CPU code depends on the instruction set). Two runs of one
    config and commit agree bit for bit only within one environment. Asked once per process."""
    import importlib.metadata
    import platform

    import jax

    def version(package: str) -> str | None:
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return None

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:  # Linux names the model; elsewhere keep the above
        cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    device = jax.devices()[0]
    return {
        "python": platform.python_version(),
        **{name: version(name) for name in ("jax", "jaxlib", "flax", "optax", "numpy")},
        "backend": jax.default_backend(),
        "device": device.device_kind,
        "devices": jax.device_count(),
        "cpu": cpu,
    }


@functools.cache
def code_diff() -> str:
    """The uncommitted changes of the tracked files against HEAD ("" when clean or outside git); asked once per
    process, as `code_commit`."""
    try:
        return _git("diff", "HEAD", "--binary")
    except (OSError, subprocess.CalledProcessError):
        return ""
