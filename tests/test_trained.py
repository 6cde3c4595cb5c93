"""echo_jax.trained: parameter files, load_run, TrainedModel; the pictures; the committed model zoo."""

import glob
import hashlib
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from echo_jax import defaults, diagnostics, pictures, train, trained
from echo_jax.trained import RunFileError, load_run

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(REPO), "shared", "data")


def tiny_config(encoder="echo", **fields):
    config = defaults.rate_distortion_config(quick=True)
    config.num_train_examples, config.num_test_examples, config.batch_size = 96, 48, 16
    config.num_train_steps, config.log_every_steps, config.iwae_samples = 12, 6, 3
    config.model.mlp_hidden, config.model.latent_dim = (16,), 4
    if encoder != "echo":
        config.model.encoder, config.model.marginal = encoder, "std_normal"
    for name, value in fields.items():
        config[name] = value
    return config


@pytest.fixture(scope="module")
def sweep_workdir(tmp_path_factory):
    """A finished sweep of two Echo models (beta 1 and 4)."""
    workdir = str(tmp_path_factory.mktemp("echo_sweep"))
    results = train.train_and_evaluate(tiny_config(betas="1,4"), workdir)
    return workdir, results


@pytest.fixture(scope="module")
def vae_workdir(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("vae"))
    results = train.train_and_evaluate(tiny_config("gaussian"), workdir)
    return workdir, results


def test_every_model_of_a_sweep_gets_a_parameters_file_sidecar_and_pictures(sweep_workdir):
    workdir, _ = sweep_workdir
    names = sorted(os.listdir(os.path.join(workdir, "models")))
    assert names == ["beta1_seed0", "beta4_seed0"]
    files = sorted(os.listdir(os.path.join(workdir, "models", "beta4_seed0")))
    assert files == ["params.json", "params.safetensors", "rates_per_dim.png", "reconstructions.png", "samples.png"]
    sidecar = json.load(open(os.path.join(workdir, "models", "beta4_seed0", "params.json")))
    content = open(os.path.join(workdir, "models", "beta4_seed0", "params.safetensors"), "rb").read()
    assert sidecar["sha256"] == hashlib.sha256(content).hexdigest()
    assert (sidecar["beta"], sidecar["seed"], sidecar["dataset"]) == (4.0, 0, "mnist_sample")
    assert sidecar["config"]["beta"] == 4.0 and sidecar["config"]["betas"] == "" and len(sidecar["key"]) == 10
    assert b"opt_state" not in content and b"mu" not in content.split(b"\n")[0][:200]  # parameters only


def test_save_and_load_round_trip_is_bit_identical(sweep_workdir, tmp_path):
    workdir, _ = sweep_workdir
    model = load_run(workdir, beta=1)
    trained.save_model(
        str(tmp_path / "copy"),
        model.params,
        config=model.config,
        image_shape=model.image_shape,
        reference_images=model.reference_images,
        info={"key": model.key},
    )
    again = load_run(str(tmp_path / "copy"))
    leaves, tree = jax.tree.flatten(model.params)
    again_leaves, again_tree = jax.tree.flatten(again.params)
    assert tree == again_tree
    for a, b in zip(leaves, again_leaves):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    np.testing.assert_array_equal(again.reference_images, model.reference_images)


def test_a_reloaded_model_reproduces_its_runs_results(sweep_workdir, vae_workdir):
    for workdir, results in (sweep_workdir, vae_workdir):
        for row in results["results"]:
            model = load_run(workdir, beta=row["beta"], seed=row["seed"])
            assert (model.beta, model.seed) == (row["beta"], row["seed"])
            for split in ("test", "train"):
                terms = model.evaluate(split)
                assert set(terms) == set(row[split])
                for name, value in row[split].items():
                    assert terms[name] == pytest.approx(value, rel=1e-5, abs=1e-4), (split, name)


def test_encode_decode_sample_shapes_and_key_determinism(sweep_workdir, vae_workdir):
    x = load_run(sweep_workdir[0], beta=1).reference_images[:5]
    for model in (load_run(sweep_workdir[0], beta=1), load_run(vae_workdir[0])):
        key = jax.random.PRNGKey(3)
        enc = model.encode(x, key)
        assert enc.location.shape == enc.log_scale.shape == enc.z.shape == (5, 4)
        np.testing.assert_array_equal(model.encode(x, key).z, enc.z)
        assert not np.array_equal(model.encode(x, jax.random.PRNGKey(4)).z, enc.z)
        assert model.decode(enc.z).shape == (5, 28, 28, 1)
        assert model.reconstruct(x, key).shape == (5, 28, 28, 1)
        samples = model.sample(7, key)
        assert samples.shape == (7, 28, 28, 1) and float(samples.min()) >= 0 and float(samples.max()) <= 1
        np.testing.assert_array_equal(model.sample(7, key), samples)
        assert model.rate_per_dim(x).shape == (4,)
    single = load_run(sweep_workdir[0], beta=1).encode(x[:1], jax.random.PRNGKey(0))
    assert single.z.shape == (1, 4)  # Echo encodes a single image: its noise comes from the reference batch


