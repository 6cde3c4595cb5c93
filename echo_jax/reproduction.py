"""The reproduction report: what a campaign's finished runs say about the paper's claims.

`write_reproduction` reads every finished run of a campaign (see `echo_jax.campaign`) and writes a
Markdown report with its figures: per dataset, rate-distortion curves (seed mean, one standard deviation
as error bars, -ELBO iso-lines) and a table; a beta = 1 table; learning curves; paired differences
Echo - VAE with 95% t-intervals over seeds; and one verdict per claim of the paper - supported, not
supported or not yet measured - with the budget it rests on. Pending runs are listed.

Seeds are paired: the campaign trains Echo and the VAE of one seed on the same data stream, so a
difference is taken per seed and its interval is mean +- t(0.975, n-1) * sd / sqrt(n).
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import scipy.stats

from echo_jax import campaign as campaign_lib
from echo_jax.files import write_atomic
from echo_jax.paper import FLOOR_BATCH, FLOOR_VARIANTS
from echo_jax.report import figure

RD_DATASETS = ("binary_mnist", "omniglot", "fashion_mnist")
FLOW_VARIANTS = ("vae_maf", "iaf_prior", "iaf_prior_mmd", "iaf_maf", "iaf_vamp")
DSPRITES = ("dsprites", "dsprites_correlated")


# ----------------------------------------------------------------------------------------------- statistics


@dataclasses.dataclass(frozen=True)
class Summary:
    """Mean and sample standard deviation (ddof 1; 0 for one value) of n values."""

    mean: float
    std: float
    n: int

    def __str__(self) -> str:
        return f"{self.mean:.2f} ± {self.std:.2f}" if self.n > 1 else f"{self.mean:.2f}"


def summarize(values: Sequence[float]) -> Summary:
    values = np.asarray(values, np.float64)
    if values.size == 0:
        raise ValueError("no values to summarize")
    return Summary(float(values.mean()), float(values.std(ddof=1)) if values.size > 1 else 0.0, int(values.size))


@dataclasses.dataclass(frozen=True)
class Interval:
    """A mean difference and its two-sided confidence interval (None bounds with fewer than 2 pairs)."""

    mean: float
    low: float | None
    high: float | None
    n: int
    # (seed, difference) pairs it was computed from, where it is a per-seed gap (`seed_interval`)
    by_seed: tuple[tuple[int, float], ...] = dataclasses.field(default=(), compare=False, repr=False)

    @property
    def sign(self) -> int:
        """-1 if the interval lies below 0, +1 above, 0 if it contains 0 or is undefined."""
        if self.low is None:
            return 0
        return -1 if self.high < 0 else (1 if self.low > 0 else 0)

    def __str__(self) -> str:
        if self.low is None:
            return f"{self.mean:+.2f} (n = {self.n}, no interval)"
        return f"{self.mean:+.2f} [{self.low:+.2f}, {self.high:+.2f}] (n = {self.n})"


def paired_interval(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> Interval:
    """The mean of the paired differences a - b with its t-interval over the pairs."""
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    if d.size == 0:
        raise ValueError("no pairs")
    if d.size < 2:
        return Interval(float(d.mean()), None, None, 1)
    half = scipy.stats.t.ppf(0.5 + level / 2, d.size - 1) * d.std(ddof=1) / np.sqrt(d.size)
    return Interval(float(d.mean()), float(d.mean() - half), float(d.mean() + half), int(d.size))


def seed_interval(diffs: dict[int, float]) -> Interval:
    """The interval of per-seed differences (seed -> value) about 0, keeping them for `shrinkage`."""
    seeds = sorted(diffs)
    interval = paired_interval([diffs[s] for s in seeds], np.zeros(len(seeds)))
    return dataclasses.replace(interval, by_seed=tuple((s, float(diffs[s])) for s in seeds))


def shrinkage(gap: Interval, without: Interval) -> Interval | None:
    """How much smaller `gap` is with an effect taken out (`without`), paired by seed: the mean of
    sign(gap) * (gap - without) over the seeds both hold, positive when the gap moved toward 0 (or past it);
    None with fewer than 2 such seeds or a gap of no sign."""
    left = dict(without.by_seed)
    pairs = [(value, left[seed]) for seed, value in gap.by_seed if seed in left]
    if len(pairs) < 2 or gap.sign == 0:
        return None
    return paired_interval([gap.sign * g for g, _ in pairs], [gap.sign * w for _, w in pairs])


def distortion_at_rate(rates: Sequence[float], distortions: Sequence[float], rate: float) -> float | None:
    """A curve's distortion at `rate`, linear between its points (sorted by rate); None outside them."""
    order = np.argsort(rates)
    r, d = np.asarray(rates, np.float64)[order], np.asarray(distortions, np.float64)[order]
    if r.size < 2 or not r[0] <= rate <= r[-1]:
        return None
    return float(np.interp(rate, r, d))


# ----------------------------------------------------------------------------------------------- results


@dataclasses.dataclass
class Result:
    """One finished run: its place in the campaign and what it measured."""

    variant: str
    dataset: str
    beta: float
    seed: int
    test: dict
    extra: dict
    curve: list[tuple[float, float]]  # (epoch, test -ELBO) of every evaluation
    steps: int
    epochs: float
    network: str
    commit: str | None
    train: dict | None = None  # the training split's final terms (runs trained since they were recorded)
    diagnostics: dict = dataclasses.field(default_factory=dict)  # see echo_jax.diagnostics
    num_epochs: int = 0  # the schedule's length (its protocol)
    rate_floor: float | None = None  # Echo: D * -log c, from its config
    directory: str = ""
    environments: list = dataclasses.field(default_factory=list)  # what trained it (`identity.environment`)


def load_finished(runs: Sequence[campaign_lib.Run], done: dict[str, str]) -> list[Result]:
    """The results of the campaign's finished runs."""
    out = []
    for run in runs:
        if run.key not in done:
            continue
        directory = done[run.key]
        with open(os.path.join(directory, "results.json")) as f:
            results = json.load(f)
        row = results["results"][0]
        curve = []
        with open(os.path.join(directory, "metrics.jsonl")) as f:
            for line in f:
                record = json.loads(line)
                if record["split"] == "test":
                    curve.append((float(record["epoch"]), float(record["test"]["neg_elbo"])))
        extra = {k: v for k, v in row.items() if isinstance(v, dict) and k != "test"}
        out.append(
            Result(
                run.variant,
                row["dataset"],
                float(row["beta"]),
                int(row["seed"]),
                row["test"],
                extra.get(results["experiment"], {}),
                curve,
                int(row["steps"]),
                curve[-1][0] if curve else float("nan"),
                row["network"],
                results.get("run", {}).get("commit"),
                row.get("train"),
                row.get("diagnostics", {}),
                int(run.config.num_epochs),
                _rate_floor(run.config),
                directory,
                [e for e in results.get("run", {}).get("environments") or [] if e],
            )
        )
    return out


def _rate_floor(config) -> float | None:
    """Echo's least rate, D * -log c (c solved from the batch size unless the config sets it); None otherwise."""
    model = config.model
    if model.encoder != "echo":
        return None
    from echo_jax import noise

    clip = (
        model.echo_clip if model.echo_clip is not None else noise.echo_clip(config.batch_size - 1, model.echo_fx_bound)
    )
    return float(model.latent_dim * -np.log(clip))


def trained_dirty(directory: str) -> bool:
    """Whether a finished run was trained, in part, from a work tree with uncommitted changes."""
    with open(os.path.join(directory, "results.json")) as f:
        run = json.load(f).get("run", {})
    return any(c and c.endswith("+dirty") for c in run.get("commits") or [run.get("commit")])


def dirty_note(dirty: Sequence[Result]) -> str:
    """The report's line on the runs trained from uncommitted changes, grouped by variant, dataset and beta."""
    seeds: dict[tuple, list[int]] = defaultdict(list)
    for r in dirty:
        seeds[(r.variant, r.dataset, r.beta)].append(r.seed)
    groups = "; ".join(f"{v} {d} beta {b:g} seed(s) {','.join(map(str, sorted(s)))}" for (v, d, b), s in seeds.items())
    kept = sum(bool(glob.glob(os.path.join(r.directory, "code-*.diff"))) for r in dirty)
    return (
        f"**Uncommitted changes.** {len(dirty)} run(s) were trained from a work tree with uncommitted changes "
        f"(`+dirty` above), so their commit alone does not say what code trained them: {groups}. "
        f"{kept} of them keep the diff beside their results (code-*.diff)."
    )


def _index(results: Sequence[Result]) -> dict[tuple, dict[int, Result]]:
    """(dataset, variant, beta) -> seed -> result."""
    index: dict[tuple, dict[int, Result]] = defaultdict(dict)
    for r in results:
        index[(r.dataset, r.variant, r.beta)][r.seed] = r
    return index


def budget(results: Sequence[Result]) -> str:
    """The training budget of some results, e.g. "mlp network, 100 epochs, seeds 0,1,2"."""
    if not results:
        return "no runs"
    networks = sorted({r.network for r in results})
    epochs = sorted({round(r.epochs, 2) for r in results})
    seeds = sorted({r.seed for r in results})
    return (
        f"{'/'.join(networks)} network, {'/'.join(f'{e:g}' for e in epochs)} epochs "
        f"({'/'.join(str(s) for s in sorted({r.steps for r in results}))} steps), "
        f"seeds {','.join(map(str, seeds))}"
    )


