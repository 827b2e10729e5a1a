"""Staggered training rounds: the policy (rounds.decide) and the requests refused; both coordinators keeping claims
is in the behavioural suite (test_coordinator_contract.py)."""

import math

import pytest

from aal_rpc.coordinator.rounds import MIN_CLAIM_TTL, RETRY_SECONDS, RoundClaim, decide
from aal_rpc.errors import InvalidArgument


def ask(claims, server="a", labels=20, round_seconds=0.0, published=0, now=100.0, sync=False):
    return decide(claims, server_id=server, num_labels=labels, round_seconds=round_seconds,
                  published_labels=published, now=now, sync=sync)


def test_a_lone_server_begins_whenever_it_has_new_labels():
    assert ask([]) == (0.0, "")
    assert ask([RoundClaim("a", 19, 99.0, 3.0)]) == (0.0, "")  # its own earlier claim does not block it


def test_a_round_that_repeats_a_published_or_running_one_waits_for_new_labels():
    assert ask([], labels=20, published=20) == (RETRY_SECONDS, "a model on 20 labels is published or in training")
    wait, why = ask([RoundClaim("b", 20, 99.9, 0.0)], labels=20)
    assert wait == RETRY_SECONDS and "20 labels" in why
    assert ask([RoundClaim("b", 20, 99.9, 0.0)], labels=21) == (0.0, "")  # nothing to space by yet


def test_rounds_are_spaced_by_round_time_over_servers():
    b = RoundClaim("b", 20, 99.0, 3.0)  # began 1 s ago; rounds take 3 s; two servers: 1.5 s apart
    wait, why = ask([b], labels=25, round_seconds=3.0)
    assert math.isclose(wait, 0.5) and "1.50s apart across 2 servers" in why
    assert ask([b], labels=25, round_seconds=3.0, now=100.5) == (0.0, "")
    c = RoundClaim("c", 22, 99.5, 3.0)  # three servers: 1 s apart, the last began 0.5 s ago
    assert math.isclose(ask([b, c], labels=25, round_seconds=3.0)[0], 0.5)
    assert ask([b], labels=25, round_seconds=3.0, sync=True) == (0.0, "")  # sync rounds are gated by batches


def test_claims_of_silent_servers_expire():
    dead = RoundClaim("b", 50, 0.0, 1.0)
    assert not dead.live(MIN_CLAIM_TTL) and dead.live(MIN_CLAIM_TTL - 1)
    assert ask([dead], labels=20, now=MIN_CLAIM_TTL + 1) == (0.0, "")
    assert RoundClaim("b", 50, 0.0, 100.0).live(250.0)  # three round times when rounds are long


@pytest.mark.parametrize("server_id, labels, seconds", [("", 1, 0.0), ("a", -1, 0.0), ("a", 1, -1.0),
                                                         ("a", 1, float("nan")), ("a\x00", 1, 0.0)])
def test_bad_round_requests_are_invalid(make_coordinator, server_id, labels, seconds):
    c = make_coordinator()
    with pytest.raises(InvalidArgument):
        c.begin_round(server_id=server_id, num_labels=labels, round_seconds=seconds)
