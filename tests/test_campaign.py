"""Campaigns on tiny configs: planning, what is missing, resume, the time budget, locks, provenance, key
migration, the CLI. (Run keys themselves: tests/test_identity.py.)"""

import glob
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from echo_jax import campaign, files, identity, reproduction, sweep, train
from echo_jax.errors import ConfigError

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


CLEAN = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(autouse=True)
def clean_tree(monkeypatch):
    """The tests' code is a clean commit, whatever the state of the work tree they run from."""
    monkeypatch.setattr(identity, "code_commit", lambda: CLEAN)
    monkeypatch.setattr(identity, "code_diff", lambda: "")


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
    only_vae = campaign.plan(load(path), campaign.config_root(path), variants=["vae"])
    assert [r.key for r in only_vae] == [r.key for r in runs if r.variant == "vae"]  # in the same order
    assert only_vae[0].groups == ["A", "B"]
    with pytest.raises(ValueError, match=r"unknown variant\(s\) echo; the group\(s\) B have vae$"):
        campaign.plan(load(path), campaign.config_root(path), groups=["B"], variants=["echo"])
    only_2 = campaign.plan(load(path), campaign.config_root(path), betas=[2])
    assert [(r.variant, r.beta, r.seed) for r in only_2] == [(v, 2, s) for v in ("echo", "vae") for s in (0, 1)]
    vae_1 = campaign.plan(load(path), campaign.config_root(path), variants=["vae"], betas=[1.0])
    assert [r.key for r in vae_1] == [r.key for r in runs if r.variant == "vae" and r.beta == 1]
    with pytest.raises(ValueError, match=r"unknown beta\(s\) 0.5, 2; the group\(s\) B have 1$"):
        campaign.plan(load(path), campaign.config_root(path), groups=["B"], betas=[2, 0.5])
    with pytest.raises(ValueError, match=r"unknown dataset\(s\) omniglot; the runs asked for are on mnist_sample$"):
        campaign.plan(load(path), campaign.config_root(path), datasets=["omniglot"])


def test_plan_picks_the_runs_on_one_dataset_of_a_group_on_two():
    path = os.path.join(REPO, "configs", "campaigns", "paper_mlp.py")
    both = campaign.plan(load(path), campaign.config_root(path), groups=["C"], variants=["vae"], betas=[2])
    omniglot = campaign.plan(
        load(path), campaign.config_root(path), groups=["C"], variants=["vae"], betas=[2], datasets=["omniglot"]
    )
    assert {r.config.dataset for r in both} == {"omniglot", "fashion_mnist"} and len(both) == 6
    assert [r.key for r in omniglot] == [r.key for r in both if r.config.dataset == "omniglot"]


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
    per_run = campaign.programs(runs, "per_run")
    assert [r for p in per_run for r in p.runs] == [r for p in per_beta for r in p.runs]  # the same order
    assert all(len(p.runs) == 1 for p in per_run)
    for p in per_variant + per_beta + per_run:  # a program's sweep trains exactly its runs, in its order
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
    assert results["run"]["environments"] == [identity.environment()]  # what trained it, beside its commits
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


def test_runs_that_predate_the_training_split_are_trained_again_when_asked(tmp_path):
    path = write_campaign(tmp_path)
    run(path, tmp_path, groups=["B"])
    ((key, directory),) = finished(tmp_path).items()
    (workdir,) = (tmp_path / "work" / "tiny").iterdir()
    for folder in (directory, workdir):  # as an earlier version wrote them, in the results and the work directory
        results_path = os.path.join(folder, "results.json")
        results = json.loads(open(results_path).read())
        for row in results["results"]:
            del row["train"], row["diagnostics"]
        open(results_path, "w").write(json.dumps(results))
    runs = campaign.plan(load(path), campaign.config_root(path), ["B"])
    assert campaign.is_outdated(directory) and "1 finished run predates the training split" in (
        campaign.count_sentence(runs, *campaign.scan_results(str(tmp_path / "results" / "tiny")))
    )

    complete, lines = run(path, tmp_path, groups=["B"])
    assert complete and "0 to train" in lines[0] and campaign.is_outdated(directory)  # not unless asked
    complete, lines = run(path, tmp_path, groups=["B"], retrain_outdated=True)
    assert complete and "1 to train" in lines[0]
    assert any("work directory's results predate the training split; cleared" in line for line in lines)
    assert finished(tmp_path) == {key: directory} and not campaign.is_outdated(directory)
    (row,) = json.loads(open(os.path.join(directory, "results.json")).read())["results"]
    assert set(row["train"]) >= {"rate", "distortion"} and "active_units" in row["diagnostics"]
    _, lines = run(path, tmp_path, groups=["B"], retrain_outdated=True)
    assert "0 to train" in lines[0]


