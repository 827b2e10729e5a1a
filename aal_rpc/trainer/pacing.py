"""How long a training round is: it follows how fast labels arrive.

Active learning happens only once a model exists, and a model is worth most while it is fresh. A round of the full
recipe (600 optimizer steps, tens of seconds on 28x28 inputs on a laptop's cores) on the first 20 labels means
every label until it ends is a random pick; a round that outlasts the time L takes to grow by a round's worth of
labels hands the selectors a model that is stale when it lands. So a round takes the least of:

- the full round: the recipe's epochs and least steps (`TrainerConfig.epochs`, `min_steps`), a quarter of them
  for a warm start. This is what a round is when there is time: when labels come slowly, or have stopped;
- STEPS_PER_LABEL steps a label: a few labels need few steps to fit (20 labels: 60 steps, 60 passes over them),
  and rounds grow with L until the full round;
- the steps that fit in the time annotators take to grow L by the trainer's `min_growth` (the next round's
  trigger), at the current label rate (measures.LabelRate) and the last round's seconds per step;

and never fewer than MIN_STEPS (nor more than the full round). The first model therefore exists within seconds of
the first labels, and later models keep up with the people labeling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

STEPS_PER_LABEL = 3  # steps a label while L is small: the full round (600 steps) from 200 labels on
MIN_STEPS = 30  # no round takes fewer steps than this (nor more than the full round)


@dataclass(frozen=True)
class RoundBudget:
    """A round's optimizer steps and the rule that bound them (for the log and the model's metrics)."""

    steps: int
    bound: str  # "full", "labels" or "pace"


def full_steps(n_labels: int, *, epochs: int, min_steps: int, batch_size: int) -> int:
    """Steps of a full round on `n_labels` labels: `epochs` passes, repeated until `min_steps` (as `train` does)."""
    return max(epochs * max(1, math.ceil(n_labels / batch_size)), min_steps)


def round_steps(n_labels: int, *, full: int, label_rate: float | None = None, step_seconds: float | None = None,
                growth: float = 0.2) -> RoundBudget:
    """The steps of a round on `n_labels` labels whose full round is `full` steps.

    `label_rate` (labels per second, None while unknown or when labels have stopped) and `step_seconds` (the
    last round's, None before one) bound the round by the pace; without either, only by the labels.
    """
    bounds = {"full": full, "labels": STEPS_PER_LABEL * n_labels}
    if label_rate and step_seconds:
        seconds = max(1.0, growth * n_labels) / label_rate  # until L has grown enough for the next round
        bounds["pace"] = int(seconds / step_seconds)
    bound = min(bounds, key=bounds.__getitem__)
    if bounds[bound] >= full or full <= MIN_STEPS:
        return RoundBudget(full, "full")
    return RoundBudget(max(MIN_STEPS, bounds[bound]), bound)
