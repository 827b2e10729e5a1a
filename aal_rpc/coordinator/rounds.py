"""Staggering the servers' training rounds, so several servers give fresher models (paper §3.2).

More servers help only when their rounds start at different times: the paper's example of three servers
gets a new model after every label because each began its round a label after the one before. Servers
that start together (on the same initial labeled set, or after the same restart) train on the same
labels, publish together and stay in lockstep: m servers then cost m times the compute of one and give
nothing. So before a round a server asks to begin it, and the coordinator answers "wait" when

  (a) the round would repeat work: a published model or another server's round in progress already
      covers at least as many labels; or
  (b) another server began a round less than T/m ago, T being the round time the servers report and m
      the servers training now.

Rule (b) spaces the rounds T/m apart, after which each server can begin its next round as soon as it
finishes the last: a fresh model every T/m. A claim ends when its server publishes, begins another round
or is silent for CLAIM_TTL_FACTOR x T (at least MIN_CLAIM_TTL): a server that died blocks no one for long.
In sync mode only rule (a) applies; rounds there are gated by batches.
"""

from __future__ import annotations

from dataclasses import dataclass

RETRY_SECONDS = 0.5  # how soon to ask again when waiting for new labels (rule a)
MIN_CLAIM_TTL = 60.0
CLAIM_TTL_FACTOR = 3.0
MAX_ROUND_SECONDS = 7 * 24 * 3600.0  # a round-time estimate beyond a week is a bad request


@dataclass(frozen=True)
class RoundClaim:
    server_id: str
    num_labels: int
    started: float  # seconds, on the clock of whoever keeps the claims
    round_seconds: float  # the server's estimate of its round time (its last round); 0 when unknown

    def live(self, now: float) -> bool:
        return now < self.started + max(MIN_CLAIM_TTL, CLAIM_TTL_FACTOR * self.round_seconds)


def decide(claims: list[RoundClaim], *, server_id: str, num_labels: int, round_seconds: float,
           published_labels: int, now: float, sync: bool = False) -> tuple[float, str]:
    """(0, "") to begin the round now, else (seconds to wait before asking again, why)."""
    others = [c for c in claims if c.server_id != server_id and c.live(now)]
    covered = max([published_labels, *(c.num_labels for c in others)])
    if num_labels <= covered:
        return RETRY_SECONDS, f"a model on {covered} labels is published or in training"
    if sync or not others:
        return 0.0, ""
    round_time = max([round_seconds, *(c.round_seconds for c in others)])
    if round_time <= 0:  # nobody has finished a round yet: nothing to space by
        return 0.0, ""
    gap = round_time / (len(others) + 1)
    last_start = max(c.started for c in others)
    if now - last_start < gap:
        return last_start + gap - now, f"spacing rounds {gap:.2f}s apart across {len(others) + 1} servers"
    return 0.0, ""