def test_diagnostics_a_run_lacks_are_recomputed_from_its_parameters_and_nothing_else_changes(tmp_path):
    path = write_campaign(tmp_path)
    text = open(path).read().replace("    return c\n", '    c.keep_params = ({"variants": ("vae",)},)\n    return c\n')
    open(path, "w").write(text)
    run(path, tmp_path, groups=["B"])
    ((_, directory),) = finished(tmp_path).items()
    results_path = os.path.join(directory, "results.json")
    before = json.loads(open(results_path).read())
    trained_with = before["results"][0]["diagnostics"]["mutual_information"]
    for name in ("flow_kl_lower_bound", "flow_kl_lower_bound_stderr", "flow_fit_steps"):  # as runs before it
        del trained_with[name]
    open(results_path, "w").write(json.dumps(before))
    results_dir = str(tmp_path / "results" / "tiny")
    assert campaign.needs_new_diagnostics(before["results"][0]) and campaign.is_outdated(directory)
    assert not campaign.needs_new_diagnostics({"encoder": "echo", "diagnostics": {"active_units": 1}})

    lines = []
    assert campaign.recompute_diagnostics(results_dir, fit_steps=50, log=lines.append) == 1
    after = json.loads(open(results_path).read())
    (row,) = after["results"]
    mi = row["diagnostics"]["mutual_information"]
    assert np.isfinite(mi["flow_kl_lower_bound"]) and mi["flow_fit_steps"] == 50
    assert row["diagnostics"]["recomputed"] == {"commit": CLEAN}
    # The same model and data: the diagnostics that do not sample agree with training's; nothing else changed.
    assert mi["kl_rate"] == trained_with["kl_rate"]
    assert mi["marginal_kl_lower_bound"] == pytest.approx(trained_with["marginal_kl_lower_bound"], rel=1e-5)
    assert {k: v for k, v in row.items() if k != "diagnostics"} == {
        k: v for k, v in before["results"][0].items() if k != "diagnostics"
    }
    assert after["run"] == before["run"] and list(finished(tmp_path).values()) == [directory]
    assert lines == [f"{os.path.relpath(directory, results_dir)}: diagnostics recomputed"]
    assert campaign.recompute_diagnostics(results_dir, log=lines.append) == 0  # nothing left to recompute
    assert not campaign.is_outdated(directory)


def test_recompute_diagnostics_of_a_missing_folder_is_a_one_line_error(tmp_path):
    with pytest.raises(ConfigError, match="no such folder"):
        campaign.recompute_diagnostics(str(tmp_path / "nowhere"))


def test_a_run_folder_a_killed_replacement_left_aside_is_put_back_not_trained_again(tmp_path):
    path = write_campaign(tmp_path)
    run(path, tmp_path, groups=["B"])
    ((key, directory),) = finished(tmp_path).items()
    os.rename(directory, directory + files.REPLACED)  # killed between `write_run`'s two renames
    assert campaign.scan_results(str(tmp_path / "results" / "tiny")) == ({}, {})  # not read, and not refused
    complete, lines = run(path, tmp_path, groups=["B"])
    assert complete and "0 to train" in lines[0] and finished(tmp_path) == {key: directory}
    assert not glob.glob(str(tmp_path / "results" / "**" / f"*{files.REPLACED}"), recursive=True)


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


def set_seconds(directory, seconds):
    path = os.path.join(directory, "results.json")
    held = json.loads(open(path).read())
    held["results"][0]["seconds"] = seconds
    open(path, "w").write(json.dumps(held))


def fit_vae_programs(path, tmp_path, max_minutes):
    """Group A's vae runs, one per program, with --only-what-fits and a clock that never moves."""
    return run(
        path,
        tmp_path,
        groups=["A"],
        variants=["vae"],
        layout="per_run",
        max_minutes=max_minutes,
        only_what_fits=True,
        clock=lambda: 0.0,
    )


