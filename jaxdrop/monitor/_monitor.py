"""`DriftMonitor`: watches a stream of MC-dropout uncertainty scores for a change from a reference window.

The decision is host-side (it compares a few numbers per window with a threshold); the per-window statistic is
`jaxdrop.monitor.window_update`, a jitted ``O(batch log R)`` update with fixed memory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxdrop import _checks
from jaxdrop import uncertainty as _uncertainty
from jaxdrop.monitor import _window
from jaxdrop.uncertainty import _inputs

BUDGETS = ("alpha-spending", "bonferroni")
SCORES: dict[str, Callable[..., jax.Array]] = {
    "mutual_information": _uncertainty.mutual_information,
    "entropy": lambda sample_probs: _uncertainty.predictive_entropy(sample_probs.mean(0)),
}


class WindowReport(NamedTuple):
    """One closed window.

    Attributes:
      window: the window's index in the stream (0 for the first after the reference).
      score: the mean score of its inputs.
      statistic: the standardised Mann-Whitney ``z`` against the reference.
      p_value: its p-value (the `DriftMonitor`'s ``alternative``).
      threshold: the significance level this window was tested at (its share of ``alpha``).
      alarm: ``p_value <= threshold``.
    """

    window: int
    score: float
    statistic: float
    p_value: float
    threshold: float
    alarm: bool


def window_threshold(
    window: int, alpha: float, budget: str = "alpha-spending", num_windows: int | None = None
) -> float:
    """The significance level of window ``window`` (0-based) under a false-alarm budget ``alpha``.

    ``"alpha-spending"``: ``alpha / ((i + 1)(i + 2))``, a series that sums to ``alpha`` over an unbounded stream;
    ``"bonferroni"``: ``alpha / num_windows`` for each of a known number of windows. Either way the union bound gives
    P(any false alarm over the stream) <= ``alpha`` when the stream does not change, whatever the dependence between
    windows (they share the reference).
    """
    if budget == "bonferroni":
        if num_windows is None:
            raise ValueError("`num_windows` is required with `budget`='bonferroni' (alpha is split over them).")
        return alpha / num_windows
    return alpha / ((window + 1) * (window + 2))


class DriftMonitor:
    """Flags windows of a stream whose uncertainty differs from a reference window, with a bounded false-alarm rate.

    **The detector.** Each window of ``window_size`` inputs is compared with the reference by a one-sided
    Mann-Whitney rank test (Mann & Whitney 1947), and the windows share a false-alarm budget ``alpha``
    (alpha-spending by default: window ``i`` is tested at ``alpha / ((i + 1)(i + 2))``). Why this default rather
    than CUSUM with a threshold calibrated on the reference: a rank test needs no model of the score's distribution
    (MC entropies and mutual informations are bounded, skewed, and pile up at 0; a user score can be anything) and no
    calibration run; its guarantee, P(any false alarm on an unchanged stream) <= ``alpha``, holds for any
    exchangeable stream, over an unbounded horizon, by the union bound; and it needs fixed memory: the sorted
    reference and three numbers per window (`window_update`). The price: the later a change, the smaller its
    window's share of ``alpha``, so a change late in a long stream needs a larger shift to be flagged; with a known
    number of windows, ``budget="bonferroni"`` spreads ``alpha`` evenly instead.

    Alarms are reported, not acted on: after an alarm the monitor keeps testing against the same reference.

    Args:
      reference: the reference window: ``(R,)`` scores, or MC samples ``(T, R, num_classes)`` when ``score`` is a
        name or a callable. ``R >= window_size``.
      window_size: inputs per tested window (static), ``>= 1``; tens or more keep the normal approximation honest.
      alpha: the false-alarm budget of the whole stream, in ``(0, 1)``.
      score: None (``reference`` and `update`'s input are scores already), ``"mutual_information"``,
        ``"entropy"`` (predictive entropy of the MC mean), or a callable from MC samples to ``(batch,)`` scores.
      budget: ``"alpha-spending"`` (default, unbounded stream) or ``"bonferroni"`` (needs ``num_windows``).
      num_windows: the number of windows the ``"bonferroni"`` budget is split over; a window beyond it raises.
      alternative: ``"greater"`` (default: more uncertain than the reference), ``"less"`` or ``"two-sided"``.

    Raises:
      ValueError, TypeError: ``alpha`` outside (0, 1); ``window_size`` not a positive int; a reference shorter than
        ``window_size`` or not finite; an unknown ``score``, ``budget`` or ``alternative``; ``"bonferroni"``
        without ``num_windows``.
    """

    def __init__(
        self,
        reference: jax.typing.ArrayLike,
        *,
        window_size: int,
        alpha: float = 0.05,
        score: str | Callable[..., Any] | None = None,
        budget: str = "alpha-spending",
        num_windows: int | None = None,
        alternative: str = "greater",
    ):
        self.window_size = _checks.positive_int(window_size, "window_size")
        self.alpha = float(_checks.probability(alpha, "alpha", open_interval=True))
        if score is not None and not callable(score):
            score = _checks.choice(score, tuple(SCORES), "score")
        self.score = score
        self.budget = _checks.choice(budget, BUDGETS, "budget")
        if self.budget == "bonferroni":
            if num_windows is None:
                raise ValueError("`num_windows` is required with `budget`='bonferroni' (alpha is split over them).")
            num_windows = _checks.positive_int(num_windows, "num_windows")
        self.num_windows = num_windows
        self.alternative = _checks.choice(alternative, _window.ALTERNATIVES, "alternative")
        values = self._scores(reference, "reference")
        if values.shape[0] < self.window_size:
            raise ValueError(
                f"`reference` must hold at least `window_size`={self.window_size} scores (the reference window may not "
                f"be shorter than the test window); got {values.shape[0]}."
            )
        self.reference = jnp.sort(values)
        self.stats = _window.window_init()
        self.windows: list[WindowReport] = []

    @property
    def alarms(self) -> list[WindowReport]:
        """The windows that raised an alarm so far."""
        return [w for w in self.windows if w.alarm]

    def _scores(self, values: Any, name: str) -> jax.Array:
        if self.score is None:
            scores = _inputs.vector(_checks.floating_array(values, name), name, allow_empty=name != "reference")
        else:
            function = self.score if callable(self.score) else SCORES[self.score]
            if not callable(self.score):
                values, _ = _inputs.sample_probabilities(values, None, name)
            scores = _inputs.vector(jnp.asarray(function(values)), f"{name} scores", allow_empty=name != "reference")
        _inputs.finite(scores, name)
        return scores.astype(jnp.float32)

    def update(self, values: jax.typing.ArrayLike) -> list[WindowReport]:
        """Feeds the next inputs of the stream (any number, in stream order).

        The ranks of the whole batch against the reference are one jitted call; the windows it closes are then
        summed and tested on the host (a few float64 numbers per window).

        Args:
          values: ``(batch,)`` scores, or MC samples ``(T, batch, num_classes)`` when the monitor has a ``score``.

        Returns:
          The reports of the windows this batch closed that raised an alarm (empty most of the time); every closed
          window is appended to ``windows``.

        Raises:
          ValueError: non-finite scores; a window beyond ``num_windows`` under ``"bonferroni"``.
        """
        scores = self._scores(values, "values")
        if scores.shape[0] == 0:
            return []
        ranks = np.asarray(_window.jitted_ranks(self.reference, scores), np.float64)
        scores_host = np.asarray(scores, np.float64)
        closed: list[WindowReport] = []
        count, rank_sum, score_sum = int(self.stats.num_scores), float(self.stats.rank_sum), float(self.stats.score_sum)
        position = 0
        while position < ranks.shape[0]:
            part = slice(position, position + self.window_size - count)
            count += ranks[part].shape[0]
            rank_sum += float(ranks[part].sum())
            score_sum += float(scores_host[part].sum())
            position = part.stop
            if count == self.window_size:
                closed.append(self._close(rank_sum, score_sum))
                count, rank_sum, score_sum = 0, 0.0, 0.0
        self.stats = _window.WindowStats(
            jnp.asarray(count, jnp.int32), jnp.asarray(rank_sum, jnp.float32), jnp.asarray(score_sum, jnp.float32)
        )
        return [w for w in closed if w.alarm]

    def _close(self, rank_sum: float, score_sum: float) -> WindowReport:
        index = len(self.windows)
        if self.budget == "bonferroni" and index >= (self.num_windows or 0):
            raise ValueError(
                f"window {index} is beyond `num_windows`={self.num_windows}: the Bonferroni budget is spent. Use "
                f"`budget`='alpha-spending' for an unbounded stream."
            )
        z = _window.standardised(rank_sum, self.window_size, self.reference.shape[0])
        p = _window.p_value(z, self.alternative)
        threshold = window_threshold(index, self.alpha, self.budget, self.num_windows)
        report = WindowReport(index, score_sum / self.window_size, z, p, threshold, p <= threshold)
        self.windows.append(report)
        return report


def first_alarm(windows: list[WindowReport]) -> int | None:
    """The index of the first window that raised an alarm, or None."""
    return next((w.window for w in windows if w.alarm), None)