# ----------------------------------------------------------------------------------------------- claims


@dataclasses.dataclass(frozen=True)
class Verdict:
    claim: str
    status: str  # "supported" | "not supported" | "not yet measured"
    evidence: str


def lagrangian(r: Result) -> float:
    """The run's test distortion + beta * rate: the objective it minimised."""
    return r.test["distortion"] + r.beta * r.test["rate"]


def paired_by_seed(
    a: dict[int, Result], b: dict[int, Result], metric, metric_b=None
) -> tuple[list[float], list[float]]:
    """`metric` of the seeds `a` and `b` share (`metric_b` on `b`'s side, where given)."""
    seeds = sorted(set(a) & set(b))
    return [metric(a[s]) for s in seeds], [(metric_b or metric)(b[s]) for s in seeds]


def rate_distortion_gaps(
    index, dataset: str, echo: str = "echo", other: str = "vae", split: str = "test"
) -> dict[float, Interval]:
    """Per echo beta: Echo's distortion minus the other method's at Echo's rate, paired by seed.

    The other method's curve of a seed is its (rate, distortion) points over the betas trained on that
    seed, linear between points; an Echo point outside that curve's rate range is not compared. `split`
    ("test" or "train") names the terms compared; runs that did not record that split are left out.
    """
    terms = lambda r: getattr(r, split)
    echo_betas = sorted(b for (d, v, b) in index if d == dataset and v == echo)
    other_betas = sorted(b for (d, v, b) in index if d == dataset and v == other)
    gaps = {}
    for beta in echo_betas:
        diffs = {}
        for seed, e in index[(dataset, echo, beta)].items():
            curve = [index[(dataset, other, b)].get(seed) for b in other_betas]
            curve = [c for c in curve if c is not None and terms(c)]
            if not terms(e):
                continue
            at = distortion_at_rate(
                [terms(c)["rate"] for c in curve], [terms(c)["distortion"] for c in curve], terms(e)["rate"]
            )
            if at is not None:
                diffs[seed] = terms(e)["distortion"] - at
        if diffs:
            gaps[beta] = seed_interval(diffs)
    return gaps


def dominance_verdict(
    index, dataset: str, results: Sequence[Result], pending: int = 0, longer: dict | None = None
) -> Verdict:
    """ "Echo dominates beta-VAE across the rate-distortion range" on one dataset.

    Args:
      index: `_index` of the finished results.
      dataset: the dataset.
      results: the finished results.
      pending: the campaign's Echo and VAE runs on this dataset not finished yet: the range the claim is
        about is then not covered, and the verdict waits (the partial evidence is shown).
      longer: `_index` of runs trained for a longer schedule (groups E2, E7, E8), which say whether the standard one
        had converged.
    """
    claim = f"Echo dominates the beta-VAE across the rate-distortion range ({dataset})"
    gaps = rate_distortion_gaps(index, dataset)
    if not gaps or all(g.n < 2 for g in gaps.values()):
        return Verdict(claim, "not yet measured", "needs Echo and VAE curves (>= 2 betas) on >= 2 seeds")
    used = [r for r in results if r.dataset == dataset and r.variant in ("echo", "vae")]
    lines = "; ".join(f"beta {b:g}: {g}" for b, g in sorted(gaps.items()))
    evidence = f"Echo's distortion minus the VAE's at Echo's rate, nats, mean [95% CI]: {lines}. Budget: {budget(used)}"
    evidence += explanations(index, dataset, longer)
    if pending:
        return Verdict(claim, "not yet measured", f"{pending} Echo/VAE runs of the range pending; so far: {evidence}")
    if all(g.sign < 0 for g in gaps.values()):
        return Verdict(claim, "supported", evidence)
    worse = [b for b, g in gaps.items() if g.sign > 0]
    why = (
        f"Echo is worse at beta {', '.join(f'{b:g}' for b in worse)}"
        if worse
        else "at some betas the interval contains 0 (inconclusive there)"
    )
    return Verdict(claim, "not supported", f"{why}. {evidence}")


def flow_verdict(index, results: Sequence[Result], dataset: str = "binary_mnist") -> Verdict:
    """ "Echo can outperform flow-based methods": Echo's -ELBO at beta = 1 below every flow method's. One flow
    method measurably below Echo decides the claim before the others have finished."""
    claim = f"Echo outperforms the flow methods (IAF posteriors, MAF marginal) in -ELBO at beta = 1 ({dataset})"
    echo = index.get((dataset, "echo", 1.0), {})
    compared = {}
    for variant in FLOW_VARIANTS:
        a, b = paired_by_seed(echo, index.get((dataset, variant, 1.0), {}), lambda r: r.test["neg_elbo"])
        if len(a) >= 2:
            compared[variant] = paired_interval(a, b)
    missing = [v for v in FLOW_VARIANTS if v not in compared]
    if not compared:
        return Verdict(claim, "not yet measured", "needs Echo and the flow methods at beta = 1 on >= 2 seeds")
    used = [r for r in results if r.dataset == dataset and r.beta == 1.0 and r.variant in ("echo", *compared)]
    evidence = (
        "Echo -ELBO minus the method's, nats, mean [95% CI]: "
        + "; ".join(f"{v}: {g}" for v, g in compared.items())
        + f". Budget: {budget(used)}"
    )
    beaten_by = [v for v, g in compared.items() if g.sign > 0]
    if beaten_by:
        waiting = f" ({', '.join(missing)} not finished yet)" if missing else ""
        return Verdict(claim, "not supported", f"Echo is worse than {', '.join(beaten_by)}{waiting}. {evidence}")
    if missing:
        return Verdict(claim, "not yet measured", f"{', '.join(missing)} not finished yet. {evidence}")
    if all(g.sign < 0 for g in compared.values()):
        return Verdict(claim, "supported", evidence)
    return Verdict(claim, "not supported", evidence)


def disentanglement_verdicts(index, results: Sequence[Result]) -> list[Verdict]:
    """Echo against the VAE (MIG, FactorVAE score) and the TC penalty's effect, on both dSprites sets."""
    out = []
    for dataset in DSPRITES:
        for other, claim in (
            ("vae", f"Echo disentangles at least as well as the VAE at beta = 1 ({dataset})"),
            ("echo_tc10", f"A TC penalty improves Echo's disentanglement ({dataset})"),
        ):
            first, second = ("echo", other) if other == "vae" else (other, "echo")
            metrics = {}
            for metric in ("mig", "factor_vae"):
                a, b = paired_by_seed(
                    index.get((dataset, first, 1.0), {}),
                    index.get((dataset, second, 1.0), {}),
                    lambda r, m=metric: r.extra[m],
                )
                if len(a) >= 2:
                    metrics[metric] = paired_interval(a, b)
            if len(metrics) < 2:
                out.append(Verdict(claim, "not yet measured", f"needs {first} and {second} on >= 2 seeds"))
                continue
            used = [r for r in results if r.dataset == dataset and r.variant in (first, second)]
            evidence = (
                f"{first} minus {second}: "
                + "; ".join(f"{m}: {g}" for m, g in metrics.items())
                + f". Budget: {budget(used)}"
            )
            if other == "vae":  # "at least as well": no metric significantly worse
                status = "supported" if all(g.sign >= 0 for g in metrics.values()) else "not supported"
            else:
                status = (
                    "supported"
                    if any(g.sign > 0 for g in metrics.values()) and all(g.sign >= 0 for g in metrics.values())
                    else "not supported"
                )
            out.append(Verdict(claim, status, evidence))
    return out


# ----------------------------------------------------------------------------------------------- figures


