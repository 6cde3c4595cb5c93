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
import json
import os
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import scipy.stats

from echo_jax import campaign as campaign_lib
from echo_jax.files import write_atomic
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
            )
        )
    return out


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


def paired_by_seed(a: dict[int, Result], b: dict[int, Result], metric) -> tuple[list[float], list[float]]:
    seeds = sorted(set(a) & set(b))
    return [metric(a[s]) for s in seeds], [metric(b[s]) for s in seeds]


def rate_distortion_gaps(index, dataset: str, echo: str = "echo", other: str = "vae") -> dict[float, Interval]:
    """Per echo beta: Echo's distortion minus the other method's at Echo's rate, paired by seed.

    The other method's curve of a seed is its (rate, distortion) points over the betas trained on that
    seed, linear between points; an Echo point outside that curve's rate range is not compared.
    """
    echo_betas = sorted(b for (d, v, b) in index if d == dataset and v == echo)
    other_betas = sorted(b for (d, v, b) in index if d == dataset and v == other)
    gaps = {}
    for beta in echo_betas:
        diffs = []
        for seed, e in index[(dataset, echo, beta)].items():
            curve = [index[(dataset, other, b)][seed] for b in other_betas if seed in index[(dataset, other, b)]]
            at = distortion_at_rate(
                [c.test["rate"] for c in curve], [c.test["distortion"] for c in curve], e.test["rate"]
            )
            if at is not None:
                diffs.append(e.test["distortion"] - at)
        if diffs:
            gaps[beta] = paired_interval(diffs, np.zeros(len(diffs)))
    return gaps


def dominance_verdict(index, dataset: str, results: Sequence[Result], pending: int = 0) -> Verdict:
    """ "Echo dominates beta-VAE across the rate-distortion range" on one dataset.

    Args:
      index: `_index` of the finished results.
      dataset: the dataset.
      results: the finished results.
      pending: the campaign's Echo and VAE runs on this dataset not finished yet: the range the claim is
        about is then not covered, and the verdict waits (the partial evidence is shown).
    """
    claim = f"Echo dominates the beta-VAE across the rate-distortion range ({dataset})"
    gaps = rate_distortion_gaps(index, dataset)
    if not gaps or all(g.n < 2 for g in gaps.values()):
        return Verdict(claim, "not yet measured", "needs Echo and VAE curves (>= 2 betas) on >= 2 seeds")
    used = [r for r in results if r.dataset == dataset and r.variant in ("echo", "vae")]
    lines = "; ".join(f"beta {b:g}: {g}" for b, g in sorted(gaps.items()))
    evidence = f"Echo's distortion minus the VAE's at Echo's rate, nats, mean [95% CI]: {lines}. Budget: {budget(used)}"
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
    """ "Echo can outperform flow-based methods": Echo's -ELBO at beta = 1 below every flow method's."""
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