def test_only_what_fits_skips_a_program_expected_to_overrun_but_resumes_a_checkpoint(tmp_path):
    path = write_campaign(tmp_path)
    run(path, tmp_path, groups=["B"])  # vae beta 1 seed 0: the history the others are expected from
    ((key, directory),) = finished(tmp_path).items()
    set_seconds(directory, 1200.0)
    runs = campaign.plan(load(path), campaign.config_root(path), groups=["A"])
    vae, echo = [campaign.programs([r], "per_run")[0] for r in (runs[2], runs[0])]
    assert (vae.runs[0].variant, echo.runs[0].variant) == ("vae", "echo")
    assert campaign.expected_seconds(vae, finished(tmp_path)) == 1200.0
    assert campaign.expected_seconds(echo, finished(tmp_path)) is None  # no finished echo run to go by

    # vae beta 1 seed 1 is cut off after 3 steps, leaving a checkpoint; vae beta 2 never starts (no time left).
    clock = iter(range(10**6))
    run(
        path,
        tmp_path,
        groups=["A"],
        variants=["vae"],
        layout="per_run",
        max_minutes=0.08,
        clock=lambda: float(next(clock)),
    )
    assert len(finished(tmp_path)) == 1

    # 540 s of training time (90% of 10 minutes) against an expected 1200, then, once the checkpointed program has
    # finished in a few seconds, the median of the two, about 600: only the checkpointed program runs.
    complete, lines = fit_vae_programs(path, tmp_path, max_minutes=10)
    assert not complete
    trained = {(r.beta, r.seed) for r in runs if r.variant == "vae" and r.key in finished(tmp_path)}
    assert trained == {(1, 0), (1, 1)}
    skipped = [line for line in lines if "not started" in line]
    assert len(skipped) == 2 and all("expected to take 10 min and 9 min are left" in line for line in skipped)

    set_seconds(directory, 60.0)  # the same call, once the history says a program fits, trains the rest
    complete, lines = fit_vae_programs(path, tmp_path, max_minutes=10)
    assert complete and not any("not started" in line for line in lines)


def test_only_what_fits_learns_from_the_runs_it_has_just_finished(tmp_path):
    # No history: the first vae program has no estimate and trains (its recorded seconds exceed the 0.054 s
    # budget of 0.001 minutes, which the frozen clock never spends); the next three are expected from it.
    path = write_campaign(tmp_path)
    complete, lines = fit_vae_programs(path, tmp_path, max_minutes=0.001)
    assert not complete and len(finished(tmp_path)) == 1
    assert len([line for line in lines if "not started" in line]) == 3


