"""Campaigns on tiny configs: run keys, planning, what is missing, resume, the time budget, the CLI."""

import glob
import json
import os
import socket
import subprocess
import sys

import ml_collections
import pytest

from echo_jax import campaign, defaults, sweep

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RD = os.path.join(REPO, "configs", "rate_distortion")

TINY_CAMPAIGN = """
import ml_collections
from echo_jax.campaign import group

def get_config():
    c = ml_collections.ConfigDict()
    c.name = "tiny"
    c.overrides = {{"num_train_examples": 64, "num_test_examples": 32, "batch_size": 16, "num_epochs": 2,
                    "model": {{"mlp_hidden": (16,), "latent_dim": 4}}, "eval_every_epochs": 1,
                    "log_every_steps": 2, "iwae_samples": 3, "learning_rate": {lr}}}
    c.groups = (
        group("A", [("echo", "{rd}/echo.py:quick"), ("vae", "{rd}/vae.py:quick")], betas=(1, 2), seeds=(0, 1)),
        group("B", [("vae", "{rd}/vae.py:quick")], betas=(1,), seeds=(0,)),
    )
    return c
"""


def write_campaign(tmp_path, lr=1e-3):
    folder = tmp_path / "configs" / "campaigns"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tiny.py"
    path.write_text(TINY_CAMPAIGN.format(rd=RD, lr=lr))
    return str(path)


def load(path):
    return campaign.load_config_file(path)


def run(path, tmp_path, **kwargs):
    lines = []
    complete = campaign.run_campaign(
        load(path),
        root=campaign.config_root(path),
        results_dir=str(tmp_path / "results" / "tiny"),
        work_dir=str(tmp_path / "work"),
        log=lines.append,
        **kwargs,
    )
    return complete, lines


def finished(tmp_path):
    return campaign.finished_runs(str(tmp_path / "results" / "tiny"))


# ----------------------------------------------------------------------------------------------- keys


def test_run_key_follows_what_the_config_computes():
    base = campaign.single_run_config(defaults.rate_distortion_config(quick=True), 1.0, 0)
    key = campaign.run_key(base)
    same = campaign.single_run_config(defaults.rate_distortion_config(quick=True), 1, 0)
    assert campaign.run_key(same) == key  # 1 and 1.0 are the same beta
    for name, value in [
        ("learning_rate", 3e-4),
        ("beta", 2.0),
        ("seed", 1),
        ("dataset", "mnist"),
        ("data_seed", 5),
        ("model", {"mlp_hidden": (500,)}),
    ]:
        changed = campaign.single_run_config(defaults.rate_distortion_config(quick=True), 1.0, 0)
        campaign._override(changed, {name: value})
        assert campaign.run_key(changed) != key, name
    for name, value in [
        ("log_every_steps", 7),
        ("data_dir", "/elsewhere"),
        ("sweep_strategy", "vmap"),
        ("checkpoint_every_steps", 9),
        ("models_per_program", 2),
    ]:
        changed = campaign.single_run_config(defaults.rate_distortion_config(quick=True), 1.0, 0)
        changed[name] = value
        assert campaign.run_key(changed) == key, name


def test_run_key_is_the_same_for_a_flat_v01_config():
    # echo-jax 0.1 kept the model's fields at the top level and wrote "unset" as 0 or "": its runs keep their keys.
    nested = campaign.single_run_config(defaults.rate_distortion_config(quick=True), 1.0, 0)
    flat = ml_collections.ConfigDict({k: v for k, v in nested.to_dict().items() if k != "model"})
    for name, value in nested.model.items():
        flat[name] = 0.0 if value is None else value
    flat.binarize = ""
    assert campaign.run_key(flat) == campaign.run_key(nested)


def test_committed_results_keep_their_keys():
    # The committed paper_mlp runs (trained by echo-jax 0.1's flat configs) are found by today's plan.
    committed = glob.glob(os.path.join(REPO, "results", "paper_mlp", "*", "*", "*", "results.json"))
    assert committed
    paper_mlp = load(os.path.join(REPO, "configs", "campaigns", "paper_mlp.py"))
    planned = {run.key for run in campaign.plan(paper_mlp, os.path.join(REPO, "configs"))}
    keys = {os.path.basename(os.path.dirname(path)).rsplit("_", 1)[1] for path in committed}
    assert keys <= planned


