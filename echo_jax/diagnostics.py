"""Why a model's rate is what it is: per-dimension rates, active units, Echo's floor, and I(X;Z) estimates.

Echo's rate is the exact mutual information I(X;Z). A Gaussian (or IAF) encoder's rate is the KL term
E_x KL(q(z|x) || m(z)), which by the "ELBO surgery" identity (Hoffman & Johnson 2016) is

    rate = I(X;Z) + KL(q(z) || m(z)),    q(z) = E_x q(z|x) the aggregate posterior,

an upper bound on I(X;Z). Comparing Echo's exact rate with a VAE's KL rate therefore favours Echo. This
module bounds the VAE's I(X;Z) from above by lower bounds on KL(q(z) || m(z)): one from the aggregate
posterior's moments (`marginal_kl_lower_bound`, exact, loose unless q(z) is Gaussian) and one from a flow density
fitted to training codes and scored on held-out ones (`flow_kl_lower_bound`, a Monte Carlo estimate, much
tighter); and it estimates I(X;Z) directly with a held-out mixture (`heldout_mutual_information`).

Echo's scale is clipped, S = c * sigmoid(a(x)) with c < 1, so every latent dimension costs at least
-log c nats (`echo_floor`); `dims_at_floor` counts the dimensions that carry nothing but that floor.

All functions take arrays (numpy or jax) and return Python numbers or numpy arrays; `run_diagnostics` computes
all of them for a trained model, as results.json records them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from echo_jax import data as data_lib
from echo_jax import noise
from echo_jax.marginals import diag_gaussian_log_prob

ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al. (2016): Var_x E[z_j | x] > 0.01
FLOOR_TOLERANCE = 0.01  # nats: a dimension within this of -log c carries nothing but the floor


def echo_floor(clip: float) -> float:
    """The least rate of one Echo dimension, -log c nats (its scale S_j(x) <= c)."""
    return float(-np.log(clip))


def echo_rate_per_dim(log_scale) -> np.ndarray:
    """(D,) Echo's exact rate per dimension, -E_x log S_j(x), from log_scale = log S (N, D)."""
    return -np.asarray(jnp.mean(jnp.asarray(log_scale, jnp.float32), axis=0), np.float64)


def gaussian_kl_per_dim(mean, log_var) -> np.ndarray:
    """(D,) E_x KL(q(z_j|x) || N(0, 1)) of a diagonal Gaussian encoder: its rate per dimension under N(0, I)."""
    mean, log_var = jnp.asarray(mean, jnp.float32), jnp.asarray(log_var, jnp.float32)
    kl = 0.5 * (jnp.square(mean) + jnp.exp(log_var) - 1.0 - log_var)
    return np.asarray(jnp.mean(kl, axis=0), np.float64)


def active_units(location, threshold: float = ACTIVE_UNIT_THRESHOLD) -> int:
    """How many dimensions' encoder location (posterior mean; Echo's f(x)) varies over the data by more than
    `threshold` (variance over the N rows of `location`, (N, D))."""
    return int(np.sum(np.var(np.asarray(location, np.float64), axis=0) > threshold))


def dims_at_floor(rate_per_dim, clip: float, tolerance: float = FLOOR_TOLERANCE) -> int:
    """How many of Echo's dimensions have a rate within `tolerance` nats of the floor -log c."""
    return int(np.sum(np.asarray(rate_per_dim) <= echo_floor(clip) + tolerance))


