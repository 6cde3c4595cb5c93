"""Recomputes the diagnostics of a campaign's finished runs that kept their parameters, with the code of now.

    python -m experiments.diagnose --results results/paper_mlp [--all]

A run's diagnostics (results.json's ``diagnostics``: rates per dimension, active units, Echo's floor, the VAE's
I(X;Z) bounds) are computed when it finishes; a diagnostic added since is missing from it. Each run folder under
--results with a parameters file, and without one of the diagnostics the code now records, is read back, encoded
again, and its results.json rewritten in one atomic write (training is not repeated; the test terms stay those of
training); --all recomputes every such folder. Then `python -m experiments.report --campaign ...` again.
"""

from absl import flags

from echo_jax import campaign, cli

_RESULTS = flags.DEFINE_string("results", None, "A campaign's results folder, e.g. results/paper_mlp.")
_ALL = flags.DEFINE_bool("all", False, "Recompute every run that kept its parameters, not only those missing some.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "The datasets' folder (default: the run's, $ECHO_JAX_DATA_DIR).")
flags.mark_flag_as_required("results")


def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected argument(s) {' '.join(argv[1:])}; give the folder with --results")
    count = campaign.recompute_diagnostics(
        _RESULTS.value, everything=_ALL.value, data_dir=_DATA_DIR.value, log=lambda line: print(line, flush=True)
    )
    print(f"{count} run(s) recomputed")


if __name__ == "__main__":
    cli.run(main)