def test_run_key_resolves_the_data_seed():
    config = campaign.single_run_config(defaults.rate_distortion_config(quick=True), 1.0, 3)
    assert config.data_seed == 0  # campaigns share one data stream unless the config says otherwise
    implicit = ml_collections.ConfigDict(config.to_dict())
    implicit.data_seed = None  # = seed 3: another data stream
    assert campaign.run_key(implicit) != campaign.run_key(config)


# ----------------------------------------------------------------------------------------------- plan


def test_plan_orders_by_priority_and_trains_a_shared_run_once(tmp_path):
    path = write_campaign(tmp_path)
    runs = campaign.plan(load(path), campaign.config_root(path))
    assert [(r.variant, r.beta, r.seed) for r in runs] == [
        ("echo", 1, 0),
        ("echo", 1, 1),
        ("vae", 1, 0),
        ("vae", 1, 1),
        ("echo", 2, 0),
        ("echo", 2, 1),
        ("vae", 2, 0),
        ("vae", 2, 1),
    ]
    shared = [r for r in runs if r.variant == "vae" and r.beta == 1 and r.seed == 0]
    assert shared[0].groups == ["A", "B"]
    only_b = campaign.plan(load(path), campaign.config_root(path), groups=["B"])
    assert [r.key for r in only_b] == [shared[0].key]
    with pytest.raises(ValueError, match="unknown group"):
        campaign.plan(load(path), campaign.config_root(path), groups=["Z"])


def test_programs_pack_betas_and_seeds(tmp_path):
    path = write_campaign(tmp_path)
    runs = campaign.plan(load(path), campaign.config_root(path))
    per_beta = campaign.programs(runs, "per_beta")
    assert [[(r.variant, r.beta, r.seed) for r in p.runs] for p in per_beta] == [
        [("echo", 1, 0), ("echo", 1, 1)],
        [("vae", 1, 0), ("vae", 1, 1)],
        [("echo", 2, 0), ("echo", 2, 1)],
        [("vae", 2, 0), ("vae", 2, 1)],
    ]
    per_variant = campaign.programs(runs, "per_variant")
    assert [len(p.runs) for p in per_variant] == [4, 4]
    for p in per_variant + per_beta:  # a program's sweep trains exactly its runs, in its order
        assert sweep.runs_of(p.config) == [(r.beta, r.seed) for r in p.runs]
        assert all(
            campaign.run_key(campaign.single_run_config(p.config, b, s)) == r.key
            for (b, s), r in zip(sweep.runs_of(p.config), p.runs)
        )
    missing = [r for r in runs if (r.variant, r.beta, r.seed) not in {("echo", 1, 0), ("vae", 1, 1)}]
    packed = campaign.programs(missing, "per_variant")
    assert sorted(len(p.runs) for p in packed) == [1, 1, 2, 2]  # not a grid: per beta
    with pytest.raises(ValueError, match="layout"):
        campaign.programs(runs, "diagonal")


# ----------------------------------------------------------------------------------------------- running


