"""Runs a campaign: the missing runs of a campaign file, in priority order, within a time budget.

    python -m experiments.campaign --campaign configs/campaigns/paper_mlp.py [--group A] [--max-minutes 120]
    python -m experiments.campaign --campaign configs/campaigns/paper_mlp.py --status
    python -m experiments.campaign --campaign configs/campaigns/paper_mlp.py --group A --retrain-outdated
    python -m experiments.campaign --campaign configs/campaigns/paper_mlp.py --group A --beta 4 --retrain-outdated
    python -m experiments.campaign --campaign configs/campaigns/paper_mlp.py --migrate-keys [--results DIR]

Finished runs land in results/<campaign>/ (config.json, metrics.jsonl, results.json per run: commit
them); checkpoints of half-done programs stay in --workdir and are resumed by the next call. Then
`python -m experiments.report --campaign ...` writes docs/reproduction.md from what is finished.
The runner refuses a work tree with uncommitted changes unless --allow-dirty (each run then keeps the
diff beside its results). --group, --variant, --beta and --dataset pick the runs that decide a question first.
--retrain-outdated also trains again the finished runs whose results predate
the training split's terms and the diagnostics (their new folders replace the old). --only-what-fits
(with --max-minutes) starts no program that finished runs like it say will not end in the time left, for
machines whose --workdir is lost with the session. --migrate-keys
renames the run folders under --results (and the programs' work directories under --workdir) whose key
an earlier key scheme computed, from their config.json; it is idempotent.
"""

import os

from absl import flags, logging
from ml_collections import config_flags

from echo_jax import campaign as campaign_lib
from echo_jax import cli, validation

_CAMPAIGN = config_flags.DEFINE_config_file("campaign", None, "A campaign file, e.g. configs/campaigns/paper_mlp.py")
_GROUPS = flags.DEFINE_multi_string("group", None, "Only this group (repeatable); default: all, in order.")
_VARIANTS = flags.DEFINE_multi_string(
    "variant", None, "Only this variant of the groups (repeatable), e.g. vae_batch400; default: all."
)
_BETAS = flags.DEFINE_multi_float("beta", None, "Only this beta of the groups (repeatable), e.g. 4; default: all.")
_DATASETS = flags.DEFINE_multi_string(
    "dataset", None, "Only the runs on this dataset (repeatable), e.g. omniglot; default: all."
)
_MAX_MINUTES = flags.DEFINE_float(
    "max-minutes",
    None,
    "Time budget: training stops at 90% of it, after a checkpoint; no program starts in the last 10%.",
)
_ONLY_WHAT_FITS = flags.DEFINE_bool(
    "only-what-fits",
    False,
    "With --max-minutes: start no program expected (from finished runs like it) to take longer than the time left; "
    "for machines whose --workdir does not outlive the session. A program with a checkpoint always resumes.",
)
_RESULTS = flags.DEFINE_string("results", "results", "Folder of campaign results (<results>/<campaign>/...).")
_WORKDIR = flags.DEFINE_string(
    "workdir",
    os.path.join(os.path.expanduser("~"), ".cache", "echo_jax", "campaigns"),
    "Scratch folder of the programs' checkpoints.",
)
_LAYOUT = flags.DEFINE_enum("layout", "auto", campaign_lib.LAYOUTS, "How runs are packed into sweep programs.")
_STATUS = flags.DEFINE_bool("status", False, "Only print what is done and what is left.")
_ALLOW_DIRTY = flags.DEFINE_bool(
    "allow-dirty", False, "Train even though the code has uncommitted changes (each run keeps the diff)."
)
_RETRAIN_OUTDATED = flags.DEFINE_bool(
    "retrain-outdated",
    False,
    "Also train again the finished runs whose results predate the training split's terms and the diagnostics.",
)
_MIGRATE_KEYS = flags.DEFINE_bool(
    "migrate-keys",
    False,
    "Only rename the run folders (and program work directories) whose key an earlier key scheme computed.",
)
flags.mark_flag_as_required("campaign")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    campaign = _CAMPAIGN.value
    validation.require_config_dict(campaign, "the campaign file")
    root = campaign_lib.config_root(config_flags.get_config_filename(flags.FLAGS["campaign"]))
    results_dir = os.path.join(_RESULTS.value, campaign.name)
    if _MIGRATE_KEYS.value:
        renamed = campaign_lib.migrate_keys(
            results_dir, os.path.join(_WORKDIR.value, campaign.name), log=lambda line: print(line, flush=True)
        )
        print(f"{renamed} folder(s) renamed")
        return
    if _STATUS.value:
        runs = campaign_lib.plan(campaign, root, _GROUPS.value, _VARIANTS.value, _BETAS.value, _DATASETS.value)
        done, rejected = campaign_lib.scan_results(results_dir)
        print(f"campaign {campaign.name}: {campaign_lib.count_sentence(runs, done, rejected)}")
        for line in campaign_lib.status_lines(campaign, runs, done, rejected):
            print(line)
        return
    campaign_lib.run_campaign(
        campaign,
        root=root,
        results_dir=results_dir,
        work_dir=_WORKDIR.value,
        groups=_GROUPS.value,
        variants=_VARIANTS.value,
        betas=_BETAS.value,
        datasets=_DATASETS.value,
        max_minutes=_MAX_MINUTES.value,
        layout=_LAYOUT.value,
        allow_dirty=_ALLOW_DIRTY.value,
        retrain_outdated=_RETRAIN_OUTDATED.value,
        only_what_fits=_ONLY_WHAT_FITS.value,
        log=lambda line: print(line, flush=True),
    )


if __name__ == "__main__":
    cli.run(main)
