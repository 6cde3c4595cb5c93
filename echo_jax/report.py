"""Plots and tables from results.json files: rate-distortion curves, -ELBO against beta, Markdown tables."""

from __future__ import annotations

import contextlib
import errno
import os
from collections import defaultdict
from collections.abc import Iterable

import numpy as np

from echo_jax import workdir as workdir_lib
from echo_jax.errors import WorkdirError
from echo_jax.files import write_atomic


def load_results(workdirs: Iterable[str]) -> list[dict]:
    """Every run recorded in the results.json of each work directory, checked (`echo_jax.workdir.read_results`).

    Raises:
      WorkdirError: a work directory is given twice, is not finished, or its files cannot be trusted.
    """
    rows, seen = [], {}
    for workdir in workdirs:
        real = os.path.realpath(workdir)
        if real in seen:
            raise WorkdirError(f"--workdir {workdir} is given twice (as {seen[real]}); give each work directory once")
        seen[real] = workdir
        path = os.path.join(workdir, "results.json")
        if not os.path.exists(path):
            raise WorkdirError(f"{path} not found: is {workdir} a finished experiment's work directory?")
        rows.extend(workdir_lib.read_results(workdir)["results"])
    return rows


def write_if_changed(path: str, text: str) -> bool:
    """Writes `text` to `path` unless the file holds it already (a finished run is reported again without writing,
    also where its folder is read-only); returns whether it wrote.

    Raises:
      WorkdirError: the file must change but cannot be written.
    """
    try:
        with open(path) as f:
            if f.read() == text:
                return False
    except (OSError, UnicodeDecodeError):
        pass
    try:
        write_atomic(path, text)
    except OSError as e:
        if e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        raise WorkdirError(f"{path} cannot be written ({e.strerror}); make its folder writable or give --out") from None
    return True


def method_name(row: dict) -> str:
    return row["encoder"] if row["encoder"] == "echo" else f"{row['encoder']}+{row['marginal']}"