def plot_rate_distortion(index, dataset: str, path: str) -> None:
    """Rate against distortion per method: seed means with one-standard-deviation bars, -ELBO iso-lines."""
    variants = sorted({v for (d, v, _) in index if d == dataset})
    with figure(path) as ax:
        rates, sums = [], []
        for variant in variants:
            betas = sorted(b for (d, v, b) in index if d == dataset and v == variant)
            if len(betas) < 2:
                continue
            points = [
                (
                    summarize([r.test["rate"] for r in index[(dataset, variant, b)].values()]),
                    summarize([r.test["distortion"] for r in index[(dataset, variant, b)].values()]),
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
        ax.set_xlabel("rate (nats): exact I(X;Z) for echo, the KL bound for the VAE")
        ax.set_ylabel("distortion (nats)")
        ax.set_title(f"{dataset}: test rate-distortion (labels: beta)")


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


# ----------------------------------------------------------------------------------------------- report


def write_reproduction(
    campaign, runs: Sequence[campaign_lib.Run], done: dict[str, str], out_path: str, figures_dir: str, *, command: str
) -> list[Verdict]:
    """Writes the Markdown report to out_path and its figures to figures_dir; returns the verdicts.

    Args:
      campaign: the campaign file's config.
      runs: its planned runs (`campaign_lib.plan`).
      done: its finished runs (`campaign_lib.finished_runs`).
      out_path: the Markdown file.
      figures_dir: where the PNG figures go (linked relative to out_path).
      command: the command that regenerates the report (printed in it).
    """
    results = load_finished(runs, done)
    index = _index(results)
    os.makedirs(figures_dir, exist_ok=True)
    rel = lambda p: os.path.relpath(p, os.path.dirname(os.path.abspath(out_path)))
    pending = lambda d: sum(
        1 for r in runs if r.key not in done and r.config.dataset == d and r.variant in ("echo", "vae")
    )
    verdicts = [dominance_verdict(index, d, results, pending(d)) for d in RD_DATASETS]
    verdicts += [flow_verdict(index, results)] + disentanglement_verdicts(index, results)

    md = [
        f"# Reproduction: campaign `{campaign.name}`",
        "",
        f"Generated by `{command}` from the runs committed under `results/{campaign.name}/`: "
        f"{len(results)} of {len(runs)} runs finished. Every number is a test-set figure in nats (mean ± "
        "sample standard deviation over seeds); seeds vary the models' initialisation and noise, and all "
        "runs share one data order, so Echo and the VAE of a seed are compared on the same batches "
        "(paired differences, 95% t-intervals).",
        "",
    ]
    if campaign.get("schedule"):
        md += [f"**Schedule.** {campaign.schedule}", ""]
    commits = sorted({r.commit or "unknown" for r in results})
    if commits:
        md += [f"**Code.** Trained at commit(s) {', '.join(f'`{c}`' for c in commits)}.", ""]
    md += ["## Verdicts", "", "| claim | verdict | evidence |", "|---|---|---|"]
    md += [f"| {v.claim} | **{v.status}** | {v.evidence} |" for v in verdicts]
    md += [""]

    present = {r.dataset for r in results} - set(DSPRITES)
    for dataset in [d for d in RD_DATASETS if d in present] + sorted(present - set(RD_DATASETS)):
        rows = [r for r in results if r.dataset == dataset]
        md += [f"## {dataset}", "", f"Budget: {budget(rows)}.", ""]
        if len({r.beta for r in rows if r.variant in ("echo", "vae")}) >= 2:
            path = os.path.join(figures_dir, f"{campaign.name}_{dataset}_rate_distortion.png")
            plot_rate_distortion(index, dataset, path)
            md += [f"![rate-distortion, {dataset}]({rel(path)})", ""]
        md += _rd_table(index, dataset)
        md += _paired_table(index, dataset)
        if index.get((dataset, "echo", 1.0)) and index.get((dataset, "vae", 1.0)):
            path = os.path.join(figures_dir, f"{campaign.name}_{dataset}_learning_curves.png")
            plot_learning_curves(index, dataset, path)
            md += [f"![learning curves, {dataset}]({rel(path)})", ""]

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
    md += campaign_lib.status_lines(campaign, runs, done) + ["```", ""]
    write_atomic(out_path, "\n".join(md))
    return verdicts


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


def _paired_table(index, dataset: str) -> list[str]:
    betas = sorted(b for (d, v, b) in index if d == dataset and v == "echo" and (d, "vae", b) in index)
    if not betas:
        return []
    gaps = rate_distortion_gaps(index, dataset)
    lines = [
        "Echo - VAE, paired by seed, mean [95% CI]:",
        "",
        "| beta | -ELBO at the same beta | rate | distortion | distortion at Echo's rate |",
        "|---|---|---|---|---|",
    ]
    for beta in betas:
        e, v = index[(dataset, "echo", beta)], index[(dataset, "vae", beta)]
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
