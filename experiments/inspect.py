"""Looks at a trained model: prints its summary and writes its pictures.

    python -m experiments.inspect results/paper_mlp/binary_mnist/echo/beta1_seed0_<key>
    python -m experiments.inspect runs/echo_sweep --beta 1 --seed 0 --out /tmp/pictures

PATH is a model directory (a campaign run that kept its parameters, or ``models/beta<b>_seed<s>/`` of a work
directory) or a work directory, where --beta and --seed choose the model. Prints the config in one line, the
test and training-split terms, the rate per latent dimension and how many dimensions are active; writes
reconstructions.png, samples.png, rates_per_dim.png (and traversal.png for dSprites) into --out.
"""

import jax
import numpy as np
from absl import flags

from echo_jax import cli, pictures, trained
from echo_jax import data as data_lib

_BETA = flags.DEFINE_float("beta", None, "The model's beta (work directories with several models).")
_SEED = flags.DEFINE_integer("seed", None, "The model's seed (work directories with several models).")
_OUT = flags.DEFINE_string("out", None, "Where the pictures go (default: the model's directory).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "The datasets' folder (default: the run's, $ECHO_JAX_DATA_DIR).")
_IMAGES = flags.DEFINE_integer("num_images", 2000, "Test images the rates are averaged over.")


def main(argv):
    if len(argv) != 2:
        cli.fail("give one PATH: a model directory or a work directory (see --help)")
    model = trained.load_run(argv[1], beta=_BETA.value, seed=_SEED.value)
    config = model.config.copy_and_resolve_references()
    if _DATA_DIR.value:
        config.data_dir = _DATA_DIR.value
    config.num_train_examples = config.batch_size  # only the test split is needed
    options = {"binarize": config.binarize} if config.binarize else {}
    test = data_lib.load(config.dataset, "test", data_dir=config.data_dir or None, **options)
    images = np.asarray(next(data_lib.eval_batches(test, min(_IMAGES.value, len(test)))))
    for line in trained.describe(model, images, jax.random.PRNGKey(0)):
        print(line)
    for path in pictures.write_pictures(model, images, _OUT.value or model.path, jax.random.PRNGKey(0)):
        print(f"wrote {path}")


if __name__ == "__main__":
    cli.run(main)