def markdown_table(rows: list[dict]) -> str:
    """One line per run: method, dataset, beta, seed, test rate, distortion, -ELBO (nats)."""
    extra = sorted({k for r in rows for k in r["test"]} - {"rate", "distortion", "neg_elbo", "loss"})
    header = ["method", "dataset", "beta", "seed", "rate", "distortion", "-ELBO", *extra, "steps", "seconds"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in sorted(rows, key=lambda r: (method_name(r), r["dataset"], r["beta"], r["seed"])):
        t = r["test"]
        cells = [
            method_name(r),
            r["dataset"],
            f"{r['beta']:g}",
            str(r["seed"]),
            f"{t['rate']:.2f}",
            f"{t['distortion']:.2f}",
            f"{t['neg_elbo']:.2f}",
            *[f"{t[k]:.2f}" if k in t else "" for k in extra],
            str(r["steps"]),
            f"{r['seconds']:.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _by_method(rows):
    groups = defaultdict(list)
    for r in rows:
        groups[(method_name(r), r["dataset"])].append(r)
    out = {}
    for key, group in groups.items():
        betas = sorted({r["beta"] for r in group})
        mean = lambda b, k, group=group: float(np.mean([r["test"][k] for r in group if r["beta"] == b]))
        out[key] = {k: np.array([mean(b, k) for b in betas]) for k in ("rate", "distortion", "neg_elbo")}
        out[key]["beta"] = np.array(betas)
    return out


@contextlib.contextmanager
def figure(path: str):
    """An off-screen figure and axes, saved to `path` and closed on exit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    try:
        yield ax
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)


def plot_rate_distortion(rows: list[dict], path: str) -> None:
    """Rate (x) against distortion (y), one line per method (seeds averaged), with -ELBO iso-lines."""
    with figure(path) as ax:
        _draw_rate_distortion(ax, rows)


def _draw_rate_distortion(ax, rows: list[dict]) -> None:
    curves = _by_method(rows)
    for (method, dataset), c in sorted(curves.items()):
        ax.plot(c["rate"], c["distortion"], "o-", label=f"{method} ({dataset})")
        for b, x, y in zip(c["beta"], c["rate"], c["distortion"]):
            ax.annotate(f"{b:g}", (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7)
    # Lines of constant -ELBO = R + D: the diagonal direction along which beta = 1 models trade.
    rates = np.concatenate([c["rate"] for c in curves.values()])
    dists = np.concatenate([c["distortion"] for c in curves.values()])
    lo, hi = float(np.min(rates + dists)), float(np.max(rates + dists))
    xs = np.linspace(0, max(rates.max() * 1.1, 1.0), 50)
    for level in np.linspace(lo, hi, 4):
        ax.plot(xs, level - xs, color="0.85", lw=0.8, zorder=0)
    ax.set_xlim(0, max(rates.max() * 1.1, 1.0))
    ax.set_ylim(max(0.0, dists.min() * 0.9), dists.max() * 1.1)
    ax.set_xlabel("rate (nats): exact I(X;Z) for echo, its KL upper bound otherwise")
    ax.set_ylabel("distortion (nats)")
    ax.set_title("Rate-distortion (test); labels are beta; grey: constant -ELBO")


def _beta_axis(ax, betas: Iterable[float], max_labels: int = 8) -> None:
    """A beta axis labelled at the swept betas as plain numbers (0.25, 1, 4; three significant digits).

    Log-scaled (linear when a beta is 0). Matplotlib's own log ticks label the minor ticks of a sweep within
    a decade or two as 2x10^-1, 3x10^-1, ..., which overlap; labels closer than 1/(max_labels - 1) of the
    axis to the previous one are left out, so at most max_labels are drawn.
    """
    from matplotlib import ticker

    betas = np.unique(np.asarray(list(betas), dtype=float))
    log = betas.min() > 0
    position = np.log10(betas) if log else betas
    span = float(position[-1] - position[0]) or 1.0
    gap = span / max(max_labels - 1, 1) * (1 - 1e-9)  # the tolerance: log10 of a geometric sweep rounds
    shown = [0]
    for i in range(1, len(betas)):
        if position[i] - position[shown[-1]] >= gap:
            shown.append(i)
    if log:
        ax.set_xscale("log")
    ax.xaxis.set_major_locator(ticker.FixedLocator(betas[shown]))
    ax.xaxis.set_major_formatter(ticker.FixedFormatter([f"{b:.3g}" for b in betas[shown]]))
    ax.xaxis.set_minor_locator(ticker.NullLocator())


def plot_elbo_vs_beta(rows: list[dict], path: str) -> None:
    """-ELBO (= rate + distortion) against beta on a log axis, one line per method."""
    with figure(path) as ax:
        for (method, dataset), c in sorted(_by_method(rows).items()):
            ax.plot(c["beta"], c["neg_elbo"], "o-", label=f"{method} ({dataset})")
        _beta_axis(ax, [r["beta"] for r in rows])
        ax.set_xlabel("beta")
        ax.set_ylabel("-ELBO = rate + distortion (nats)")
        ax.set_title("Test -ELBO against beta")


def write_report(
    out_dir: str, rows: list[dict] | dict, *, plots: bool = True, note: str = "", appendix: str = ""
) -> str:
    """Writes results.md (and, for two or more betas, the two plots) into out_dir; returns the table (and the
    appendix). Nothing is written when results.md already holds this report.

    Args:
      out_dir: where to write.
      rows: result rows, or the content of a results.json.
      plots: draw the PNG plots (when the runs span at least two betas).
      note: a paragraph written above the table (e.g. the budget the runs had).
      appendix: text written below the table (e.g. more tables).
    """
    if isinstance(rows, dict):
        rows = rows["results"]
    os.makedirs(out_dir, exist_ok=True)
    table = markdown_table(rows) + appendix
    if not write_if_changed(os.path.join(out_dir, "results.md"), (note + "\n\n" if note else "") + table):
        return table  # the same rows as when it was written: the plots are those of this table too
    if plots and len({r["beta"] for r in rows}) >= 2:
        plot_rate_distortion(rows, os.path.join(out_dir, "rate_distortion.png"))
        plot_elbo_vs_beta(rows, os.path.join(out_dir, "neg_elbo_vs_beta.png"))
    return table
