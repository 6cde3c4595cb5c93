"""What a run is: the one place that says which resolved config a model was trained from and names it.

A run is one model (one beta, one seed) of a config. Its identity is the resolved config less the fields that
say how it was executed (`defaults.EXECUTION_FIELDS`) and the composition of the sweep it was trained in;
`run_key` hashes that identity, so a changed config is a new run. Campaign folders, parameter files and their
sidecars are named by this key.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess

import ml_collections

from echo_jax import defaults

# A run's key is what one model computes: the execution fields are left out, and so is the sweep it was in.
KEYLESS_FIELDS = defaults.EXECUTION_FIELDS | {"betas", "num_seeds"}


def data_seed_of(config: ml_collections.ConfigDict) -> int:
    """The seed of the run's data stream (order and binarization of the batches): data_seed, else seed."""
    data_seed = config.get("data_seed")
    return config.seed if data_seed is None else data_seed


def single_run_config(base: ml_collections.ConfigDict, beta: float, seed: int) -> ml_collections.ConfigDict:
    """`base` for one model: one beta, one seed, the data seed made explicit (the base's, else 0: the models of a
    campaign share one data stream)."""
    config = copy.deepcopy(base)
    config.data_seed = base.get("data_seed") if base.get("data_seed") is not None else 0
    config.beta, config.betas, config.seed, config.num_seeds = float(beta), "", int(seed), 1
    return config


def run_identity(config: ml_collections.ConfigDict) -> dict:
    """What a single-model config computes, as a flat, canonical dict (the content of its key).

    The fields as `defaults.flat_fields` gives them, less the execution fields and the sweep's composition
    (`KEYLESS_FIELDS`), with the data seed resolved.
    """
    identity = defaults.flat_fields({**config.to_dict(), "data_seed": data_seed_of(config)})
    return {name: value for name, value in identity.items() if name not in KEYLESS_FIELDS}


def run_key(config: ml_collections.ConfigDict) -> str:
    """Ten hex digits of the sha256 of `run_identity`."""
    text = json.dumps(run_identity(config), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def code_commit() -> str | None:
    """The code's git commit, with "+dirty" when the work tree has uncommitted changes (None outside git)."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, check=True)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