def test_runs_what_is_missing_and_keys_results_by_config(tmp_path):
    path = write_campaign(tmp_path)
    complete, lines = run(path, tmp_path, groups=["B"])
    assert complete and len(finished(tmp_path)) == 1
    complete, lines = run(path, tmp_path)
    assert complete and "7 to train" in lines[0]  # B's run is A's vae beta 1 seed 0: not trained again
    done = finished(tmp_path)
    assert len(done) == 8
    planned = campaign.plan(load(path), campaign.config_root(path))
    shared = json.loads(open(os.path.join(done[planned[2].key], "results.json")).read())
    assert shared["results"][0]["encoder"] == "gaussian" and "iwae_nll" in shared["results"][0]["test"]
    assert shared["run"]["groups"] == ["B"] and shared["run"]["program"]["num_seeds"] == 1
    directory = done[planned[1].key]  # echo, beta 1, seed 1: trained with seed 0 in one program
    # Every run keeps its pictures; this campaign keeps no parameters.
    pictures = ["rates_per_dim.png", "reconstructions.png", "samples.png"]
    assert sorted(os.listdir(directory)) == sorted(["config.json", "metrics.jsonl", "results.json", *pictures])
    results = json.loads(open(os.path.join(directory, "results.json")).read())
    (row,) = results["results"]
    assert (row["encoder"], row["beta"], row["seed"]) == ("echo", 1.0, 1) and "iwae_nll" not in row["test"]
    assert results["run"]["program"] == {"betas": [1.0], "seed": 0, "num_seeds": 2, "strategy": "sequential"}
    config = json.loads(open(os.path.join(directory, "config.json")).read())
    assert (config["beta"], config["seed"], config["data_seed"], config["betas"]) == (1.0, 1, 0, "")
    metrics = [json.loads(line) for line in open(os.path.join(directory, "metrics.jsonl"))]
    assert [m["epoch"] for m in metrics if m["split"] == "test"] == [1.0, 2.0]
    assert all(m["seed"] == 1 and m["beta"] == 1.0 for m in metrics)

    complete, lines = run(path, tmp_path)
    assert complete and "0 to train" in lines[0]
    changed = write_campaign(tmp_path, lr=2e-3)  # a changed config is a new run, beside the old ones
    assert len(campaign.plan(load(changed), campaign.config_root(changed))) == 8
    _, lines = run(changed, tmp_path, groups=["B"])
    assert "1 to train" in lines[0] and len(finished(tmp_path)) == 9


def test_a_run_trained_alone_equals_the_same_run_trained_in_a_sweep(tmp_path):
    path = write_campaign(tmp_path)
    run(path, tmp_path, groups=["B"])  # vae beta 1 seed 0 alone
    alone = finished(tmp_path)
    other = tmp_path / "other"
    run(path, other, groups=["A"])  # the same run, inside a two-seed program
    key = next(iter(alone))
    row = lambda d: json.loads(open(os.path.join(d, "results.json")).read())["results"][0]["test"]
    assert row(alone[key]) == pytest.approx(row(finished(other)[key]), rel=1e-5)


def test_time_budget_stops_cleanly_and_the_next_call_resumes(tmp_path):
    path = write_campaign(tmp_path)
    uninterrupted = tmp_path / "uninterrupted"
    run(path, uninterrupted, groups=["B"])

    clock = iter(range(10**6))  # one "second" per reading: start 0, before the program 1, before step k: k + 1
    complete, lines = run(path, tmp_path, groups=["B"], max_minutes=0.08, clock=lambda: float(next(clock)))
    assert not complete and any("time budget spent" in line for line in lines)
    assert finished(tmp_path) == {}
    (workdir,) = (tmp_path / "work" / "tiny").iterdir()
    assert (workdir / "checkpoints").is_dir() and not (workdir / "results.json").exists()
    assert any("stopped at step 3 of 8" in line for line in lines) and any("pending: vae" in line for line in lines)

    complete, lines = run(path, tmp_path, groups=["B"])
    assert complete
    row = lambda d: json.loads(open(os.path.join(d, "results.json")).read())["results"][0]
    (key,) = finished(tmp_path)
    resumed, reference = row(finished(tmp_path)[key]), row(finished(uninterrupted)[key])
    assert resumed["test"] == reference["test"]
    metrics = lambda d: [(m["split"], m["step"]) for m in map(json.loads, open(os.path.join(d, "metrics.jsonl")))]
    assert metrics(finished(tmp_path)[key]) == metrics(finished(uninterrupted)[key])


def test_no_program_starts_once_the_budget_is_spent(tmp_path):
    path = write_campaign(tmp_path)
    clock = iter([0.0] + [1e6] * 100)
    complete, lines = run(path, tmp_path, max_minutes=1, clock=lambda: next(clock))
    assert not complete and "stopping before the next program" in lines[1]
    assert not (tmp_path / "work").exists()