def test_only_what_fits_needs_a_time_budget(tmp_path):
    path = write_campaign(tmp_path)
    with pytest.raises(ConfigError, match="--only-what-fits needs a time budget"):
        run(path, tmp_path, only_what_fits=True)
    assert not (tmp_path / "work").exists() and not (tmp_path / "results").exists()


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
        groups = ("A", "E1", "E2", "E3", "E4", "E5", "E6", "E7", "E8", "C", "B", "D")
        by_group = {g: [r for r in runs if g in r.groups] for g in groups}
        assert [len(v) for v in by_group.values()] == [30, 6, 12, 24, 18, 18, 24, 18, 18, 36, 33, 18]
        # B's echo and vae at beta 1 are A's; with the conv protocol (200 epochs already) the longer groups' runs
        # are the standard ones: E2's are A's, E7's and E8's are C's.
        shared_longer = 12 + 36 if name == "paper_conv" else 0
        assert len(runs) == 30 + 6 + 12 + 24 + 18 + 18 + 24 + 18 + 18 + 36 + 33 - 6 + 18 - shared_longer
        assert [g.name for g in load(path).groups] == list(groups)  # priority order
        assert {r.config.model.network for r in runs if "D" not in r.groups} == {network}
        assert {r.config.dataset for r in by_group["C"]} == {"omniglot", "fashion_mnist"}
        assert {(r.variant, r.beta) for r in by_group["E1"]} == {("echo", 8.0), ("vae", 8.0)}
        assert {r.beta for r in by_group["E2"]} == {2.0, 4.0} and {r.config.num_epochs for r in by_group["E2"]} == {200}
        e3 = {(r.variant, r.beta, r.config.batch_size, r.config.dataset) for r in by_group["E3"]}
        assert e3 == {
            (v, b, 400, "binary_mnist") for v in ("echo_batch400", "vae_batch400") for b in (2.0, 4.0, 8.0, 16.0)
        }
        # The floor's test on the other datasets: Echo's losing betas and the neighbour its rate needs.
        # E5 is E4 with as many updates as batch 100 takes: 4 times the epochs.
        standard_epochs = by_group["A"][0].config.num_epochs
        floor_tests = {
            (g, r.variant, r.beta, r.config.batch_size, r.config.dataset, r.config.num_epochs)
            for g in ("E4", "E5", "E6")
            for r in by_group[g]
        }
        assert floor_tests == {
            (g, v, b, 400, d, epochs)
            for g, d, betas, epochs in (
                ("E4", "omniglot", (0.25, 0.5, 1.0), standard_epochs),
                ("E5", "omniglot", (0.25, 0.5, 1.0), 4 * standard_epochs),
                ("E6", "fashion_mnist", (0.25, 0.5, 1.0, 2.0), standard_epochs),
            )
            for v in ("echo_batch400", "vae_batch400")
            for b in betas
        }
        longer = {
            (g, r.variant, r.beta, r.config.num_epochs, r.config.dataset) for g in ("E7", "E8") for r in by_group[g]
        }
        assert longer == {
            (g, v, b, 200, d)
            for g, d in (("E7", "omniglot"), ("E8", "fashion_mnist"))
            for v in ("echo", "vae")
            for b in (0.5, 1.0, 2.0)
        }
        floors = {
            round(reproduction._rate_floor(r.config), 2)
            for g in ("E3", "E4", "E5", "E6")
            for r in by_group[g]
            if r.variant == "echo_batch400"
        }
        if name == "paper_mlp":  # the batch-400 clip's floor for 32 dimensions, against batch 100's 5.74
            assert floors == {1.52}
        assert all(r.config.num_train_steps >= 30_000 or r.config.num_epochs >= 26 for r in by_group["D"])
        assert any(r.config.model.tc_weight > 0 for r in by_group["D"])
    mlp = campaign.plan(load(os.path.join(REPO, "configs", "campaigns", "paper_mlp.py")), os.path.join(REPO, "configs"))
    assert {
        (r.config.num_epochs, r.config.batch_size, r.config.model.latent_dim, tuple(r.config.model.mlp_hidden))
        for r in mlp
        if not {"D", "E2", "E3", "E4", "E5", "E6", "E7", "E8"} & set(r.groups)
    } == {(100, 100, 32, (500, 500))}
    # The model zoo: seed 0 of echo and vae at beta 0.25, 1 and 4 on binarized MNIST, nothing else.
    kept = sorted((r.variant, r.beta, r.seed, r.config.dataset, r.config.num_epochs) for r in mlp if r.keep_params)
    assert kept == sorted((v, b, 0, "binary_mnist", 100) for v in ("echo", "vae") for b in (0.25, 1.0, 4.0))