def test_echo_codes_take_their_noise_from_the_reference_batch_only(sweep_workdir):
    model = load_run(sweep_workdir[0], beta=1)
    x = model.reference_images
    key = jax.random.PRNGKey(5)
    a = model.encode(jnp.stack([x[0], x[1]]), key)
    b = model.encode(jnp.stack([x[0], 1 - x[1]]), key)
    # Row 0's code does not depend on the row beside it: the noise is not built from the other rows of x.
    np.testing.assert_allclose(a.z[0], b.z[0], rtol=1e-6)
    eps = (a.z - a.location) / jnp.exp(a.log_scale)
    np.testing.assert_allclose(eps, model.echo_noise(2, key), rtol=1e-4, atol=1e-5)
    # The noise is a series over the reference batch's encodings: with every reference code at 0, it is 0.
    zeroed = jax.tree.map(lambda p: p, model.params)
    zeroed["head"]["fx"]["kernel"] = jnp.zeros_like(zeroed["head"]["fx"]["kernel"])
    zeroed["head"]["fx"]["bias"] = jnp.zeros_like(zeroed["head"]["fx"]["bias"])
    silent = trained.TrainedModel(model.config, model.model, zeroed, x, model.info, model.path)
    np.testing.assert_allclose(silent.echo_noise(3, key), 0.0, atol=1e-7)


def test_the_per_dimension_rate_sums_to_the_models_rate(sweep_workdir, vae_workdir):
    for _, results in (sweep_workdir, vae_workdir):
        row = results["results"][0]
        assert sum(row["diagnostics"]["rate_per_dim"]) == pytest.approx(row["test"]["rate"], rel=1e-4)
    echo = sweep_workdir[1]["results"][0]["diagnostics"]
    assert echo["rate_floor"] == pytest.approx(4 * echo["rate_floor_per_dim"]) and 0 <= echo["dims_at_floor"] <= 4
    vae = vae_workdir[1]["results"][0]
    mi = vae["diagnostics"]["mutual_information"]
    assert mi["kl_rate"] == vae["test"]["rate"] and mi["upper_bound"] <= mi["kl_rate"]
    # The upper bound subtracts the better of the two KL bounds (the flow's at its lower confidence limit).
    flow_limit = mi["flow_kl_lower_bound"] - 1.96 * mi["flow_kl_lower_bound_stderr"]
    assert mi["upper_bound"] == pytest.approx(mi["kl_rate"] - max(mi["marginal_kl_lower_bound"], flow_limit))
    assert 0 < mi["flow_fit_steps"] <= diagnostics.FLOW_FIT_STEPS
    assert set(vae["train"]) == {"rate", "distortion", "neg_elbo", "loss"}