def marginal_kl_lower_bound(mean, log_var) -> float:
    """A lower bound on KL(q(z) || N(0, I)) for the aggregate posterior of a diagonal Gaussian encoder.

    q(z) = (1/N) sum_n N(z; mean_n, diag(exp(log_var_n))) has mean mu = mean(mean_n) and covariance
    Sigma = Cov_n(mean_n) + diag(mean_n exp(log_var_n)). A Gaussian has the largest entropy for a given
    covariance, H(q) <= H(N(mu, Sigma)), and E_q log N(z; 0, I) depends on q through mu and Sigma only, so

        KL(q || N(0, I)) = -H(q) - E_q log N(z; 0, I) >= KL(N(mu, Sigma) || N(0, I))
                         = (tr Sigma + |mu|^2 - D - log det Sigma) / 2.

    The bound is tight when q(z) is Gaussian. `rate - marginal_kl_lower_bound` is then an upper bound on the
    encoder's I(X;Z) that is tighter than its KL rate.

    Args:
      mean, log_var: (N, D) the posterior parameters of N data points.
    """
    mean = np.asarray(mean, np.float64)
    var = np.exp(np.asarray(log_var, np.float64))
    mu = mean.mean(axis=0)
    sigma = np.cov(mean, rowvar=False, bias=True).reshape(mean.shape[1], mean.shape[1]) + np.diag(var.mean(axis=0))
    _, log_det = np.linalg.slogdet(sigma)
    return float(0.5 * (np.trace(sigma) + mu @ mu - mean.shape[1] - log_det))


def sample_kl_lower_bound(z, log_marginal) -> float:
    """The same bound for any encoder and marginal m(z), from samples z ~ q(z) (N, D) and log m(z) (N,):

        KL(q || m) = -H(q) - E_q log m(z) >= -H(N(mu, Sigma)) - E_q log m(z),

    mu and Sigma the samples' moments and E_q log m(z) their mean (a Monte Carlo estimate: the bound holds up to
    its sampling error)."""
    z = np.asarray(z, np.float64)
    dim = z.shape[1]
    sigma = np.cov(z, rowvar=False, bias=True).reshape(dim, dim)
    _, log_det = np.linalg.slogdet(sigma)
    entropy = 0.5 * (dim * np.log(2 * np.pi * np.e) + log_det)
    return float(-entropy - np.mean(np.asarray(log_marginal, np.float64)))


# Adam steps of `flow_kl_lower_bound`'s fit. On the 32-d codes of a binarized-MNIST VAE at beta 1 the bound is 1.61
# nats after 3,000 steps and 1.92 after 10,000 (about 3 minutes on 2 CPU cores), the moment bound 0.05.
FLOW_FIT_STEPS = 10_000