def test_cli_status(tmp_path):
    path = write_campaign(tmp_path)

    def status(*flags):
        command = ["-m", "experiments.campaign", "--campaign", path, "--status", "--results", str(tmp_path / "results")]
        out = subprocess.run([sys.executable, *command, *flags], cwd=REPO, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        return out.stdout

    out = status()
    assert "group A: 0/8 runs done" in out and "pending: echo mnist_sample beta=2 seeds 0,1" in out
    out = status("--variant", "vae")
    assert "group A: 0/4 runs done" in out and "pending: echo" not in out


def test_cli_only_what_fits_without_a_budget_is_a_one_line_error(tmp_path):
    command = ["-m", "experiments.campaign", "--campaign", write_campaign(tmp_path), "--only-what-fits"]
    command += ["--results", str(tmp_path / "results"), "--workdir", str(tmp_path / "work")]
    out = subprocess.run([sys.executable, *command], cwd=REPO, capture_output=True, text=True)
    assert out.returncode != 0 and out.stderr.strip().count("\n") == 0, out.stderr
    assert "--only-what-fits needs a time budget" in out.stderr and "--max-minutes" in out.stderr
    assert not (tmp_path / "work").exists() and not (tmp_path / "results").exists()


HOLD = textwrap.dedent(
    """
    import sys, time
    from echo_jax import workdir
    held = workdir.lock(sys.argv[1])
    print("held", flush=True)
    time.sleep(600)
    """
)


def hold_lock(directory):
    """A process that holds `directory`'s lock (until it is killed)."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(directory)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_program_locked_by_a_live_runner_is_skipped_and_a_killed_ones_lock_is_gone(tmp_path):
    path = write_campaign(tmp_path)
    (program,) = campaign.programs(campaign.plan(load(path), campaign.config_root(path), groups=["B"]))
    workdir = tmp_path / "work" / "tiny" / program.key
    holder = hold_lock(workdir)
    try:
        complete, lines = run(path, tmp_path, groups=["B"])
        assert not complete and "being trained by another runner" in lines[1] and finished(tmp_path) == {}
        assert sorted(os.listdir(workdir)) == ["lock"]  # nothing written
    finally:
        holder.kill()  # SIGKILL: no clean-up of its own, and the OS lock goes with the process
        holder.wait()
    complete, lines = run(path, tmp_path, groups=["B"])
    assert complete


def test_a_dirty_tree_is_refused_unless_allowed_and_then_each_run_keeps_the_diff(tmp_path, monkeypatch):
    path = write_campaign(tmp_path)
    monkeypatch.setattr(identity, "code_commit", lambda: CLEAN + "+dirty")
    monkeypatch.setattr(identity, "code_diff", lambda: "diff --git a/x b/x\n+changed\n")
    with pytest.raises(campaign.DirtyTreeError, match="uncommitted changes.*--allow-dirty"):
        run(path, tmp_path, groups=["B"])
    assert not (tmp_path / "work").exists() and finished(tmp_path) == {}
    complete, _ = run(path, tmp_path, groups=["B"], allow_dirty=True)
    assert complete
    (directory,) = finished(tmp_path).values()
    diff = "diff --git a/x b/x\n+changed\n"
    diff_name = f"code-{hashlib.sha256(diff.encode()).hexdigest()[:8]}.diff"
    with open(os.path.join(directory, diff_name)) as f:
        assert f.read() == f"# uncommitted changes on top of {CLEAN}\ndiff --git a/x b/x\n+changed\n"
    with open(os.path.join(directory, "results.json")) as f:
        run_info = json.load(f)["run"]
    assert run_info["commit"] == CLEAN + "+dirty" and run_info["commits"] == [CLEAN + "+dirty"]
    monkeypatch.setattr(identity, "code_commit", lambda: CLEAN + "+dirty")
    complete, lines = run(path, tmp_path, groups=["B"])  # nothing to train: a dirty tree is no obstacle to that
    assert complete and "0 to train" in lines[0]


def test_a_signal_stops_the_campaign_after_a_checkpoint_and_releases_the_program(tmp_path):
    path = write_campaign(tmp_path)
    calls = iter(range(10**6))

    def clock():  # asked before every step; the 6th time, the runner gets SIGINT (Ctrl-C)
        if next(calls) == 6:
            os.kill(os.getpid(), signal.SIGINT)
        return 0.0

    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(train.RunInterrupted, match=r"stopped at step \d of 8; checkpoint saved") as stopped:
        run(path, tmp_path, groups=["B"], max_minutes=10**6, clock=clock)
    assert stopped.value.exit_status == 130 and finished(tmp_path) == {}
    (workdir,) = (tmp_path / "work" / "tiny").iterdir()
    assert (workdir / "checkpoints").is_dir()
    campaign.workdir_lib.lock(str(workdir)).release()  # released: this process could take it again (or another)
    assert signal.getsignal(signal.SIGINT) is before  # the run's handlers are gone


# ----------------------------------------------------------------------------------------------- key migration


def old_key(config: dict) -> str:
    """A run's key as echo-jax 0.2 computed it: unset values, 0, False and "" all left out (beta 0 = no beta)."""

    def canonical(v):
        if isinstance(v, bool):
            return v
        if isinstance(v, (int, float)):
            return float(v)
        return [canonical(x) for x in v] if isinstance(v, (list, tuple)) else v

    flat = {}

    def visit(node):
        for k, v in node.items():
            if isinstance(v, dict):
                visit(v)
            elif not (v is None or v == "" or (not isinstance(v, str) and v == 0)):
                flat[k] = canonical(v)

    visit({**config, "data_seed": config["seed"] if config.get("data_seed") is None else config["data_seed"]})
    kept = {k: v for k, v in flat.items() if k not in identity.KEYLESS_FIELDS}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:10]


