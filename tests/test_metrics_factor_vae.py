"""FactorVAE score on a tiny synthetic world: exact agreement with a plain numpy loop of the
protocol, and the scores a perfect, a collapsed and a noise code must get."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from echo_jax import metrics
from echo_jax.metrics import factor_vae

FACTOR_SIZES = (3, 4, 5)
SMALL = dict(batch_size=32, num_train=200, num_eval=300, num_variance_estimate=500)


def sample_factors(rng, n):
    return rng.integers(0, FACTOR_SIZES, size=(n, len(FACTOR_SIZES)))


def render(factors):
    return factors.astype(np.float32)


def noisy_mixture_represent(seed):
    """A fresh stateful representation: a mix of the factors plus noise, deterministic per seed."""
    noise_rng = np.random.default_rng(seed)
    mixing = np.array([[1.0, 0.3, 0.0, 0.2], [0.0, 1.0, 0.6, 0.0], [0.4, 0.0, 1.0, 0.0]])

    def represent(images):
        return images @ mixing + 2.0 * noise_rng.normal(size=(images.shape[0], 4))

    return represent


def reference_factor_vae(represent, seed, batch_size, num_train, num_eval, num_variance_estimate, prune_threshold=0.05):
    """The dlib protocol vote by vote in numpy, drawing from the generator in the same order
    (whole batches for the variance estimate, then per chunk of votes: the voted factors, then
    the factor vectors), with the argmin over active dims mapped back to the real dim."""
    rng = np.random.default_rng(seed)
    num_factors = len(FACTOR_SIZES)
    num_batches = -(-num_variance_estimate // batch_size)
    factors = sample_factors(rng, num_batches * batch_size)
    codes = np.concatenate(
        [represent(render(factors[i : i + batch_size])) for i in range(0, len(factors), batch_size)]
    )[:num_variance_estimate]
    global_variances = np.var(codes, axis=0, ddof=1)
    active = np.flatnonzero(np.sqrt(global_variances) >= prune_threshold)

    def votes_for(num_votes):
        votes = np.zeros((num_factors, codes.shape[1]), dtype=np.int64)
        for start in range(0, num_votes, factor_vae.VOTES_PER_CHUNK):
            chunk = min(factor_vae.VOTES_PER_CHUNK, num_votes - start)
            fixed = rng.integers(num_factors, size=chunk)
            drawn = sample_factors(rng, chunk * batch_size).reshape(chunk, batch_size, num_factors)
            for vote in range(chunk):
                batch = drawn[vote].copy()
                batch[:, fixed[vote]] = batch[0, fixed[vote]]
                local = np.var(represent(render(batch)), axis=0, ddof=1)
                dim = active[np.argmin(local[active] / global_variances[active])]
                votes[fixed[vote], dim] += 1
        return votes

    train_votes = votes_for(num_train)
    classifier = np.argmax(train_votes, axis=0)
    columns = np.arange(train_votes.shape[1])
    eval_votes = votes_for(num_eval)
    return (
        train_votes[classifier, columns].sum() / train_votes.sum(),
        eval_votes[classifier, columns].sum() / eval_votes.sum(),
        len(active),
    )


def test_matches_numpy_protocol_exactly():
    # A partly entangled noisy code, so that the accuracies are strictly between chance and 1.
    result = metrics.factor_vae_score(
        sample_factors, render, noisy_mixture_represent(11), FACTOR_SIZES, seed=3, **SMALL
    )
    train, evaluation, num_active = reference_factor_vae(noisy_mixture_represent(11), seed=3, **SMALL)
    assert result["num_active_dims"] == num_active == 4
    assert result["train_accuracy"] == pytest.approx(train, abs=1e-6)
    assert result["eval_accuracy"] == pytest.approx(evaluation, abs=1e-6)
    assert 0.4 < evaluation < 0.95


def test_perfect_code_with_pruned_and_noise_dims_scores_one():
    # Dim 0 is constant (pruned), dims 1-3 are the factors, dim 4 is pure noise. Fixing factor k
    # zeroes the variance of its dim, so every vote is right. The code is a jitted, stochastic
    # call (like an Echo model), and must only ever be given whole batches.
    seen_batch_sizes = []
    keys = iter(jax.random.split(jax.random.key(0), 10_000))

    @jax.jit
    def encode(images, key):
        noise = jax.random.normal(key, (images.shape[0], 1))
        return jnp.concatenate([jnp.zeros_like(noise), images, noise], axis=1)

    def represent(images):
        seen_batch_sizes.append(images.shape[0])
        return encode(jnp.asarray(images), next(keys))

    result = metrics.factor_vae_score(sample_factors, render, represent, FACTOR_SIZES, **SMALL)
    assert result == {"train_accuracy": 1.0, "eval_accuracy": 1.0, "num_active_dims": 4}
    assert set(seen_batch_sizes) == {32}


def test_votes_go_to_the_real_dimension_when_dims_are_pruned():
    # dlib's quirk would index all dims with the position among active dims (1 -> dim 1 here).
    codes = np.random.default_rng(0).normal(size=(2, 8, 4)).astype(np.float32)
    codes[:, :, 0] = 0.0  # inactive
    codes[0, :, 2] = 1.0  # vote 0: dim 2 has no local variance
    codes[1, :, 3] = 1.0  # vote 1: dim 3
    active = jnp.array([False, True, True, True])
    dims = factor_vae._vote_dims(jnp.asarray(codes), jnp.array([0.0, 1.0, 1.0, 1.0]), active)
    np.testing.assert_array_equal(np.asarray(dims), [2, 3])


def test_collapsed_code_scores_zero():
    result = metrics.factor_vae_score(sample_factors, render, lambda images: 0.0 * images, FACTOR_SIZES, **SMALL)
    assert result == {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0}


def test_independent_noise_code_scores_chance():
    # Votes land on uniformly random dims whatever the factor, so any classifier is right with
    # probability 1/K on fresh votes: 1/3 +- 0.027 (one sd) for 300 eval votes.
    noise_rng = np.random.default_rng(1)
    represent = lambda images: noise_rng.normal(size=(images.shape[0], 5))
    result = metrics.factor_vae_score(sample_factors, render, represent, FACTOR_SIZES, **SMALL)
    assert result["num_active_dims"] == 5
    assert abs(result["eval_accuracy"] - 1 / 3) < 0.1


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(factor_sizes=(3, 4)), "factor_sizes has 2"),
        (dict(factor_sizes=(3, 4, 2)), "outside 0..size-1"),
        (dict(batch_size=1), "batch_size"),
        (dict(num_train=0), "num_train"),
    ],
)
def test_bad_input_is_rejected_with_a_clear_message(overrides, message):
    arguments = dict(factor_sizes=FACTOR_SIZES, **SMALL)
    arguments.update(overrides)
    with pytest.raises(ValueError, match=message):
        metrics.factor_vae_score(sample_factors, render, lambda images: images, **arguments)
