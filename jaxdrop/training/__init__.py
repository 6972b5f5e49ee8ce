"""Training recipes built on dropout: R-Drop, multi-sample dropout and dropout-rate schedules.

The functions that transform weights or activations (``mixout``, ``layer_drop``, ``patch_dropout``) are in
``jaxdrop.functional`` with the other variants; this namespace holds what goes into the loss and the training loop.
"""

from jaxdrop.training._multi_sample import multi_sample_loss
from jaxdrop.training._r_drop import r_drop_loss
from jaxdrop.training._schedules import (
    constant_rate_schedule,
    early_dropout_schedule,
    late_dropout_schedule,
    linear_warmup_rate_schedule,
)

__all__ = [
    "constant_rate_schedule",
    "early_dropout_schedule",
    "late_dropout_schedule",
    "linear_warmup_rate_schedule",
    "multi_sample_loss",
    "r_drop_loss",
]