def test_old_key_is_the_key_the_committed_results_were_written_under():
    # The committed results' folders were renamed by the migration; their results.json of before are in git.
    before = subprocess.run(
        ["git", "show", "dde9bbf:results/paper_mlp/binary_mnist/vae/beta2_seed0_9e9fa94971/config.json"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    if before.returncode != 0:
        pytest.skip("not a git checkout with the history")
    assert old_key(json.loads(before.stdout)) == "9e9fa94971"


def old_scheme_results(tmp_path, sidecar=True):
    """A results folder as echo-jax 0.2 left it: a run under its old key, its key inside results.json and the
    parameters sidecar, beside pictures."""
    base = identity.single_run_config(campaign.load_config_file(os.path.join(RD, "echo.py"), "quick"), 0.0, 1)
    config = json.loads(base.to_json_best_effort())
    old = old_key(config)
    directory = tmp_path / "results" / "tiny" / "mnist_sample" / "echo" / f"beta0_seed1_{old}"
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    (directory / "metrics.jsonl").write_text('{"split": "test", "step": 4}\n')
    (directory / "samples.png").write_bytes(b"png")
    row = {"beta": 0.0, "seed": 1, "test": {"rate": 1.0}}  # a row a finished run has
    results = {"experiment": "rate_distortion", "results": [row], "run": {"key": old, "commit": CLEAN}}
    (directory / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    if sidecar:
        (directory / "params.json").write_text(json.dumps({"key": old, "config": config}, indent=2) + "\n")
    return directory, identity.run_key(base)


def test_migrate_keys_renames_old_folders_and_the_keys_inside_them_once(tmp_path):
    directory, new = old_scheme_results(tmp_path)
    results_dir = str(tmp_path / "results" / "tiny")
    lines = []
    assert campaign.migrate_keys(results_dir, log=lines.append) == 1
    moved = directory.parent / f"beta0_seed1_{new}"
    assert not directory.exists() and sorted(os.listdir(moved)) == [
        "config.json",
        "metrics.jsonl",
        "params.json",
        "results.json",
        "samples.png",
    ]
    assert json.loads((moved / "results.json").read_text())["run"] == {"key": new, "commit": CLEAN}
    assert json.loads((moved / "params.json").read_text())["key"] == new
    assert campaign.finished_runs(results_dir) == {new: str(moved)}
    snapshot = {p: (moved / p).read_bytes() for p in os.listdir(moved)}
    assert campaign.migrate_keys(results_dir) == 0  # idempotent: nothing left to do, nothing rewritten
    assert {p: (moved / p).read_bytes() for p in os.listdir(moved)} == snapshot


def test_migrate_keys_finishes_an_interrupted_migration_and_leaves_a_taken_name(tmp_path):
    directory, new = old_scheme_results(tmp_path, sidecar=False)
    results = json.loads((directory / "results.json").read_text())
    results["run"]["key"] = new  # interrupted after the files, before the rename
    (directory / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    twin = directory.parent / f"beta0_seed1_{new}"
    shutil.copytree(directory, twin)  # the same run under both names (copied in from another checkout)
    lines = []
    assert campaign.migrate_keys(str(tmp_path / "results"), log=lines.append) == 0
    assert directory.exists() and twin.exists() and "exists (two folders of one run" in lines[0]
    shutil.rmtree(twin)
    assert campaign.migrate_keys(str(tmp_path / "results")) == 1 and twin.exists()


def test_migrate_keys_renames_half_done_programs_but_not_one_in_use(tmp_path):
    path = write_campaign(tmp_path)
    runs = campaign.plan(load(path), campaign.config_root(path))
    first, second = campaign.programs(runs, "per_beta")[:2]
    programs_dir = tmp_path / "work" / "tiny"
    old = {}
    for program in (first, second):
        config = json.loads(program.config.to_json_best_effort())
        run_keys = [old_key(json.loads(r.config.to_json_best_effort())) for r in program.runs]
        old[program] = old_key(config) + "-" + hashlib.sha256(json.dumps(run_keys).encode()).hexdigest()[:6]
        (programs_dir / old[program] / "checkpoints").mkdir(parents=True)
        (programs_dir / old[program] / "config.json").write_text(json.dumps(config))
    holder = hold_lock(programs_dir / old[second])
    try:
        lines = []
        assert campaign.migrate_keys(str(tmp_path / "results"), str(programs_dir), log=lines.append) == 1
        assert (programs_dir / first.key / "checkpoints").is_dir() and not (programs_dir / old[first]).exists()
        assert (programs_dir / old[second]).exists() and any("in use by a runner" in line for line in lines)
    finally:
        holder.kill()
        holder.wait()
    assert campaign.migrate_keys(str(tmp_path / "results"), str(programs_dir)) == 1
    assert (programs_dir / second.key).is_dir()


def test_cli_migrate_keys(tmp_path):
    directory, new = old_scheme_results(tmp_path)
    args = [sys.executable, "-m", "experiments.campaign", "--campaign", write_campaign(tmp_path), "--migrate-keys"]
    args += ["--results", str(tmp_path / "results"), "--workdir", str(tmp_path / "work")]
    out = subprocess.run(args, cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "1 folder(s) renamed" in out.stdout and (directory.parent / f"beta0_seed1_{new}").is_dir()
