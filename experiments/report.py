"""Rate-distortion plots and a Markdown table from one or more finished work directories.

    python -m experiments.report --workdir runs/echo_sweep --workdir runs/vae_sweep --out runs/report

Writes rate_distortion.png (rate against distortion, one line per method, -ELBO iso-lines),
neg_elbo_vs_beta.png and results.md into --out (default: the first work directory).
"""

from absl import app, flags

from echo_jax import report

_WORKDIRS = flags.DEFINE_multi_string("workdir", None, "A finished run's directory (repeatable).")
_OUT = flags.DEFINE_string("out", None, "Where to write the report (default: the first --workdir).")
flags.mark_flag_as_required("workdir")


def main(argv):
    del argv
    rows = report.load_results(_WORKDIRS.value)
    out = _OUT.value or _WORKDIRS.value[0]
    print(report.write_report(out, rows))
    print(f"report written to {out}")


if __name__ == "__main__":
    app.run(main)
