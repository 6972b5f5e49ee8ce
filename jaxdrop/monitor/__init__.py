"""Monitoring a deployed model's stream with MC-dropout uncertainty: drift and out-of-distribution inputs.

- `DriftMonitor`: scores (mutual information, entropy or a user score) over windows of the stream, each window
  compared with a reference window by a one-sided Mann-Whitney rank test, the windows sharing a false-alarm budget
  ``alpha`` (alpha-spending; Bonferroni over a known number of windows). Alarms are `WindowReport`s with the
  window index, the mean score, the statistic and the p-value; `first_alarm()` finds the first.
- The per-window statistic, usable on its own inside ``jit`` or ``scan``: `window_init()`, `window_update()`
  (fixed memory: three numbers per window and the sorted reference), `window_test()`; `window_threshold()` is the
  budget's share of each window.

No Flax import; the decisions are host-side, the statistics are jitted.
"""

from jaxdrop.monitor._monitor import DriftMonitor, WindowReport, first_alarm, window_threshold
from jaxdrop.monitor._window import WindowStats, window_init, window_test, window_update

__all__ = [
    "DriftMonitor",
    "WindowReport",
    "WindowStats",
    "first_alarm",
    "window_init",
    "window_test",
    "window_threshold",
    "window_update",
]