def test_pictures_are_pngs_of_the_expected_size(sweep_workdir):
    directory = os.path.join(sweep_workdir[0], "models", "beta1_seed0")
    sizes = {name: Image.open(os.path.join(directory, name)).size for name in os.listdir(directory) if ".png" in name}
    assert sizes["reconstructions.png"] == pictures.grid_size(4, 10, (28, 28))
    assert sizes["samples.png"] == pictures.grid_size(6, 10, (28, 28))
    assert sizes["rates_per_dim.png"] == (600, 300)
    for name in sizes:
        assert open(os.path.join(directory, name), "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def _refused(path, match, **choice):
    with pytest.raises(RunFileError, match=match) as error:
        load_run(path, **choice)
    assert "\n" not in str(error.value)


def _snapshot(root):
    return {p: os.stat(p).st_mtime_ns for p in glob.glob(os.path.join(root, "**"), recursive=True)}


def test_bad_input_is_one_line_naming_the_file_and_nothing_is_written(sweep_workdir, tmp_path):
    workdir, _ = sweep_workdir
    before = _snapshot(workdir)
    _refused(str(tmp_path), "is not a run")
    _refused(workdir, r"matches no model; it holds beta=1 seed=0, beta=4 seed=0", beta=2)
    _refused(workdir, "matches several models")
    _refused(str(tmp_path / "missing"), "no such run directory")
    assert _snapshot(workdir) == before
    # A damaged parameters file, a foreign sidecar, a sidecar of another version.
    copy = tmp_path / "copy"
    copy.mkdir()
    source = os.path.join(workdir, "models", "beta1_seed0")
    for name in ("params.json", "params.safetensors"):
        (copy / name).write_bytes(open(os.path.join(source, name), "rb").read())
    content = bytearray((copy / "params.safetensors").read_bytes())
    content[-1] ^= 1
    (copy / "params.safetensors").write_bytes(bytes(content))
    _refused(str(copy), r"params.safetensors has sha256 .* its sidecar expects")
    sidecar = json.loads((copy / "params.json").read_text())
    (copy / "params.json").write_text(json.dumps({**sidecar, "version": 99}))
    _refused(str(copy), "sidecar version 99; this echo-jax reads version 1")
    (copy / "params.json").write_text("[1, 2]")
    _refused(str(copy), "is not an echo-jax model sidecar")
    (copy / "params.json").write_text('{"format": ')
    _refused(str(copy), "cannot be read as JSON")


ZOO = sorted(glob.glob(os.path.join(REPO, "results", "**", "params.json"), recursive=True))


@pytest.mark.skipif(not ZOO, reason="no committed zoo models")
@pytest.mark.parametrize("sidecar", ZOO, ids=lambda p: os.path.relpath(os.path.dirname(p), REPO))
def test_every_zoo_model_reproduces_its_committed_neg_elbo(sidecar):
    if not os.path.isdir(SHARED_DATA):
        if os.environ.get("ECHO_JAX_REQUIRE_SHARED_DATA"):
            pytest.fail(f"{SHARED_DATA} is missing")
        pytest.skip("the zoo's datasets live in ../shared/data")
    directory = os.path.dirname(sidecar)
    results = json.load(open(os.path.join(directory, "results.json")))["results"][0]
    model = load_run(directory)
    assert model.key == os.path.basename(directory).rsplit("_", 1)[-1]
    terms = model.evaluate("test", data_dir=SHARED_DATA, iwae_samples=0)
    assert abs(terms["neg_elbo"] - results["test"]["neg_elbo"]) < 0.1


def test_inspect_prints_a_summary_and_writes_the_pictures(sweep_workdir, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "pictures"
    command = [sys.executable, "-m", "experiments.inspect", sweep_workdir[0], "--beta", "4", "--out", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert "echo/none, mlp [16], D=4, mnist_sample, beta=4, seed=0" in lines[0]
    assert lines[1].startswith("test: distortion") and any(line.startswith("rate per dimension over") for line in lines)
    assert any(line.startswith("active dimensions") and line.endswith("of 4") for line in lines)
    assert sorted(os.listdir(out)) == ["rates_per_dim.png", "reconstructions.png", "samples.png"]
    ambiguous = subprocess.run(command[:4], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert ambiguous.returncode == 1 and ambiguous.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "matches several models" in ambiguous.stderr


TINY_ZOO_CAMPAIGN = """
import ml_collections
from echo_jax.campaign import group

def get_config():
    c = ml_collections.ConfigDict()
    c.name = "tiny_zoo"
    c.overrides = {{"num_train_examples": 64, "num_test_examples": 32, "batch_size": 16, "num_epochs": 2,
                    "model": {{"mlp_hidden": (16,), "latent_dim": 4}}, "eval_every_epochs": 1,
                    "log_every_steps": 2, "iwae_samples": 0}}
    c.keep_params = ({{"variants": ("echo",), "betas": (2,), "seeds": (0,)}},)
    c.groups = (group("A", [("echo", "{rd}/echo.py:quick")], betas=(1, 2), seeds=(0,)),)
    return c
"""


def test_a_campaign_keeps_the_declared_parameters_and_retrains_a_kept_run_that_lacks_them(tmp_path):
    import shutil

    from echo_jax import campaign

    path = tmp_path / "configs" / "campaigns" / "tiny_zoo.py"
    path.parent.mkdir(parents=True)
    path.write_text(TINY_ZOO_CAMPAIGN.format(rd=os.path.join(REPO, "configs", "rate_distortion")))
    spec = campaign.load_config_file(str(path))
    results, work = str(tmp_path / "results"), str(tmp_path / "work")

    def run():
        lines = []
        campaign.run_campaign(  # allow_dirty: the tests run from work trees with changes too
            spec,
            root=campaign.config_root(str(path)),
            results_dir=results,
            work_dir=work,
            allow_dirty=True,
            log=lines.append,
        )
        return lines

    run()
    done = campaign.finished_runs(results)
    runs = {r.beta: r for r in campaign.plan(spec, campaign.config_root(str(path)))}
    kept, plain = done[runs[2.0].key], done[runs[1.0].key]
    assert os.path.isfile(os.path.join(kept, "params.safetensors")) and os.path.isfile(
        os.path.join(kept, "params.json")
    )
    assert not os.path.exists(os.path.join(plain, "params.json")) and os.path.isfile(os.path.join(plain, "samples.png"))
    model = load_run(kept)
    assert model.key == runs[2.0].key  # the sidecar names the run as its folder does
    first = json.load(open(os.path.join(kept, "results.json")))["results"][0]
    assert model.evaluate("test")["neg_elbo"] == pytest.approx(first["test"]["neg_elbo"], rel=1e-6)
    # A committed run without its parameters (and without its checkpoints) is trained again, to the same numbers.
    os.remove(os.path.join(kept, "params.json"))
    shutil.rmtree(work)
    lines = run()
    assert "1 to train" in lines[0]
    again = json.load(open(os.path.join(kept, "results.json")))["results"][0]
    assert again["test"] == first["test"] and again["train"] == first["train"]
    assert os.path.isfile(os.path.join(kept, "params.json"))