def flow_kl_lower_bound(
    fit_mean,
    fit_log_var,
    codes,
    log_marginal,
    *,
    key: jax.Array,
    transform: Callable[[jax.Array], jax.Array] | None = None,
    steps: int = FLOW_FIT_STEPS,
    batch_size: int = 500,
    num_flow_steps: int = 4,
    hidden_sizes: tuple[int, ...] = (256, 256),
    learning_rate: float = 1e-3,
) -> tuple[float, float]:
    """A lower bound on KL(q(z) || m(z)) from a density fitted to codes of other data points.

    For any normalized density r(z), KL(q || m) = E_q[log r(z) - log m(z)] + KL(q || r) >= E_q[log r - log m]:
    the bound holds whatever r is, and is tight when r = q. Here r is an affine MAF (`echo_jax.marginals.
    MAFMarginal`, on codes standardised by the fit codes' moments) fitted by maximum likelihood to codes of the
    training split, drawn afresh at every step from the posteriors N(fit_mean, exp(fit_log_var)) (a fixed set of
    codes is overfitted: on a binarized-MNIST VAE at beta 4 the bound then fell below 0), and the expectation is
    the mean over `codes`, codes of held-out points: r never saw them, so the mean is an unbiased estimate of the
    bound, with the standard error returned beside it. A poor fit only loosens the bound; it can fall below
    `marginal_kl_lower_bound`, and below 0.

    Args:
      fit_mean, fit_log_var: (M, D) the (base) posterior parameters of the fit's data points.
      codes: (N, D) codes z ~ q(z|x) of held-out points, in the space of `log_marginal`.
      log_marginal: (N,) log m(z) of `codes`.
      key: PRNG key of the fit.
      transform: maps a base sample z0 to a code, for an IAF encoder whose flow does not depend on x; None: z0.
      steps, batch_size, num_flow_steps, hidden_sizes, learning_rate: the fit (Adam, cosine-decayed rate).

    Returns:
      (bound, standard error) in nats.
    """
    import optax

    from echo_jax.marginals import MAFMarginal

    fit_mean = jnp.asarray(fit_mean, jnp.float32)
    fit_std = jnp.exp(0.5 * jnp.asarray(fit_log_var, jnp.float32))
    transform = transform or (lambda z0: z0)

    def draw(draw_key, n):
        index_key, noise_key = jax.random.split(draw_key)
        index = jax.random.randint(index_key, (n,), 0, fit_mean.shape[0])
        return transform(fit_mean[index] + fit_std[index] * jax.random.normal(noise_key, (n, fit_mean.shape[1])))

    moments_key, init_key, key = jax.random.split(key, 3)
    sample = draw(moments_key, min(10 * batch_size, 10 * fit_mean.shape[0]))
    shift, scale = jnp.mean(sample, axis=0), jnp.std(sample, axis=0) + 1e-6
    flow = MAFMarginal(num_steps=num_flow_steps, hidden_sizes=tuple(hidden_sizes), affine=True)

    def log_density(params, z):  # r(z) = MAF((z - shift) / scale) / prod(scale)
        return flow.apply(params, (z - shift) / scale) - jnp.sum(jnp.log(scale))

    params = flow.init(init_key, sample[:2])
    optimizer = optax.adam(optax.cosine_decay_schedule(learning_rate, max(steps, 1)))

    @jax.jit
    def step(carry, step_key):
        params, state = carry
        batch = draw(step_key, batch_size)
        grads = jax.grad(lambda p: -jnp.mean(log_density(p, batch)))(params)
        updates, state = optimizer.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), None

    (params, _), _ = jax.lax.scan(step, (params, optimizer.init(params)), jax.random.split(key, steps))
    codes = np.asarray(codes, np.float32)
    score = jax.jit(lambda z: log_density(params, z))
    log_r = np.concatenate([np.asarray(score(part)) for part in np.array_split(codes, max(1, len(codes) // 1000))])
    terms = log_r.astype(np.float64) - np.asarray(log_marginal, np.float64)
    return float(np.mean(terms)), float(np.std(terms, ddof=1) / np.sqrt(len(terms)))


def heldout_mutual_information(
    mean, log_var, ref_mean, ref_log_var, *, key: jax.Array, num_samples: int = 1, chunk: int = 100
) -> float:
    """I(X;Z) of a diagonal Gaussian encoder, estimated on held-out points against a reference mixture.

    For every held-out point x_i, `num_samples` codes z ~ q(z|x_i) are scored as
    log q(z|x_i) - log (1/N) sum_n q(z|x'_n), the aggregate posterior q(z) replaced by the mixture of the N
    reference (training) encodings x'_n; the estimate is the mean over points and samples.

    Bias: the mixture is an unbiased estimate of q(z), so its log is biased low (Jensen) and the estimate biased
    *high*, by a term that shrinks as N grows; with held-out points the estimate is not capped at log N, unlike
    the in-sample estimate (whose mixture contains q(z|x_i) itself). When the encoder generalises poorly, the
    mixture of training encodings fits held-out codes badly and the estimate grows: it measures the information
    about the held-out data the code carries relative to the training encodings.

    For an IAF encoder z = T(z0) whose flow T does not depend on x (as here), I(X;Z) = I(X;Z0): pass the
    Gaussian base parameters.

    Args:
      mean, log_var: (M, D) held-out posterior parameters.
      ref_mean, ref_log_var: (N, D) reference posterior parameters.
      key: PRNG key of the samples.
      num_samples: codes per held-out point.
      chunk: held-out points scored at once (memory: chunk * N * D floats).
    """
    mean, log_var = jnp.asarray(mean, jnp.float32), jnp.asarray(log_var, jnp.float32)
    ref_mean, ref_log_var = jnp.asarray(ref_mean, jnp.float32), jnp.asarray(ref_log_var, jnp.float32)
    num, dim = mean.shape
    pad = -num % chunk
    padded = lambda x: jnp.concatenate([x, jnp.repeat(x[-1:], pad, axis=0)]).reshape(-1, chunk, dim)

    def score(args):
        m, lv, k = args
        z = m[None] + jnp.exp(0.5 * lv)[None] * jax.random.normal(k, (num_samples, *m.shape))  # (S, C, D)
        log_q = diag_gaussian_log_prob(z, m, lv)  # (S, C)
        log_ref = jax.vmap(lambda zs: diag_gaussian_log_prob(zs[:, None, :], ref_mean[None], ref_log_var[None]))(z)
        log_mixture = jax.scipy.special.logsumexp(log_ref, axis=-1) - jnp.log(ref_mean.shape[0])  # (S, C)
        return jnp.mean(log_q - log_mixture, axis=0)

    keys = jax.random.split(key, (num + pad) // chunk)
    values = jax.lax.map(jax.jit(score), (padded(mean), padded(log_var), keys)).reshape(-1)[:num]
    return float(jnp.mean(values))


# ----------------------------------------------------------------------------------------------- a trained model


def encode_dataset(model, params, dataset, batch_size: int, key: jax.Array, *, limit: int | None = None) -> dict:
    """The head's outputs over the full batches of `dataset` (its first `limit` examples): numpy arrays
    ``location`` (the posterior mean; Echo's f(x)), ``log_scale``, ``z`` and, for Gaussian and IAF encoders,
    ``mean``, ``log_var`` and ``z0``. Echo's noise is built within each batch, as in training."""
    encode = jax.jit(lambda x, k: model.apply({"params": params}, x, rngs={"noise": k}, method="encode"))
    parts: dict[str, list] = {}
    seen = 0
    for i, batch in enumerate(data_lib.eval_batches(dataset, batch_size)):
        if limit is not None and seen >= limit:
            break
        head = encode(jnp.asarray(batch), jax.random.fold_in(key, i))
        fields = {"location": head.mean, "log_scale": head.log_scale, "z": head.z}
        if model.encoder != "echo":
            fields.update(mean=head.mean, log_var=head.log_var, z0=head.z0)
        for name, value in fields.items():
            parts.setdefault(name, []).append(np.asarray(value))
        seen += batch.shape[0]
    return {name: np.concatenate(values) for name, values in parts.items()}


def echo_clip_of(model, batch_size: int) -> float:
    """The clip c an Echo model trains with: its echo_clip, else the one solved from the batch size."""
    if model.echo_clip is not None:
        return float(model.echo_clip)
    return float(noise.echo_clip(batch_size - 1, model.echo_fx_bound))


def rate_per_dim(model, encoded: dict) -> np.ndarray | None:
    """(D,) the rate per dimension where the rate is a sum over dimensions (Echo; a Gaussian encoder with the
    N(0, I) marginal), else None (a learned marginal or a flow couples the dimensions)."""
    if model.encoder == "echo":
        return echo_rate_per_dim(encoded["log_scale"])
    if model.encoder == "gaussian" and model.marginal == "std_normal":
        return gaussian_kl_per_dim(encoded["mean"], encoded["log_var"])
    return None


def run_diagnostics(
    model,
    params,
    train_set,
    test_set,
    batch_size: int,
    key: jax.Array,
    *,
    test_rate: float,
    reference_points: int = 10_000,
    heldout_samples: int = 1,
    fit_steps: int = FLOW_FIT_STEPS,
    fit_points: int = 60_000,
) -> dict[str, Any]:
    """What results.json records beside the test terms, for one trained model (see the module docstring).

    Args:
      model, params: the autoencoder and its parameters.
      train_set, test_set: the splits (the training split's first `reference_points` examples are the
        reference encodings of the held-out estimate).
      batch_size: the training batch size (Echo's noise and clip depend on it).
      key: PRNG key.
      test_rate: the model's rate on the test split (its KL rate for Gaussian and IAF encoders).
      reference_points, heldout_samples: sizes of the held-out I(X;Z) estimate.
      fit_steps, fit_points: the flow bound's fit: its Adam steps, and the training split's first `fit_points`
        examples, whose posteriors it draws codes from.

    Returns:
      ``rate_per_dim`` (nats, test split; omitted where the rate does not decompose), ``active_units`` and, for
      Echo, ``rate_floor_per_dim`` (-log c), ``rate_floor`` (D * -log c) and ``dims_at_floor``; for Gaussian and
      IAF encoders, ``mutual_information``: the KL rate, ``marginal_kl_lower_bound`` (moments),
      ``flow_kl_lower_bound`` (with its standard error and fit steps), ``upper_bound`` (rate minus the larger of
      the moment bound and the flow bound's lower 95% confidence limit) and ``heldout`` (the held-out estimate,
      with its sizes).
    """
    test_key, train_key, mi_key = jax.random.split(key, 3)
    fit_key, flow_key = jax.random.split(jax.random.fold_in(key, 1))
    test = encode_dataset(model, params, test_set, batch_size, test_key)
    out: dict[str, Any] = {"active_units": active_units(test["location"])}
    per_dim = rate_per_dim(model, test)
    if per_dim is not None:
        out["rate_per_dim"] = [float(v) for v in per_dim]
    if model.encoder == "echo":
        clip = echo_clip_of(model, batch_size)
        out["rate_floor_per_dim"] = echo_floor(clip)
        out["rate_floor"] = echo_floor(clip) * model.latent_dim
        out["dims_at_floor"] = dims_at_floor(per_dim, clip)
        return out
    # In the space the rate is measured in: the flow's base space with the VampPrior, else z.
    space = "z0" if model.encoder == "iaf" and model.marginal == "vamp" else "z"
    log_m = jax.jit(lambda z: model.apply({"params": params}, z, method="log_marginal"))
    log_marginal = np.concatenate(
        [np.asarray(log_m(jnp.asarray(part))) for part in np.array_split(test[space], max(1, len(test[space]) // 500))]
    )
    if model.encoder == "gaussian" and model.marginal == "std_normal":
        kl_bound = marginal_kl_lower_bound(test["mean"], test["log_var"])
    else:
        kl_bound = sample_kl_lower_bound(test[space], log_marginal)
    fit = encode_dataset(model, params, train_set, batch_size, fit_key, limit=fit_points)
    transform = None
    if space == "z" and model.encoder == "iaf":  # z = T(z0), T the same for every x
        transform = jax.jit(lambda z0: model.apply({"params": params}, z0, method=lambda m, z0: m.head.iaf(z0)[0]))
    flow_bound, flow_error = flow_kl_lower_bound(
        fit["mean"], fit["log_var"], test[space], log_marginal, key=flow_key, transform=transform, steps=fit_steps
    )
    # The flow bound is an estimate: the upper bound on I(X;Z) takes its lower 95% confidence limit.
    best_bound = max(kl_bound, flow_bound - 1.96 * flow_error)
    reference = encode_dataset(model, params, train_set, batch_size, train_key, limit=reference_points)
    heldout = heldout_mutual_information(
        test["mean"],
        test["log_var"],
        reference["mean"],
        reference["log_var"],
        key=mi_key,
        num_samples=heldout_samples,
    )
    out["mutual_information"] = {
        "kl_rate": float(test_rate),
        "marginal_kl_lower_bound": kl_bound,
        "flow_kl_lower_bound": flow_bound,
        "flow_kl_lower_bound_stderr": flow_error,
        "flow_fit_steps": int(fit_steps),
        "upper_bound": float(test_rate) - best_bound,
        "heldout": heldout,
        "heldout_reference_points": int(reference["mean"].shape[0]),
        "heldout_samples": int(heldout_samples),
    }
    return out