def test_run_metrics_keeps_the_last_record_of_a_repeated_step(tmp_path):
    path = tmp_path / "metrics.jsonl"
    records = [
        {"split": "train", "step": 2, "loss": [1.0, 2.0]},
        {"split": "train", "step": 4, "loss": [3.0, 4.0]},
        {"split": "train", "step": 4, "loss": [5.0, 6.0]},
        {"split": "test", "step": 4, "test": [{"a": 1}, {"a": 2}]},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert campaign.run_metrics(str(path), 1) == [
        {"split": "train", "step": 2, "loss": 2.0},
        {"split": "test", "step": 4, "test": {"a": 2}},
        {"split": "train", "step": 4, "loss": 6.0},
    ]


def test_the_paper_campaigns_plan_every_group():
    for name, network in (("paper_mlp", "mlp"), ("paper_conv", "conv")):
        path = os.path.join(REPO, "configs", "campaigns", f"{name}.py")
        runs = campaign.plan(load(path), campaign.config_root(path))
        by_group = {g: [r for r in runs if g in r.groups] for g in ("A", "E1", "E2", "C", "B", "D")}
        assert [len(v) for v in by_group.values()] == [30, 6, 12, 36, 33, 18]
        # B's echo and vae at beta 1 are A's; with the conv protocol (200 epochs already) E2's runs are A's too.
        shared_e2 = 12 if name == "paper_conv" else 0
        assert len(runs) == 30 + 6 + 12 + 36 + 33 - 6 + 18 - shared_e2
        assert {r.config.model.network for r in runs if "D" not in r.groups} == {network}
        assert {r.config.dataset for r in by_group["C"]} == {"omniglot", "fashion_mnist"}
        assert {(r.variant, r.beta) for r in by_group["E1"]} == {("echo", 8.0), ("vae", 8.0)}
        assert {r.beta for r in by_group["E2"]} == {2.0, 4.0} and {r.config.num_epochs for r in by_group["E2"]} == {200}
        assert all(r.config.num_train_steps >= 30_000 or r.config.num_epochs >= 26 for r in by_group["D"])
        assert any(r.config.model.tc_weight > 0 for r in by_group["D"])
    mlp = campaign.plan(load(os.path.join(REPO, "configs", "campaigns", "paper_mlp.py")), os.path.join(REPO, "configs"))
    assert {
        (r.config.num_epochs, r.config.batch_size, r.config.model.latent_dim, tuple(r.config.model.mlp_hidden))
        for r in mlp
        if "D" not in r.groups and "E2" not in r.groups
    } == {(100, 100, 32, (500, 500))}
    # The model zoo: seed 0 of echo and vae at beta 0.25, 1 and 4 on binarized MNIST, nothing else.
    kept = {(r.variant, r.beta, r.seed, r.config.dataset) for r in mlp if r.keep_params}
    assert kept == {(v, b, 0, "binary_mnist") for v in ("echo", "vae") for b in (0.25, 1.0, 4.0)}


def test_cli_status(tmp_path):
    path = write_campaign(tmp_path)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.campaign",
            "--campaign",
            path,
            "--status",
            "--results",
            str(tmp_path / "results"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert "group A: 0/8 runs done" in out.stdout and "pending: echo mnist_sample beta=2 seeds 0,1" in out.stdout


def test_a_program_locked_by_a_live_runner_is_skipped_and_a_dead_ones_lock_taken_over(tmp_path):
    path = write_campaign(tmp_path)
    (program,) = campaign.programs(campaign.plan(load(path), campaign.config_root(path), groups=["B"]))
    workdir = tmp_path / "work" / "tiny" / program.key
    workdir.mkdir(parents=True)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (workdir / "lock").write_text(f"{socket.gethostname()} {sleeper.pid}")
        complete, lines = run(path, tmp_path, groups=["B"])
        assert not complete and "being trained by another runner" in lines[1] and finished(tmp_path) == {}
    finally:
        sleeper.kill()
        sleeper.wait()
    complete, lines = run(path, tmp_path, groups=["B"])  # the sleeper has ended: its lock is stale
    assert complete and not (workdir / "lock").exists()
