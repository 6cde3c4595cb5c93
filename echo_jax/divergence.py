"""A run that has diverged without becoming non-finite: its loss far above its own best, held.

The non-finite guard of the run loop sees inf and NaN only; a learning rate that is too large (or, before
echo-jax 0.3, a schedule that went negative past ``num_epochs``) can instead blow the loss up to millions of
nats with every value finite. `DivergenceGuard` watches each model's training loss at every log period: a loss
above `factor` times the model's best so far is suspect, and suspect at two log periods in a row is divergence.
While any model is suspect the run writes no checkpoint, so the last checkpoint kept is one from before.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DEFAULT_FACTOR = 10.0


class DivergenceGuard:
    """Tracks the best training loss of each model and flags the ones that diverged.

    Args:
      num_models: models watched (the values given to `update` are one per model).
      factor: a loss above ``factor * best`` is suspect (bests at or below 0 are treated as a small positive
        number, so a negative best never makes every later loss suspect).
    """

    def __init__(self, num_models: int, factor: float = DEFAULT_FACTOR):
        self.factor = factor
        self.best = np.full(num_models, np.inf)
        self.suspect = np.zeros(num_models, bool)
        self.last = np.full(num_models, np.nan)  # the losses of the last update (for messages)

    @property
    def any_suspect(self) -> bool:
        """Whether some model's last loss was suspect (the run should not checkpoint now)."""
        return bool(self.suspect.any())

    def above(self, losses: Sequence[float]) -> np.ndarray:
        """Which of `losses` (one per model) are suspect against the bests so far, without recording them."""
        losses = np.asarray(losses, np.float64)
        return np.isfinite(self.best) & (losses > self.factor * np.maximum(self.best, 1e-6))

    def update(self, losses: Sequence[float]) -> list[int]:
        """Records one log period's losses; returns the models that diverged (suspect twice in a row)."""
        losses = np.asarray(losses, np.float64)
        now = self.above(losses)
        diverged = [int(m) for m in np.flatnonzero(now & self.suspect)]
        self.suspect, self.last = now, losses
        self.best = np.where(now, self.best, np.minimum(self.best, losses))
        return diverged

    def state(self) -> dict:
        """What a checkpoint keeps of the guard, so that a resumed run remembers its bests."""
        return {"best": [float(b) if np.isfinite(b) else None for b in self.best]}

    def load(self, state: dict | None) -> None:
        if state and len(state.get("best", ())) == len(self.best):
            self.best = np.asarray([np.inf if b is None else b for b in state["best"]], np.float64)
