"""Reports: plots and a table from finished work directories, or a campaign's reproduction report.

    python -m experiments.report --workdir runs/echo_sweep --workdir runs/vae_sweep --out runs/report
    python -m experiments.report --campaign configs/campaigns/paper_mlp.py

With --workdir: rate_distortion.png (rate against distortion, one line per method, -ELBO iso-lines),
neg_elbo_vs_beta.png and results.md in --out (default: the first work directory). With --campaign:
docs/reproduction.md (or --out) and its figures in docs/figures/reproduction/, from the campaign's
finished runs under --results, with a verdict per claim of the paper.
"""

import os

from absl import flags
from ml_collections import config_flags

from echo_jax import cli

_WORKDIRS = flags.DEFINE_multi_string("workdir", None, "A finished run's directory (repeatable).")
_CAMPAIGN = config_flags.DEFINE_config_file("campaign", None, "A campaign file, e.g. configs/campaigns/paper_mlp.py")
_RESULTS = flags.DEFINE_string("results", "results", "Folder of campaign results (with --campaign).")
_OUT = flags.DEFINE_string(
    "out",
    None,
    "Where to write: a folder for --workdir (default: the first one), "
    "the Markdown file for --campaign (default: docs/reproduction.md).",
)


def main(argv):
    del argv
    if bool(_WORKDIRS.value) == (_CAMPAIGN.value is not None):
        cli.fail("give either --workdir (one or more) or --campaign")
    # What each kind of report needs is imported once the flags are known to be right (scipy, for one).
    if _WORKDIRS.value:
        from echo_jax import report

        rows = report.load_results(_WORKDIRS.value)
        out = _OUT.value or _WORKDIRS.value[0]
        print(report.write_report(out, rows))
        print(f"report written to {out}")
        return
    from echo_jax import campaign as campaign_lib

    campaign = _CAMPAIGN.value
    path = config_flags.get_config_filename(flags.FLAGS["campaign"])
    runs = campaign_lib.plan(campaign, campaign_lib.config_root(path))
    done, rejected = campaign_lib.scan_results(os.path.join(_RESULTS.value, campaign.name))
    out = _OUT.value or os.path.join("docs", "reproduction.md")
    from echo_jax import reproduction

    verdicts = reproduction.write_reproduction(
        campaign,
        runs,
        done,
        out,
        os.path.join(os.path.dirname(out) or ".", "figures", "reproduction"),
        command=f"python -m experiments.report --campaign {path}",
        rejected=rejected,
    )
    for v in verdicts:
        print(f"{v.status:>16}: {v.claim}")
    print(f"report written to {out}")


if __name__ == "__main__":
    cli.run(main)