def plot_rate_distortion(index, dataset: str, path: str, *, split: str = "test", extra=None) -> None:
    """Rate against distortion per method: seed means with one-standard-deviation bars, -ELBO iso-lines.

    Args:
      split: "test", or "train" (the runs that recorded the training split's terms).
      extra: ``extra(ax)`` draws more on the axes.
    """
    variants = sorted({v for (d, v, _) in index if d == dataset})
    terms = lambda r: r.test if split == "test" else r.train
    if split != "test":
        index = {k: {s: r for s, r in by.items() if r.train} for k, by in index.items()}
        index = {k: by for k, by in index.items() if by}
    with figure(path) as ax:
        rates, sums = [], []
        for variant in variants:
            betas = sorted(b for (d, v, b) in index if d == dataset and v == variant)
            if len(betas) < 2:
                continue
            points = [
                (
                    summarize([terms(r)["rate"] for r in index[(dataset, variant, b)].values()]),
                    summarize([terms(r)["distortion"] for r in index[(dataset, variant, b)].values()]),
                )
                for b in betas
            ]
            x = [p[0].mean for p in points]
            y = [p[1].mean for p in points]
            counts = sorted({p[0].n for p in points})
            seeds = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
            ax.errorbar(
                x,
                y,
                xerr=[p[0].std for p in points],
                yerr=[p[1].std for p in points],
                fmt="o-",
                capsize=2,
                label=f"{variant} (n = {seeds} seeds; bars: 1 sd)",
            )
            for b, xi, yi in zip(betas, x, y):
                ax.annotate(f"{b:g}", (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7)
            rates += x
            sums += [a + b for a, b in zip(x, y)]
        if rates:
            xs = np.linspace(0, max(rates) * 1.15, 50)
            for level in np.linspace(min(sums), max(sums), 4):
                ax.plot(xs, level - xs, color="0.85", lw=0.8, zorder=0)
            ax.set_xlim(0, max(rates) * 1.15)
        if extra is not None:
            extra(ax)
        ax.set_xlabel("rate (nats): exact I(X;Z) for echo, the KL bound for the VAE")
        ax.set_ylabel("distortion (nats)")
        ax.set_title(f"{dataset}: {split} rate-distortion (labels: beta)")


def plot_learning_curves(index, dataset: str, path: str, beta: float = 1.0) -> None:
    """Test -ELBO against epoch at one beta: seed mean and its min-max band, per method."""
    with figure(path) as ax:
        for variant in ("echo", "vae"):
            runs = list(index.get((dataset, variant, beta), {}).values())
            if not runs:
                continue
            epochs = sorted(set.intersection(*[{e for e, _ in r.curve} for r in runs]))
            values = np.array([[dict(r.curve)[e] for e in epochs] for r in runs])
            ax.plot(epochs, values.mean(0), "o-", ms=3, label=f"{variant} (n = {len(runs)} seeds)")
            ax.fill_between(epochs, values.min(0), values.max(0), alpha=0.25)
        ax.set_xlabel("epoch")
        ax.set_ylabel("test -ELBO (nats)")
        ax.set_title(f"{dataset}, beta = {beta:g}: test -ELBO (band: min-max over seeds)", fontsize=10)


# ----------------------------------------------------------------------------------------------- why

MI_ESTIMATES = (("upper_bound", "KL rate minus a lower bound on KL(q(z) || p(z))"), ("heldout", "held-out mixture"))


def usable_mi(diagnostics: dict, estimate: str) -> float | None:
    """A recorded I(X;Z) estimate, or None where it cannot be right: the KL rate bounds I(X;Z) from above, so a
    held-out estimate above it shows the estimator's upward bias (too few reference encodings for the
    dimension of the code), not information."""
    mi = diagnostics.get("mutual_information")
    if mi is None or (estimate == "heldout" and mi["heldout"] > mi["kl_rate"]):
        return None
    return mi[estimate]


def explanations(index, dataset: str, longer: dict | None = None) -> str:
    """What a dominance verdict rests on, as sentences: per beta whose gap excludes 0, which measured effect
    explains it (`attribution`; the evidence is in the dataset's table), the Lagrangian comparison, and test
    -ELBO curves that still fall at the end (not converged) or rise after their best epoch (overfitting)."""
    out = []
    effects = attribution(index, dataset, longer)
    gaps = rate_distortion_gaps(index, dataset)
    for b, found in effects.items():
        side = "worse" if gaps[b].sign > 0 else "better"
        named = {w: [e.name for e in found if e.word == w] for w in ("yes", "partly", "no", "undecided")}
        explained, partly, ruled_out, undecided = named.values()
        said = []
        if explained:
            said.append(f"explained by {' and '.join(explained)}")
        if partly:
            said.append(f"partly explained by {' and '.join(partly)}")
        if ruled_out and not (explained or partly):
            said.append("no decided effect explains it")
        if ruled_out:
            said.append(f"ruled out: {', '.join(ruled_out)}")
        if undecided:
            said.append(f"undecided: {', '.join(undecided)}")
        out.append(f"Echo {side} at beta {b:g} - {'; '.join(said)}")
    sides = [(-1, "lower"), (1, "higher"), (0, "level within its interval")]
    for estimate, against in ((None, ""), ("upper_bound", " (against the VAE at its I(X;Z) upper bound)")):
        lagrangians = lagrangian_gaps(index, dataset, estimate)
        said = [(word, [f"{b:g}" for b, g in lagrangians.items() if g.sign == sign]) for sign, word in sides]
        said = [f"{word} at beta {', '.join(betas)}" for word, betas in said if betas]
        if said:
            out.append(f"at equal beta, Echo's Lagrangian distortion + beta * rate{against} is {'; '.join(said)}")
    falling, rising = [], []
    for v in ("echo", "vae"):
        ends = {b: curve_end(by) for (d, w, b), by in sorted(index.items()) if d == dataset and w == v}
        down = [f"{b:g} ({e.still_falling:.2f})" for b, e in ends.items() if e and e.still_falling]
        up = [
            f"{b:g} ({e.above_best:.2f}, best at epoch {e.best_epoch:g})" for b, e in ends.items() if e and e.above_best
        ]
        falling += [f"{v} at beta {', '.join(down)}"] * bool(down)
        rising += [f"{v} at beta {', '.join(up)}"] * bool(up)
    if falling:
        out.append(f"test -ELBO still falling at the end (nats over the last interval): {'; '.join(falling)}")
    if rising:
        out.append(f"overfitting (test -ELBO ends above its best by): {'; '.join(rising)}")
    return (". Measured effects: " + "; ".join(out) + ".") if out else ""


@dataclasses.dataclass(frozen=True)
class CurveEnd:
    """How a (method, beta)'s seed-mean test -ELBO curve ends: `still_falling` nats over its last evaluation
    interval when it falls by more than 0.2 there, or `above_best` nats above its minimum (at `best_epoch`) when
    it ends more than 0.5 above it; both 0 when neither holds."""

    still_falling: float
    above_best: float
    best_epoch: float


def curve_end(by_seed: dict[int, Result]) -> CurveEnd | None:
    """`CurveEnd` of the seed mean over the epochs every seed evaluated; None without 3 evaluations."""
    curves = [dict(r.curve) for r in by_seed.values() if len(r.curve) >= 3]
    if not curves:
        return None
    epochs = sorted(set.intersection(*[set(c) for c in curves]))
    if len(epochs) < 3:
        return None
    mean = np.mean([[c[e] for e in epochs] for c in curves], axis=0)
    above, drop = float(mean[-1] - mean.min()), float(mean[-2] - mean[-1])
    best = float(epochs[int(np.argmin(mean))])
    return CurveEnd(drop if above <= 0.5 and drop > 0.2 else 0.0, above if above > 0.5 else 0.0, best)


@dataclasses.dataclass(frozen=True)
class Effect:
    """A candidate cause of a gap on the verdict's axis and what its measurement says.

    `explains` is True when the gap with the effect taken out has no interval of the gap's sign (it vanishes or
    turns), False when it keeps one, None when the runs cannot decide (one seed, or not measured). `partly` is,
    where a gap is left (False), how much smaller it is (`shrinkage`) when that interval lies above 0: the effect
    accounts for part of the gap, not all of it."""

    name: str
    explains: bool | None
    evidence: str
    partly: Interval | None = None

    @property
    def word(self) -> str:
        """yes, partly, no or undecided."""
        return "partly" if self.partly else {True: "yes", False: "no", None: "undecided"}[self.explains]


def _effect(name: str, gap: Interval, without: Interval, evidence: str, explains: bool | None) -> Effect:
    """An `Effect` whose removal leaves `without` of `gap`; where a gap is left, whether it measurably shrank."""
    shrank = shrinkage(gap, without) if explains is False else None
    if shrank is None or shrank.sign <= 0:
        return Effect(name, explains, evidence)
    return Effect(name, False, f"{evidence}; taken out, the gap is smaller by {shrank} (paired by seed)", shrank)


def _decides(gap: Interval, without: Interval | None) -> bool | None:
    """Whether `gap` is explained by an effect whose removal leaves `without`: no when a gap of the same sign is
    left; yes when none is left and `without`'s interval excludes `gap`'s mean, so that the removal measurably
    shrank it; undecided when `without` has no interval or one too wide to tell the two apart (absence of a gap
    is not shown by an interval that also holds the gap itself)."""
    if without is None or without.low is None:
        return None
    if without.sign == gap.sign:
        return False
    return None if without.low <= gap.mean <= without.high else True


def _too_wide(gap: Interval, without: Interval | None) -> str:
    """The evidence's note when `_decides` is undecided because `without` also holds `gap`'s mean."""
    if without is None or without.low is None or without.sign == gap.sign or _decides(gap, without) is not None:
        return ""
    return f" (too wide to decide: its interval holds the gap's own mean, {gap.mean:+.2f})"


def split_axis_gaps(index, dataset: str) -> dict[float, tuple[Interval, Interval]]:
    """Per Echo beta: the verdict's gap on the test and on the training split, both from the runs that recorded
    their training split and on the same (possibly cut-down) VAE curves, so that the two differ by the split
    alone."""
    trained = {k: {s: r for s, r in by.items() if r.train} for k, by in index.items() if k[0] == dataset}
    test, train = (rate_distortion_gaps(trained, dataset, split=split) for split in ("test", "train"))
    return {b: (test[b], train[b]) for b in sorted(test) if b in train}


def attribution(index, dataset: str, longer: dict | None = None) -> dict[float, list[Effect]]:
    """Per beta where the verdict's gap (Echo's distortion minus the VAE's at Echo's rate) excludes 0: the
    measured effects that could cause it and whether each does (`_decides`: yes only when, the effect taken out,
    no gap of that sign is left and the interval left excludes the gap's own mean).

    - generalisation: the same gap on the training split (same runs). If the training split has no gap of
      that sign, the test gap is a difference in how the models generalise, not in how well they fit.
    - the VAE's rate bound: its KL rate is I(X;Z) + KL(q(z) || p(z)) >= I(X;Z), so the KL axis draws the VAE to
      the right of its information and flatters Echo; it cannot explain an Echo loss. An Echo advantage is
      re-measured on the VAE's curve at its I(X;Z) upper bound: the least correction, so a gap that survives it
      is not ruled out (the full correction is not measured).
    - budget: the gap at the standard and at the longer schedule, both on the VAE's curve through the betas
      trained longer (`longer_axis_gaps`); not measured where the beta was not trained longer.
    - floor (Echo worse only): the share of Echo's rate that its clip forces, D (-log c), and the gap at the same
      rate with both methods trained at batch `FLOOR_BATCH` (`floor_matched_gaps`), whose clip leaves Echo a lower
      floor; the VAE shares the batch, so what the batch does to both is matched. Undecided where the lowered
      curves do not reach that rate. The same beta's gap at batch `FLOOR_BATCH` (`floor_axis_gaps`, at a lower
      rate) is evidence only. The test assumes the batch does to both methods alike, save Echo's floor; where
      `floor_batch_costs` shows it costs Echo more, the gap left holds that cost too, and a "no" is undecided.
      Where both methods were also trained at batch `FLOOR_BATCH` with as many updates as the standard batch
      (group E5, in `longer`), the same-rate gap on those curves decides instead: it holds the update count too,
      and a "no" there is undecided only if the batch still costs Echo more with as many updates.
    """
    gaps = rate_distortion_gaps(index, dataset)
    lowered, matched = floor_axis_gaps(index, dataset), floor_matched_gaps(index, dataset)
    low_floor = next(
        (
            r.rate_floor
            for (d, v, _), by in index.items()
            if d == dataset and v == FLOOR_VARIANTS[0]
            for r in by.values()
        ),
        None,
    )
    batch_costs = floor_batch_costs(index, dataset)
    longer = longer or {}
    update_costs = floor_batch_costs(index, dataset, longer)
    matched_long = floor_matched_gaps(index, dataset, longer)
    splits = split_axis_gaps(index, dataset)
    bound = mi_axis_gaps(index, dataset, "upper_bound")
    budget_gaps = longer_axis_gaps(index, longer, dataset) if longer else {}
    out = {}
    for b, gap in gaps.items():
        if gap.sign == 0:
            continue
        effects = []
        if b in splits:
            test, train = splits[b]
            decided = test.sign == gap.sign or test.low is None
            explains = _decides(test, train) if decided else None
            text = f"on the training split {train}, on the test split {test}" + (
                _too_wide(test, train) if decided else ""
            )
            effects.append(_effect("generalisation", test, train, text, explains))
        else:
            effects.append(Effect("generalisation", None, "not measured (no training split recorded)"))
        if gap.sign > 0:
            effects.append(Effect("rate bound", False, "the VAE at its I(X;Z) has a lower rate: it is better still"))
        elif b in bound:
            effects.append(
                Effect(
                    "rate bound",
                    True if _decides(gap, bound[b]) else None,
                    f"on the VAE's I(X;Z) upper bound axis {bound[b]}{_too_wide(gap, bound[b])}; the full correction "
                    "is not measured",
                )
            )
        else:
            effects.append(Effect("rate bound", None, "not measured (no VAE I(X;Z) bound recorded)"))
        short, long = budget_gaps.get(b, (None, None))
        if short is not None and long is not None:
            epochs = next(iter(longer[(dataset, "echo", b)].values())).num_epochs
            decided = short.sign == gap.sign
            explains = _decides(short, long) if decided else None
            text = f"{short} at the standard schedule, {long} at {epochs} epochs" + (
                _too_wide(short, long) if decided else ""
            )
            effects.append(_effect("budget", short, long, text, explains))
        else:
            ends = [(v, curve_end(index.get((dataset, v, b), {}))) for v in ("echo", "vae")]
            falling = [f"{v} {e.still_falling:.2f}" for v, e in ends if e and e.still_falling]
            why = f"; still falling at the end (nats over the last interval): {', '.join(falling)}" if falling else ""
            effects.append(Effect("budget", None, f"not measured (not trained longer){why}"))
        if gap.sign > 0:
            measured = _floor_measures(index[(dataset, "echo", b)])
            if measured:
                floor, share, at = measured
                text = f"D(-log c) = {floor:.2f} nats is {share}% of Echo's rate"
                if at:
                    text += f", {summarize(at)} dimensions at it"
                vae_rates = [r.test["rate"] for r in index.get((dataset, "vae", b), {}).values()]
                if vae_rates and max(vae_rates) < floor:
                    text += f"; the VAE at beta {b:g} spends {summarize(vae_rates)} nats, below it"
                explains = None
                if b in matched:
                    text += f"; with the floor at {low_floor:.2f} nats (batch {FLOOR_BATCH}, both methods) the gap at "
                    text += f"the same rate is {matched[b]}{_too_wide(gap, matched[b])}"
                    explains = _decides(gap, matched[b])
                elif low_floor is not None:
                    rate = summarize([r.test["rate"] for r in index[(dataset, "echo", b)].values()])
                    text += f"; with the floor at {low_floor:.2f} nats (batch {FLOOR_BATCH}) not measured at the same "
                    text += (
                        f"rate: no seed's rate (Echo's {rate} nats) lies inside both lowered curves "
                        f"({_floor_curve_span(index, dataset)})"
                    )
                else:
                    text += f" (not tested: no Echo and VAE pair at batch {FLOOR_BATCH})"
                if b in lowered:
                    text += f"; at the same beta (a lower rate) the gap is {lowered[b]}"
                effect = (
                    _effect("floor", gap, matched[b], text, explains) if b in matched else Effect("floor", None, text)
                )
                cost = batch_costs.get(b)
                if cost is not None and cost.sign > 0:
                    # The gap left with the floor lowered then holds that cost too: it can show the floor explains
                    # part or all of the gap, never that it explains none of it.
                    effect = dataclasses.replace(
                        effect,
                        explains=None if effect.word == "no" else effect.explains,
                        evidence=f"{effect.evidence}; but batch {FLOOR_BATCH} also costs Echo's distortion + beta * "
                        f"rate {cost} more than the VAE's at beta {b:g}, which a lower floor alone cannot (it only "
                        "widens the scales Echo may choose), so the gap left overstates what is not the floor's",
                    )
                elif cost is not None:
                    effect = dataclasses.replace(
                        effect,
                        evidence=f"{effect.evidence}; batch {FLOOR_BATCH} changes Echo's distortion + beta * rate by "
                        f"{cost} beyond the VAE's at beta {b:g} (no cost of the batch to Echo beyond its floor shown)",
                    )
                cost = update_costs.get(b)
                if cost is not None:
                    epochs = next(iter(longer[(dataset, FLOOR_VARIANTS[0], b)].values())).num_epochs
                    effect = dataclasses.replace(
                        effect,
                        evidence=f"{effect.evidence}; trained {epochs} epochs at batch {FLOOR_BATCH} (more updates), "
                        f"the difference is {cost}",
                    )
                if b in matched_long:
                    # Both methods at the lowered floor with as many updates as the standard batch: this test holds
                    # the update count too, so it decides in place of the one above.
                    left = matched_long[b]
                    text = (
                        f"{effect.evidence}; with as many updates ({_floor_epochs(longer, dataset)} epochs "
                        f"at batch {FLOOR_BATCH}, both methods) the gap at the same rate is {left}"
                        f"{_too_wide(gap, left)}"
                        + (
                            ", which decides once it has an interval"
                            if left.low is None
                            else ", which decides"
                            if _decides(gap, left) is not None
                            else ""
                        )
                    )
                    effect = _effect("floor", gap, left, text, _decides(gap, left))
                    if cost is not None and cost.sign > 0 and effect.word == "no":
                        effect = dataclasses.replace(
                            effect,
                            explains=None,
                            evidence=f"{effect.evidence}; but the batch still costs Echo more than the VAE with as "
                            "many updates, so the gap left overstates what is not the floor's",
                        )
                effects.append(effect)
        out[b] = effects
    return out


def floor_axis_gaps(index, dataset: str) -> dict[float, Interval]:
    """Per beta of the floor groups (E3-E6): the verdict's gap (Echo's distortion minus the VAE's at Echo's rate,
    paired by seed) with both methods trained at batch `FLOOR_BATCH`, where Echo's clip leaves a lower rate floor,
    on that VAE's curve. Its betas are spaced as the standard curve's (factors of 2), so the chords are alike."""
    return rate_distortion_gaps(index, dataset, echo=FLOOR_VARIANTS[0], other=FLOOR_VARIANTS[1])


def floor_batch_costs(index, dataset: str, lowered: dict | None = None) -> dict[float, Interval]:
    """Per beta at which both methods were trained at both batches: what batch `FLOOR_BATCH` does to Echo's
    Lagrangian distortion + beta * rate beyond what it does to the VAE's, paired by seed: (Echo at
    `FLOOR_BATCH` - Echo at the standard batch) - (the same for the VAE).

    The floor test (`floor_matched_gaps`) assumes the batch does to both alike, save Echo's floor. A lower
    floor alone only widens the noise scales Echo may choose, so it cannot raise Echo's best Lagrangian: a
    difference above 0 is a cost of the batch to Echo beyond its floor (fewer updates, noise drawn from more
    encodings), which the lowered-floor gap then holds too. `lowered` (default `index`) holds the batch-
    `FLOOR_BATCH` runs: the longer runs (group E5) ask whether the cost is the batch's fewer updates."""
    lowered = index if lowered is None else lowered
    costs = {}
    for (d, v, beta), echo in sorted(index.items()):
        if d != dataset or v != "echo":
            continue
        cells = [index.get((dataset, "vae", beta), {})]
        cells += [lowered.get((dataset, variant, beta), {}) for variant in FLOOR_VARIANTS]
        seeds = sorted(set(echo).intersection(*cells))
        if seeds:
            vae, echo_low, vae_low = cells
            diffs = {
                s: (lagrangian(echo_low[s]) - lagrangian(echo[s])) - (lagrangian(vae_low[s]) - lagrangian(vae[s]))
                for s in seeds
            }
            costs[beta] = seed_interval(diffs)
    return costs


def _seed_curve(index, dataset: str, variant: str, seed: int) -> tuple[list[float], list[float]]:
    """A seed's test (rates, distortions) over the betas `variant` was trained at on `dataset`."""
    runs = [by[seed] for (d, v, _), by in sorted(index.items()) if d == dataset and v == variant and seed in by]
    return [r.test["rate"] for r in runs], [r.test["distortion"] for r in runs]


def floor_matched_gaps(index, dataset: str, lowered: dict | None = None) -> dict[float, Interval]:
    """Per Echo beta: the gap with the floor lowered, at the rate the gap was measured at. For each seed, both
    batch-`FLOOR_BATCH` curves (Echo's and the VAE's, linear between their betas) are read at the rate Echo
    reached at this beta with its standard floor; a seed whose rate lies outside the lowered Echo curve is left
    out. The same beta lands at a lower rate once the floor is lowered (`floor_axis_gaps` compares there), and
    the gap changes with the rate, so only this comparison takes the floor out and nothing else. Both curves
    are chords over betas a factor of 2 apart, so their interpolation biases are alike. `lowered` (default
    `index`) holds the batch-`FLOOR_BATCH` curves: the longer runs (group E5) read them with as many updates."""
    lowered = index if lowered is None else lowered
    gaps = {}
    for (d, v, beta), by_seed in sorted(index.items()):
        if d != dataset or v != "echo":
            continue
        diffs = {}
        for seed, e in by_seed.items():
            at = [
                distortion_at_rate(*_seed_curve(lowered, dataset, variant, seed), e.test["rate"])
                for variant in FLOOR_VARIANTS
            ]
            if None not in at:
                diffs[seed] = at[0] - at[1]
        if diffs:
            gaps[beta] = seed_interval(diffs)
    return gaps


def _floor_epochs(runs: dict, dataset: str) -> str:
    """The schedule(s) of the batch-`FLOOR_BATCH` runs in `runs`, as epochs."""
    epochs = {
        r.num_epochs for (d, v, _), by in runs.items() if d == dataset and v in FLOOR_VARIANTS for r in by.values()
    }
    return "/".join(str(e) for e in sorted(epochs))


def _floor_curve_span(index, dataset: str) -> str:
    """The rates both lowered curves span, over their seeds' means (for the evidence of an unmeasured cell)."""
    spans = []
    for variant in FLOOR_VARIANTS:
        points = sorted(
            (float(np.mean([r.test["rate"] for r in by.values()])), b)
            for (d, v, b), by in index.items()
            if d == dataset and v == variant
        )
        if len(points) < 2:
            spans.append(f"{variant} has fewer than two betas")
        else:
            spans.append(
                f"{variant}'s curve spans {points[0][0]:.2f} (beta {points[0][1]:g}) to {points[-1][0]:.2f} "
                f"(beta {points[-1][1]:g}) nats"
            )
    return "; ".join(spans)


def _attribution_table(index, dataset: str, longer: dict | None) -> list[str]:
    effects = attribution(index, dataset, longer)
    if not effects:
        return []
    gaps = rate_distortion_gaps(index, dataset)
    lines = [
        "**What explains each gap** on the verdict's axis (Echo's distortion minus the VAE's at Echo's rate, nats, "
        "mean [95% CI], paired by seed), per beta where it excludes 0. An effect explains the gap when, taken out, "
        "no gap of that sign is left and the interval left excludes the gap's own mean (taking it out measurably "
        "shrank the gap); it partly explains the gap when a gap of that sign is left but, paired by seed, measurably "
        "smaller: the training split for generalisation, the VAE's curve at its I(X;Z) bound for "
        "the rate bound (which can only flatter Echo), the longer schedule on the same VAE betas for the budget, "
        f"both methods at batch {FLOOR_BATCH} (Echo's floor lowered), read at the same rate, for the floor (which "
        "assumes the batch does to both alike: where it costs Echo's distortion + beta * rate more than the VAE's at "
        "the same beta, the floor can be shown to explain a gap, never to leave it). "
        "Undecided: one seed, an interval too wide to tell, not measured, or not testable with these runs.",
        "",
        "| beta | gap | effect | explains it | evidence |",
        "|---|---|---|---|---|",
    ]
    for b, found in effects.items():
        for e in found:
            lines.append(f"| {b:g} | {gaps[b]} | {e.name} | {e.word} | {e.evidence} |")
    return lines + [""]


def longer_axis_gaps(standard, longer, dataset: str) -> dict[float, tuple[Interval | None, Interval | None]]:
    """Per beta trained longer: Echo's distortion minus the VAE's at Echo's rate (the verdict's axis) at the
    standard and at the longer schedule, both on a VAE curve through the betas trained longer only.

    The longer runs' VAE curve has only those points, and a chord over fewer points of a convex curve lies
    higher (favouring Echo), so the standard schedule's curve is cut down alike: the two stay comparable.
    """
    betas = {b for (d, v, b) in longer if d == dataset and v in ("echo", "vae")}  # not E5's batch-400 runs
    at = [
        rate_distortion_gaps({k: by for k, by in source.items() if k[0] == dataset and k[2] in betas}, dataset)
        for source in (standard, longer)
    ]
    return {b: (at[0].get(b), at[1].get(b)) for b in sorted(betas) if at[0].get(b) or at[1].get(b)}


def lagrangian_gaps(index, dataset: str, estimate: str | None = None) -> dict[float, Interval]:
    """Per beta: Echo's distortion + beta * rate minus the VAE's at the same beta, paired by seed (each
    minimises its own Lagrangian; a lower value at the same beta is a better trade-off at that slope).

    With `estimate` (one of `MI_ESTIMATES`), the VAE's rate is that estimate of its I(X;Z) instead of its KL
    rate, over the VAE runs that recorded it. On the upper bound a gap above 0 is conclusive: the VAE's true
    distortion + beta * I(X;Z) is lower still."""

    def vae_lagrangian(r: Result) -> float:
        return r.test["distortion"] + r.beta * usable_mi(r.diagnostics, estimate)

    out = {}
    for (d, v, beta), echo in index.items():
        if d != dataset or v != "echo" or (d, "vae", beta) not in index:
            continue
        vae = index[(d, "vae", beta)]
        if estimate is not None:
            vae = {s: r for s, r in vae.items() if usable_mi(r.diagnostics, estimate) is not None}
        a, b = paired_by_seed(echo, vae, lagrangian, vae_lagrangian if estimate else None)
        if a:
            out[beta] = paired_interval(a, b)
    return dict(sorted(out.items()))


def mi_axis_gaps(index, dataset: str, estimate: str) -> dict[float, Interval]:
    """`rate_distortion_gaps` with the VAE's curve drawn at an estimate of its I(X;Z) instead of its KL rate:
    per Echo beta, Echo's distortion minus the VAE's at Echo's (exact) rate, for the seeds whose VAE runs
    recorded the estimate at two adjacent betas or more.

    A VAE run of the seed without the estimate breaks its curve, and the gap is not bridged: the curve is
    convex, so a straight line across a missing beta (say from beta 1 to beta 8) would overstate the VAE's
    distortion between them and flatter Echo."""
    vae_betas = sorted(b for (d, v, b) in index if d == dataset and v == "vae")
    gaps = {}
    for (d, v, beta), echo in sorted(index.items()):
        if d != dataset or v != "echo":
            continue
        diffs = {}
        for seed, e in echo.items():
            runs = [index[(d, "vae", b)].get(seed) for b in vae_betas]
            runs = [r for r in runs if r is not None]  # the seed's curve, a point per beta it was trained at
            at = None
            for piece in _pieces_with(runs, lambda r: usable_mi(r.diagnostics, estimate) is not None):
                at = at or distortion_at_rate(
                    [usable_mi(r.diagnostics, estimate) for r in piece],
                    [r.test["distortion"] for r in piece],
                    e.test["rate"],
                )
            if at is not None:
                diffs[seed] = e.test["distortion"] - at
        if diffs:
            gaps[beta] = seed_interval(diffs)
    return gaps


def _pieces_with(items: Sequence, keep) -> list[list]:
    """The maximal runs of consecutive `items` for which `keep` holds."""
    pieces: list[list] = [[]]
    for item in items:
        if keep(item):
            pieces[-1].append(item)
        elif pieces[-1]:
            pieces.append([])
    return [p for p in pieces if p]


def _floor_table(index, dataset: str) -> list[str]:
    rows = sorted(
        (v != "echo", b, v, by) for (d, v, b), by in index.items() if d == dataset and v in ("echo", FLOOR_VARIANTS[0])
    )
    if not rows:
        return []
    lines = [
        "**Echo's rate floor.** The clipped scale S = c sigmoid(a) costs every latent dimension at least -log c "
        "nats, so Echo's rate is at least D (-log c) whatever beta is; a VAE's can go to 0."
        + (
            f" The clip follows the batch (c = echo_clip(batch - 1)): {FLOOR_VARIANTS[0]} is Echo at batch "
            f"{FLOOR_BATCH}."
            if any(variant != "echo" for _, _, variant, _ in rows)
            else ""
        ),
        "",
        "| method | beta | seeds | rate | floor D(-log c) | floor share of the rate | dimensions at the floor (of D) |",
        "|---|---|---|---|---|---|---|",
    ]
    for _, beta, variant, by_seed in rows:
        measured = _floor_measures(by_seed)
        if not measured:
            continue
        floor, share, at = measured
        rates = summarize([r.test["rate"] for r in by_seed.values() if r.rate_floor is not None])
        at_text = f"{summarize(at)} (n = {len(at)})" if at else "not measured"
        lines.append(f"| {variant} | {beta:g} | {share.n} | {rates} | {floor:.2f} | {share}% | {at_text} |")
    return lines + [""]


def _floor_measures(by_seed: dict[int, Result]) -> tuple[float, Summary, list[int]] | None:
    """Echo's floor D(-log c), its share of the test rate in % and the dimensions at it (of the runs that
    recorded them), over the seeds whose config has a floor; None when none has."""
    rs = [r for r in by_seed.values() if r.rate_floor is not None]
    if not rs:
        return None
    share = summarize([100 * r.rate_floor / r.test["rate"] for r in rs])
    return rs[0].rate_floor, share, [r.diagnostics["dims_at_floor"] for r in rs if "dims_at_floor" in r.diagnostics]


def _information_table(index, dataset: str) -> list[str]:
    rows = sorted(
        (
            (b, r)
            for (d, v, b), by in index.items()
            if d == dataset and v == "vae"
            for r in by.values()
            if "mutual_information" in r.diagnostics
        ),
        key=lambda pair: (pair[0], pair[1].seed),
    )
    if not rows:
        return []
    lines = [
        "**The VAE's rate is a bound.** Its KL rate is I(X;Z) + KL(q(z) || p(z)) (ELBO surgery); Echo's rate is "
        "I(X;Z) itself. Per VAE run with a recorded model: the KL rate; two lower bounds on KL(q(z) || p(z)), one "
        "from the aggregate posterior's moments (exact, tight only for a Gaussian q(z)) and one from a flow density "
        "fitted to training codes and scored on test codes (a Monte Carlo estimate, ± its standard error; not "
        "measured for runs trained before it that kept no parameters file); the upper bound on I(X;Z) they give (KL "
        "rate minus the larger, the flow's at its lower 95% limit); and a held-out estimate (test codes scored "
        "against the mixture of 10,000 training encodings; biased high, far so when posteriors are narrow beside the "
        "spacing of the training codes: a value above the KL rate, itself an upper bound, is that bias). Active "
        "units: dimensions whose encoder mean varies by more than 0.01 over the test set.",
        "",
        "| beta | seed | KL rate | I(X;Z) upper bound | I(X;Z) held-out | KL(q(z) \\|\\| p(z)) bound, moments "
        "| KL(q(z) \\|\\| p(z)) bound, flow | active units |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for beta, r in rows:
        mi = r.diagnostics["mutual_information"]
        heldout = f"{mi['heldout']:.2f}"
        if usable_mi(r.diagnostics, "heldout") is None:
            heldout += " (above the KL rate: the estimator's bias, not information)"
        flow = (
            f"{mi['flow_kl_lower_bound']:.2f} ± {mi['flow_kl_lower_bound_stderr']:.2f}"
            if "flow_kl_lower_bound" in mi
            else "not measured"
        )
        lines.append(
            f"| {beta:g} | {r.seed} | {mi['kl_rate']:.2f} | {mi['upper_bound']:.2f} | {heldout} | "
            f"{mi['marginal_kl_lower_bound']:.2f} | {flow} | {r.diagnostics['active_units']} |"
        )
    return lines + [""]


def _generalisation_table(index, dataset: str) -> list[str]:
    rows = [
        (v, b, [r for r in by.values() if r.train])
        for (d, v, b), by in sorted(index.items())
        if d == dataset and v in ("echo", "vae")
    ]
    rows = [(v, b, rs) for v, b, rs in rows if rs]
    if not rows:
        return []
    lines = [
        "**Training split against test split** (final terms; runs trained since the training split was recorded):",
        "",
        "| method | beta | seeds | train -ELBO | test -ELBO | test - train | train rate | test rate |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for v, b, rs in rows:
        gap = summarize([r.test["neg_elbo"] - r.train["neg_elbo"] for r in rs])
        lines.append(
            f"| {v} | {b:g} | {','.join(str(r.seed) for r in rs)} | {summarize([r.train['neg_elbo'] for r in rs])} | "
            f"{summarize([r.test['neg_elbo'] for r in rs])} | {gap} | {summarize([r.train['rate'] for r in rs])} | "
            f"{summarize([r.test['rate'] for r in rs])} |"
        )
    return lines + [""]


def _why_table(index, dataset: str) -> list[str]:
    """The Lagrangian and the information-axis comparisons beside the interpolation one."""
    lagrangians = lagrangian_gaps(index, dataset)
    if not lagrangians:
        return []
    bounded = lagrangian_gaps(index, dataset, "upper_bound")
    gaps = rate_distortion_gaps(index, dataset)
    mi = {name: mi_axis_gaps(index, dataset, name) for name, _ in MI_ESTIMATES}
    lines = [
        "**Three ways to compare at one beta** (Echo - VAE, nats, mean [95% CI], paired by seed): the Lagrangian "
        "distortion + beta * rate at the same beta, with the VAE's rate its KL rate and again its I(X;Z) upper "
        "bound (the VAE runs that recorded it; above 0 there, the VAE's true trade-off is better still); Echo's "
        "distortion minus the VAE's at Echo's rate on the VAE's KL-rate curve (the verdict's axis); and the same "
        "on the VAE's curve redrawn at its estimated I(X;Z) (only seeds whose VAE models were recorded at two or "
        "more adjacent betas, never bridged across a beta without them; n = 1 has no interval).",
        "",
        "| beta | Lagrangian | Lagrangian (VAE at its I(X;Z) upper bound) | at Echo's rate (KL axis) "
        "| at Echo's rate (I(X;Z) upper bound) | at Echo's rate (held-out I(X;Z)) |",
        "|---|---|---|---|---|---|",
    ]
    for beta, g in lagrangians.items():
        cells = [str(g), str(bounded.get(beta, "not measured")), str(gaps.get(beta, "n/a"))] + [
            str(mi[name].get(beta, "not measured")) for name, _ in MI_ESTIMATES
        ]
        lines.append(f"| {beta:g} | " + " | ".join(cells) + " |")
    return lines + [""]


def _longer_training_section(standard, longer, dataset: str) -> list[str]:
    """The same (method, beta) trained for the campaign's standard schedule and for a longer one."""
    epochs = sorted({r.num_epochs for (d, _, _), by in longer.items() if d == dataset for r in by.values()})
    if not epochs:
        return []
    lines = [
        f"### Longer training ({'/'.join(map(str, epochs))} epochs)",
        "",
        "Has training converged at the standard schedule? The same runs trained longer (lr constant for the first "
        "half, then linearly to 0), mean ± sd over seeds; then each against the standard schedule and Echo - VAE at "
        "each length (both paired by seed):",
        "",
        "| method | beta | epochs | seeds | rate | distortion | -ELBO |",
        "|---|---|---|---|---|---|---|",
    ]
    keys = sorted({(v, b) for (d, v, b) in longer if d == dataset})
    for v, b in keys:
        for source in (standard, longer):
            rs = list(source.get((dataset, v, b), {}).values())
            if rs:
                lines.append(
                    f"| {v} | {b:g} | {rs[0].num_epochs} | {','.join(str(r.seed) for r in rs)} | "
                    f"{summarize([r.test['rate'] for r in rs])} | {summarize([r.test['distortion'] for r in rs])} | "
                    f"{summarize([r.test['neg_elbo'] for r in rs])} |"
                )
    lines += [
        "",
        "The longer schedule against the standard one, for the same method, beta and seed (negative: the longer "
        "run ends lower):",
        "",
        "| method | beta | test -ELBO longer - standard | train -ELBO longer - standard |",
        "|---|---|---|---|",
    ]
    for v, b in keys:
        pair = standard.get((dataset, v, b), {}), longer.get((dataset, v, b), {})
        cells = []
        for split in ("test", "train"):
            # runs from before the training split was recorded have no train terms
            have = [{s: r for s, r in p.items() if getattr(r, split)} for p in pair]
            a, c = paired_by_seed(have[1], have[0], lambda r, split=split: getattr(r, split)["neg_elbo"])
            cells.append(str(paired_interval(a, c)) if a else "not measured")
        lines.append(f"| {v} | {b:g} | {cells[0]} | {cells[1]} |")
    betas = sorted({b for v, b in keys if v in ("echo", "vae")})  # Echo - VAE at each length: not E5's pairs
    if not betas:
        return lines + [""]
    on_axis = longer_axis_gaps(standard, longer, dataset)
    lines += [
        "",
        f"| beta | epochs | -ELBO Echo - VAE | Lagrangian Echo - VAE | distortion at Echo's rate, Echo - VAE (VAE "
        f"curve through beta {', '.join(f'{b:g}' for b in betas)} only) |",
        "|---|---|---|---|---|",
    ]
    for b in betas:
        for source, axis in zip((standard, longer), on_axis.get(b, (None, None))):
            e, v = source.get((dataset, "echo", b), {}), source.get((dataset, "vae", b), {})
            a, c = paired_by_seed(e, v, lambda r: r.test["neg_elbo"])
            if not a:
                continue
            lag = paired_interval(*paired_by_seed(e, v, lagrangian))
            axis = axis or "n/a (Echo's rate is outside that curve)"
            lines.append(f"| {b:g} | {next(iter(e.values())).num_epochs} | {paired_interval(a, c)} | {lag} | {axis} |")
    return lines + [""]


def plot_rate_distortion_why(index, dataset: str, path: str, split: str = "test") -> None:
    """The rate-distortion plane with what explains the comparison: Echo's floor as a vertical line and, on
    the test split, the VAE's recorded models redrawn at their estimated I(X;Z)."""
    plot_rate_distortion(index, dataset, path, split=split, extra=lambda ax: _draw_why(ax, index, dataset, split))


def _draw_why(ax, index, dataset: str, split: str) -> None:
    floors = {
        (r.rate_floor, v)
        for (d, v, _), by in index.items()
        if d == dataset and v in ("echo", FLOOR_VARIANTS[0])
        for r in by.values()
        if r.rate_floor is not None
    }
    for (floor, variant), ls in zip(sorted(floors, reverse=True), (":", "-.")):
        ax.axvline(floor, color="tab:red", ls=ls, lw=1, label=f"{variant}'s floor D(-log c) = {floor:.2f} nats")
    if split != "test":
        return
    for (name, _), marker in zip(MI_ESTIMATES, ("v", "^")):
        points = sorted(
            (usable_mi(r.diagnostics, name), r.test["distortion"])
            for (d, v, _), by in index.items()
            if d == dataset and v == "vae"
            for r in by.values()
            if usable_mi(r.diagnostics, name) is not None
        )
        if points:
            label = "vae at its I(X;Z) upper bound" if name == "upper_bound" else "vae at its held-out I(X;Z)"
            ax.plot(*zip(*points), marker, ms=5, color="tab:green", alpha=0.7, label=f"{label} (one run a point)")


def plot_learning_curves_by_beta(index, dataset: str, path: str) -> None:
    """Test -ELBO against epoch, one panel per beta, per method: seed mean and its min-max band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    betas = sorted({b for (d, v, b) in index if d == dataset and v in ("echo", "vae")})
    columns = min(3, len(betas))
    rows = -(-len(betas) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3 * rows), squeeze=False)
    for ax, beta in zip(axes.flat, betas):
        for variant in ("echo", "vae"):
            runs = list(index.get((dataset, variant, beta), {}).values())
            if not runs:
                continue
            epochs = sorted(set.intersection(*[{e for e, _ in r.curve} for r in runs]))
            values = np.array([[dict(r.curve)[e] for e in epochs] for r in runs])
            ax.plot(epochs, values.mean(0), "o-", ms=2, label=f"{variant} (n = {len(runs)})")
            ax.fill_between(epochs, values.min(0), values.max(0), alpha=0.25)
        ax.set_title(f"beta = {beta:g}", fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.set_ylabel("test -ELBO (nats)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(betas) :]:
        ax.axis("off")
    fig.suptitle(f"{dataset}: test -ELBO against epoch (band: min-max over seeds)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def zoo_results(results: Sequence[Result], dataset: str) -> list[Result]:
    """The runs that kept their parameters (the model zoo) on `dataset`, echo before vae, by beta."""
    kept = [r for r in results if r.dataset == dataset and os.path.isfile(os.path.join(r.directory, "params.json"))]
    return sorted(kept, key=lambda r: (r.variant, r.beta, r.seed))


def plot_zoo(zoo: Sequence[Result], path: str) -> None:
    """One row per zoo model: its committed reconstructions.png (test images above their reconstructions)
    beside its samples.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    fig, axes = plt.subplots(len(zoo), 2, figsize=(11, 1.9 * len(zoo)), squeeze=False)
    for (left, right), r in zip(axes, zoo):
        for ax, name in ((left, "reconstructions.png"), (right, "samples.png")):
            ax.imshow(np.asarray(Image.open(os.path.join(r.directory, name))), cmap="gray")
            ax.set_xticks([])
            ax.set_yticks([])
        left.set_ylabel(f"{r.variant}\nbeta {r.beta:g}", fontsize=9)
    axes[0][0].set_title("test images (rows 1, 3) and their reconstructions (rows 2, 4)", fontsize=9)
    axes[0][1].set_title("samples (echo: through the aggregate posterior; vae: from N(0, I))", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_rates_per_dim(results: Sequence[Result], path: str) -> None:
    """Sorted rate per latent dimension of every run that recorded it, one panel per method, one line per
    beta (seeds as thin lines); Echo's per-dimension floor as a dotted line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = [v for v in ("echo", "vae") if any(r.variant == v for r in results)]
    fig, axes = plt.subplots(1, len(variants), figsize=(5.5 * len(variants), 3.5), squeeze=False)
    betas = sorted({r.beta for r in results})
    colors = dict(zip(betas, plt.cm.viridis(np.linspace(0, 0.9, len(betas)))))
    for ax, variant in zip(axes[0], variants):
        labelled = set()
        for r in sorted((r for r in results if r.variant == variant), key=lambda r: r.beta):
            rates = np.sort(r.diagnostics["rate_per_dim"])[::-1]
            label = f"beta {r.beta:g}" if r.beta not in labelled else None
            labelled.add(r.beta)
            ax.plot(np.arange(1, len(rates) + 1), rates, "-", color=colors[r.beta], lw=1.2, label=label)
            if variant == "echo":
                floor = r.diagnostics["rate_floor_per_dim"]
        if variant == "echo":
            ax.axhline(floor, color="tab:red", ls=":", lw=1, label=f"floor -log c = {floor:.3f}")
        ax.set_yscale("log")
        ax.set_xlabel("latent dimension (sorted by rate)")
        ax.set_ylabel("rate (nats)")
        ax.set_title(f"{variant}: test rate per dimension (one line a run)", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------- report


def write_reproduction(
    campaign,
    runs: Sequence[campaign_lib.Run],
    done: dict[str, str],
    out_path: str,
    figures_dir: str,
    *,
    command: str,
    rejected: dict[str, str] | None = None,
) -> list[Verdict]:
    """Writes the Markdown report to out_path and its figures to figures_dir; returns the verdicts.

    Args:
      campaign: the campaign file's config.
      runs: its planned runs (`campaign_lib.plan`).
      done: its finished runs (`campaign_lib.scan_results`).
      out_path: the Markdown file.
      figures_dir: where the PNG figures go (linked relative to out_path).
      command: the command that regenerates the report (printed in it).
      rejected: its run folders that cannot be trusted (`campaign_lib.scan_results`): counted and listed as the
        campaign's ``--status`` does.
    """
    every = load_finished(runs, done)
    # The campaign's standard schedule is its most common length; runs trained longer (groups E2, E7, E8) are
    # reported beside it and never mixed into its curves.
    lengths = [r.config.num_epochs for r in runs if r.config.dataset not in DSPRITES] or [0]
    standard_epochs = max(set(lengths), key=lengths.count)
    results = [r for r in every if r.dataset in DSPRITES or r.num_epochs == standard_epochs]
    longer = _index([r for r in every if r.dataset not in DSPRITES and r.num_epochs != standard_epochs])
    index = _index(results)
    os.makedirs(figures_dir, exist_ok=True)
    rel = lambda p: os.path.relpath(p, os.path.dirname(os.path.abspath(out_path)))
    pending = lambda d: sum(
        1
        for r in runs
        if r.key not in done
        and r.config.dataset == d
        and r.variant in ("echo", "vae")
        and r.config.num_epochs == standard_epochs
    )
    verdicts = [dominance_verdict(index, d, results, pending(d), longer) for d in RD_DATASETS]
    verdicts += [flow_verdict(index, results)] + disentanglement_verdicts(index, results)

    md = [
        f"# Reproduction: campaign `{campaign.name}`",
        "",
        f"Generated by `{command}` from the runs committed under `results/{campaign.name}/`: "
        f"{campaign_lib.count_sentence(runs, done, rejected)} Every number is a test-set figure in nats (mean ± "
        "sample standard deviation over seeds) unless it says otherwise; seeds vary the models' initialisation and "
        "noise, and all runs share one data order, so Echo and the VAE of a seed are compared on the same batches "
        "(paired differences, 95% t-intervals).",
        "",
    ]
    if campaign.get("schedule"):
        md += [f"**Schedule.** {campaign.schedule}", ""]
    commits = sorted({r.commit or "unknown" for r in every})
    if commits:
        md += [f"**Code.** Trained at commit(s) {', '.join(f'`{c}`' for c in commits)}.", ""]
    md += _environment_lines(every)
    dirty = [r for r in every if trained_dirty(r.directory)]
    if dirty:
        md += [dirty_note(dirty), ""]
    md += ["## Verdicts", "", "| claim | verdict | evidence |", "|---|---|---|"]
    md += [f"| {v.claim} | **{v.status}** | {v.evidence} |" for v in verdicts]
    md += [""]

    present = {r.dataset for r in results} - set(DSPRITES)
    for dataset in [d for d in RD_DATASETS if d in present] + sorted(present - set(RD_DATASETS)):
        rows = [r for r in results if r.dataset == dataset]
        md += [f"## {dataset}", "", f"Budget: {budget(rows)}.", ""]
        if len({r.beta for r in rows if r.variant in ("echo", "vae")}) >= 2:
            path = os.path.join(figures_dir, f"{campaign.name}_{dataset}_rate_distortion.png")
            plot_rate_distortion_why(index, dataset, path)
            md += [f"![rate-distortion, {dataset}]({rel(path)})", ""]
        md += _rd_table(index, dataset)
        md += _paired_table(index, dataset)
        md += _paired_table(
            index,
            dataset,
            FLOOR_VARIANTS,
            f"Echo - VAE with both at batch {FLOOR_BATCH} (groups E3-E6: Echo's floor lowered), paired by seed, mean "
            "[95% CI]:",
        )
        why = _attribution_table(index, dataset, longer) + _why_table(index, dataset)
        why += _floor_table(index, dataset) + _information_table(index, dataset)
        generalisation = _generalisation_table(index, dataset)
        if why or generalisation:
            md += [f"### Why the comparison comes out as it does ({dataset})", ""] + why + generalisation
        trained_rows = [r for r in rows if r.train and r.variant in ("echo", "vae")]
        if len({r.beta for r in trained_rows}) >= 2:
            path = os.path.join(figures_dir, f"{campaign.name}_{dataset}_rate_distortion_train.png")
            plot_rate_distortion_why(index, dataset, path, split="train")
            md += [f"![training-split rate-distortion, {dataset}]({rel(path)})", ""]
        if any(index.get((dataset, v, b)) for v in ("echo", "vae") for b in {r.beta for r in rows}):
            path = os.path.join(figures_dir, f"{campaign.name}_{dataset}_learning_curves.png")
            plot_learning_curves_by_beta(index, dataset, path)
            md += [f"![learning curves, {dataset}]({rel(path)})", ""]
        md += _longer_training_section(index, longer, dataset)
        md += _zoo_section(campaign, results, dataset, figures_dir, rel)

    md += _beta_one_table(index)
    md += _disentanglement_table(index)
    md += [
        "## Pending runs",
        "",
        f"Continue with `{command.replace('experiments.report', 'experiments.campaign')}` "
        "(add `--max-minutes M` to stop cleanly in time).",
        "",
        "```",
    ]
    md += campaign_lib.status_lines(campaign, runs, done, rejected) + ["```", ""]
    write_atomic(out_path, "\n".join(md))
    return verdicts


def _environment_lines(results: Sequence[Result]) -> list[str]:
    """The environments the runs were trained in (one config and commit agree bit for bit only within one)."""
    seen: dict[str, int] = defaultdict(int)
    for r in results:
        for e in {json.dumps(e, sort_keys=True) for e in r.environments}:
            seen[e] += 1
    if not seen:
        return []
    described = [
        f"jax {e['jax']}, flax {e['flax']}, optax {e['optax']} on {e['backend']} ({e['device']}, CPU {e['cpu']}): "
        f"{n} run(s)"
        for e, n in ((json.loads(k), n) for k, n in sorted(seen.items(), key=lambda kv: -kv[1]))
    ]
    unrecorded = sum(not r.environments for r in results)
    tail = f"; {unrecorded} run(s) trained before environments were recorded" if unrecorded else ""
    return [f"**Environment.** {'; '.join(described)}{tail}.", ""]


def _zoo_section(campaign, results, dataset: str, figures_dir: str, rel) -> list[str]:
    zoo = zoo_results(results, dataset)
    measured = [r for r in results if r.dataset == dataset and "rate_per_dim" in r.diagnostics]
    if not zoo and not measured:
        return []
    lines = [f"### Trained models ({dataset})", ""]
    if zoo:
        path = os.path.join(figures_dir, f"{campaign.name}_{dataset}_zoo.png")
        plot_zoo(zoo, path)
        folders = ", ".join(f"`{os.path.relpath(r.directory)}`" for r in zoo)
        lines += [
            "The campaign keeps these models' parameters (`keep_params`): open one with "
            "`echo_jax.load_run(folder)` or `python -m experiments.inspect folder`. "
            f"Folders: {folders}.",
            "",
            f"![the model zoo, {dataset}]({rel(path)})",
            "",
        ]
    if measured:
        path = os.path.join(figures_dir, f"{campaign.name}_{dataset}_rates_per_dim.png")
        plot_rates_per_dim(measured, path)
        lines += [f"![rate per dimension, {dataset}]({rel(path)})", ""]
    return lines


def _rd_table(index, dataset: str) -> list[str]:
    lines = ["| method | beta | seeds | rate | distortion | -ELBO | IWAE |", "|---|---|---|---|---|---|---|"]
    for (d, variant, beta), by_seed in sorted(index.items()):
        if d != dataset:
            continue
        rs = list(by_seed.values())
        iwae = str(summarize([r.test["iwae_nll"] for r in rs])) if all("iwae_nll" in r.test for r in rs) else "n/a"
        lines.append(
            f"| {variant} | {beta:g} | {','.join(str(s) for s in sorted(by_seed))} | "
            f"{summarize([r.test['rate'] for r in rs])} | {summarize([r.test['distortion'] for r in rs])} | "
            f"{summarize([r.test['neg_elbo'] for r in rs])} | {iwae} |"
        )
    return lines + [""]


def _paired_table(index, dataset: str, pair: tuple[str, str] = ("echo", "vae"), heading: str = "") -> list[str]:
    echo, vae = pair
    betas = sorted(b for (d, v, b) in index if d == dataset and v == echo and (d, vae, b) in index)
    if not betas:
        return []
    gaps = rate_distortion_gaps(index, dataset, echo=echo, other=vae)
    lines = [
        heading or "Echo - VAE, paired by seed, mean [95% CI]:",
        "",
        "| beta | -ELBO at the same beta | rate | distortion | distortion at Echo's rate |",
        "|---|---|---|---|---|",
    ]
    for beta in betas:
        e, v = index[(dataset, echo, beta)], index[(dataset, vae, beta)]
        cells = [
            str(paired_interval(*paired_by_seed(e, v, lambda r, k=k: r.test[k])))
            for k in ("neg_elbo", "rate", "distortion")
        ]
        lines.append(f"| {beta:g} | " + " | ".join(cells) + f" | {gaps.get(beta, 'n/a')} |")
    return lines + [""]


def _beta_one_table(index) -> list[str]:
    keys = sorted(k for k in index if k[2] == 1.0 and k[0] not in DSPRITES)
    if not keys:
        return []
    lines = [
        "## beta = 1, every method",
        "",
        "| dataset | method | seeds | rate | distortion | -ELBO | IWAE |",
        "|---|---|---|---|---|---|---|",
    ]
    for dataset, variant, _ in keys:
        rs = list(index[(dataset, variant, 1.0)].values())
        iwae = str(summarize([r.test["iwae_nll"] for r in rs])) if all("iwae_nll" in r.test for r in rs) else "n/a"
        lines.append(
            f"| {dataset} | {variant} | {len(rs)} | {summarize([r.test['rate'] for r in rs])} | "
            f"{summarize([r.test['distortion'] for r in rs])} | {summarize([r.test['neg_elbo'] for r in rs])} "
            f"| {iwae} |"
        )
    return lines + [""]


def _disentanglement_table(index) -> list[str]:
    keys = sorted(k for k in index if k[0] in DSPRITES)
    if not keys:
        return []
    lines = [
        "## Disentanglement (dSprites)",
        "",
        "| dataset | method | seeds | MIG | FactorVAE | held-out MIG | rate |",
        "|---|---|---|---|---|---|---|",
    ]
    for key in keys:
        rs = list(index[key].values())
        held = (
            str(summarize([r.extra["heldout_mig"] for r in rs])) if all("heldout_mig" in r.extra for r in rs) else "n/a"
        )
        lines.append(
            f"| {key[0]} | {key[1]} | {len(rs)} | {summarize([r.extra['mig'] for r in rs])} | "
            f"{summarize([r.extra['factor_vae'] for r in rs])} | {held} | "
            f"{summarize([r.test['rate'] for r in rs])} |"
        )
    return lines + [""]
