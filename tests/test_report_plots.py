"""The report's plots at their default size: the beta axis is labelled at the swept betas, legibly."""

import contextlib

import numpy as np
import pytest

from echo_jax import report
from tests.test_report import row


@pytest.fixture
def drawn(monkeypatch):
    """The axes of every figure the report draws (rendered and saved, then kept for inspection)."""
    axes = []
    real = report.figure

    @contextlib.contextmanager
    def keeping(path):
        with real(path) as ax:
            axes.append(ax)
            yield ax

    monkeypatch.setattr(report, "figure", keeping)
    return axes


def _beta_labels(ax):
    """The beta axis's visible tick labels and their boxes, the figure drawn again at its saved size."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(ax.figure)  # closing the figure took its canvas away
    canvas.draw()
    renderer = canvas.get_renderer()
    labels = [t for t in ax.get_xticklabels(minor=False) + ax.get_xticklabels(minor=True) if t.get_text()]
    return [t.get_text() for t in labels], [t.get_window_extent(renderer) for t in labels]


@pytest.mark.parametrize(
    ("betas", "expected"),
    [
        ([0.25, 0.5, 1, 2, 4], ["0.25", "0.5", "1", "2", "4"]),  # the quickstart's sweep
        ([0.5, 0.7], ["0.5", "0.7"]),
        ([0, 0.5, 1, 2], ["0", "0.5", "1", "2"]),  # beta 0: a linear axis
        (list(np.geomspace(0.1, 10, 25)), None),  # too many to label all
    ],
)
def test_beta_ticks_are_the_betas_and_do_not_overlap(tmp_path, drawn, betas, expected):
    rows = [row(m, b, 40 / (1 + b), 90 + 10 * b) for m in ("echo", "vae") for b in betas]
    report.plot_elbo_vs_beta(rows, str(tmp_path / "neg_elbo_vs_beta.png"))
    texts, boxes = _beta_labels(drawn[0])
    if expected is not None:
        assert texts == expected
    else:
        assert 4 <= len(texts) <= 8 and texts[0] == "0.1"
        assert all(len(t) <= 5 for t in texts)  # three significant digits, not 0.177828
    boxes = sorted(boxes, key=lambda b: b.x0)
    assert all(left.x1 < right.x0 for left, right in zip(boxes, boxes[1:])), texts
    assert (tmp_path / "neg_elbo_vs_beta.png").stat().st_size > 0
