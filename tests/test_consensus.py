"""Crowd consensus (aal_rpc.consensus): votes folded from L's records, corrections included; Dawid–Skene against
majority vote on a simulated crowd with careful and careless annotators; gold items; the fallbacks and guards."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import pytest

from aal_rpc.consensus import ItemConsensus, Votes, consensus
from aal_rpc.types import AUDIT_STRATEGY, LabeledRecord, Provenance

CAREFUL, CARELESS = 0.9, 0.3
ACCURACIES = (CAREFUL,) * 4 + (CARELESS,) * 2  # annotators a0..a3 careful, a4 and a5 careless


class Vote(NamedTuple):
    """The fields of a LabeledRecord that Votes reads: light enough for 300,000 of them."""

    seq: int
    item_id: str
    label: int
    annotator_id: str
    supersedes: int = 0


def record(seq: int, item: str, label: int, annotator: str, supersedes: int = 0,
           strategy: str = "margin") -> LabeledRecord:
    return LabeledRecord(seq=seq, item_id=item, label=label, annotator_id=annotator, payload=None,
                         provenance=Provenance(strategy=strategy), queued_at=0.0, leased_at=0.0, labeled_at=0.0,
                         supersedes=supersedes)


def simulated_crowd(seed: int, items: int = 600, classes: int = 4, accuracies=ACCURACIES, per_item: int = 3):
    """Each item labeled by `per_item` distinct annotators drawn at random; an annotator gives the true class with
    their accuracy, otherwise one of the other classes uniformly. Returns (votes, truth, item ids, vote arrays)."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, classes, items)
    accuracies = np.asarray(accuracies)
    who = np.argsort(rng.random((items, len(accuracies))), axis=1)[:, :per_item].ravel()
    item = np.repeat(np.arange(items), per_item)
    right = rng.random(len(who)) < accuracies[who]
    label = np.where(right, truth[item], (truth[item] + rng.integers(1, classes, len(who))) % classes)
    ids = [f"item-{i:06d}" for i in range(items)]
    names = [f"a{j}" for j in range(len(accuracies))]
    votes = Votes()
    votes.extend(map(Vote, range(1, len(who) + 1), [ids[i] for i in item.tolist()], label.tolist(),
                     [names[a] for a in who.tolist()]))
    return votes, truth, ids, (item, who, label)


def accuracy(result, truth, ids) -> float:
    return float(np.mean([result.items[item].label == t for item, t in zip(ids, truth)]))


def realised_accuracy(votes, truth, ids, annotator: str) -> float:
    """The share of an annotator's votes that are right: what their quality estimates."""
    right = [votes.votes_of(item)[annotator] == t for item, t in zip(ids, truth) if annotator in votes.votes_of(item)]
    return float(np.mean(right))


@pytest.mark.parametrize("seed", range(5))
def test_dawid_skene_beats_majority_and_finds_the_careless(seed):
    votes, truth, ids, _ = simulated_crowd(seed)
    ds = consensus(votes, 4)
    majority = consensus(votes, 4, method="majority")
    assert (ds.method, majority.method) == ("dawid-skene", "majority")
    assert accuracy(ds, truth, ids) > accuracy(majority, truth, ids) + 0.01
    assert accuracy(ds, truth, ids) > 0.88
    quality = {a: q.quality for a, q in ds.annotators.items()}
    assert set(sorted(quality, key=quality.get)[:2]) == {"a4", "a5"}
    for a, true_accuracy in zip(["a0", "a1", "a2", "a3", "a4", "a5"], ACCURACIES):
        assert abs(quality[a] - true_accuracy) < 0.1, (a, quality[a])
        assert abs(quality[a] - realised_accuracy(votes, truth, ids, a)) < 0.06, a
    assert sum(q.labels for q in ds.annotators.values()) == 3 * 600
    # agreement describes; the careless agree with the consensus far less than the careful
    assert max(ds.annotators[a].agreement for a in ("a4", "a5")) < 0.5
    assert min(ds.annotators[a].agreement for a in ("a0", "a1", "a2", "a3")) > 0.8


@pytest.mark.parametrize("seed", range(5))
def test_a_confident_consensus_is_mostly_right(seed):
    votes, truth, ids, _ = simulated_crowd(seed)
    ds = consensus(votes, 4)
    confident = [item for item in ids if ds.items[item].confidence >= 0.9]
    assert len(confident) > 300  # a confidence that is never high would pass vacuously
    assert np.mean([ds.items[item].label == truth[ids.index(item)] for item in confident]) >= 0.85
    assert all(0.0 <= c.confidence <= 1.0 for c in ds.items.values())


def careless_error(result, votes, truth, ids, careless=("a4", "a5")) -> float:
    return sum(abs(result.annotators[a].quality - realised_accuracy(votes, truth, ids, a)) for a in careless)


@pytest.mark.parametrize("seed", range(5))
def test_gold_items_are_counted_exactly_and_keep_the_estimate(seed):
    """In a crowd where most items have careful voters, Dawid–Skene's qualities are already within sampling noise
    of the realised accuracies: 5% gold keeps them there (it cannot do much better), and is counted exactly."""
    votes, truth, ids, (item, who, label) = simulated_crowd(seed)
    rng = np.random.default_rng(100 + seed)
    gold_rows = np.flatnonzero(rng.random(len(ids)) < 0.05)
    gold = {ids[i]: int(truth[i]) for i in gold_rows}
    gold["nobody-voted-on-this"] = 1  # an item of its answer alone
    with_gold = consensus(votes, 4, gold=gold)
    without = consensus(votes, 4)
    assert with_gold.items["nobody-voted-on-this"] == ItemConsensus(1, 1.0, {})
    assert careless_error(with_gold, votes, truth, ids) <= careless_error(without, votes, truth, ids) + 0.03
    on_gold = np.isin(item, gold_rows)
    for j in range(6):
        mine = on_gold & (who == j)
        assert with_gold.annotators[f"a{j}"].gold_labels == int(mine.sum())
        assert with_gold.annotators[f"a{j}"].gold_correct == int((label[mine] == truth[item[mine]]).sum())
        assert without.annotators[f"a{j}"].gold_labels == 0
    for i in gold_rows:
        assert (with_gold.items[ids[i]].label, with_gold.items[ids[i]].confidence) == (truth[i], 1.0)


@pytest.mark.parametrize("seed", range(5))
def test_gold_items_tell_a_careful_annotator_from_a_careless_one(seed):
    """Two annotators on every item, one careful and one careless: without known answers nothing says which of the
    two is right when they disagree, and both look alike; 5% gold tells them apart."""
    votes, truth, ids, _ = simulated_crowd(seed, accuracies=(CAREFUL, CARELESS), per_item=2)
    rng = np.random.default_rng(100 + seed)
    gold = {ids[i]: int(truth[i]) for i in np.flatnonzero(rng.random(len(ids)) < 0.05)}
    with_gold = consensus(votes, 4, gold=gold)
    without = consensus(votes, 4)
    assert abs(without.annotators["a0"].quality - without.annotators["a1"].quality) < 0.1
    assert with_gold.annotators["a0"].quality > with_gold.annotators["a1"].quality + 0.2
    assert careless_error(with_gold, votes, truth, ids, ["a1"]) < careless_error(without, votes, truth, ids, ["a1"])
    assert accuracy(with_gold, truth, ids) > accuracy(without, truth, ids) + 0.1


def test_a_gold_answer_overrules_every_voter():
    votes = Votes()
    votes.extend([record(1, "x", 0, "a"), record(2, "x", 0, "b"), record(3, "y", 1, "a"), record(4, "y", 1, "b")])
    for method in ("dawid-skene", "majority"):
        result = consensus(votes, 3, gold={"x": 2}, method=method)
        assert (result.items["x"].label, result.items["x"].confidence) == (2, 1.0)
        assert (result.annotators["a"].gold_labels, result.annotators["a"].gold_correct) == (1, 0)


def test_a_correction_replaces_the_vote_it_supersedes():
    votes = Votes()
    votes.extend([record(1, "x", 0, "ann"), record(2, "x", 2, "ann", supersedes=1)])
    assert votes.votes_of("x") == {"ann": 2}
    assert (len(votes), votes.labels_of("x")) == (1, 1)


def test_a_correction_by_another_annotator_moves_the_vote():
    votes = Votes()
    votes.extend([record(1, "x", 0, "ann"), record(2, "y", 1, "ann"), record(3, "x", 2, "bob", supersedes=1)])
    assert votes.votes_of("x") == {"bob": 2}
    assert votes.votes_of("y") == {"ann": 1}
    assert votes.annotators() == ["ann", "bob"]
    votes.add(record(4, "y", 0, "bob", supersedes=2))
    assert votes.annotators() == ["bob"]  # ann holds no vote any more
    assert consensus(votes, 3).annotators["bob"].labels == 2


def test_the_same_annotator_twice_keeps_one_vote_the_later():
    votes = Votes()
    votes.extend([record(2, "x", 1, "ann"), record(1, "x", 0, "ann")])  # extend folds in seq order
    assert votes.votes_of("x") == {"ann": 1}
    assert votes.labels_of("x") == 1
    # a correction of the first record finds ann's vote replaced already: it only adds the corrector's
    votes.add(record(3, "x", 2, "bob", supersedes=1))
    assert votes.votes_of("x") == {"ann": 1, "bob": 2}


def test_folding_skips_a_record_seen_and_refuses_one_out_of_order():
    votes = Votes()
    votes.add(record(5, "x", 1, "ann", strategy=AUDIT_STRATEGY))  # audit labels are votes like any other
    votes.add(record(5, "x", 1, "ann"))
    assert votes.labels_of("x") == 1
    with pytest.raises(ValueError, match="seq 4"):
        votes.add(record(4, "y", 0, "ann"))
    assert votes.items() == ["x"] and votes.votes_of("missing") == {} and votes.labels_of("missing") == 0


def test_one_annotator_falls_back_to_majority_and_one_vote_is_not_certain():
    votes = Votes()
    votes.extend([record(1, "x", 2, "ann"), record(2, "y", 0, "ann")])
    result = consensus(votes, 4)
    assert result.method == "majority"
    assert result.items["x"].label == 2
    assert result.items["x"].confidence == pytest.approx(2 / 5)  # (1 + 1) / (1 + 4)
    assert result.items["x"].votes == {"ann": 2}
    assert math.isnan(result.annotators["ann"].agreement)  # nobody else labeled the same items
    assert result.annotators["ann"].labels == 2
    # two annotators on different items: still nothing to estimate reliability from
    votes.add(record(3, "z", 1, "bob"))
    assert consensus(votes, 4).method == "majority"


def test_majority_ties_go_to_the_most_practised_annotator_then_the_lowest_class():
    votes = Votes()
    votes.extend([record(1, "tie", 3, "ann"), record(2, "tie", 1, "bob"), record(3, "other", 0, "bob")])
    result = consensus(votes, 4, method="majority")
    assert result.items["tie"].label == 1  # bob has two labels, ann one
    assert result.items["tie"].confidence == pytest.approx(2 / 6)
    level = Votes()
    level.extend([record(1, "tie", 3, "ann"), record(2, "tie", 1, "bob")])
    assert consensus(level, 4, method="majority").items["tie"].label == 1  # equally practised: the lower class


def test_insertion_order_of_unrelated_items_does_not_matter():
    _, _, _, (item, who, label) = simulated_crowd(0, items=200)
    rows = list(zip(item.tolist(), who.tolist(), label.tolist()))
    shuffled = [rows[i] for i in np.random.default_rng(1).permutation(len(rows))]
    results = []
    for order in (rows, shuffled):
        votes = Votes()
        votes.extend(Vote(seq, f"item-{i:06d}", lab, f"a{a}") for seq, (i, a, lab) in enumerate(order, start=1))
        results.append(consensus(votes, 4))
    assert results[0] == results[1]
    assert list(results[0].items) == sorted(results[0].items)


def test_a_label_out_of_range_names_its_record():
    votes = Votes()
    votes.extend([record(1, "x", 0, "ann"), record(2, "x", 1, "bob"), record(3, "y", 4, "bob")])
    with pytest.raises(ValueError, match=r"seq 3 .*'y'.*'bob'.*label 4"):
        consensus(votes, 4)
    negative = Votes()
    negative.add(record(7, "x", -1, "ann"))
    with pytest.raises(ValueError, match="seq 7"):
        consensus(negative, 4, method="majority")
    with pytest.raises(ValueError, match="gold"):
        consensus(votes, 5, gold={"x": 9})
    with pytest.raises(ValueError, match="method"):
        consensus(votes, 5, method="mean")


def test_no_votes_no_consensus():
    result = consensus(Votes(), 3)
    assert (result.items, result.annotators) == ({}, {})


def test_a_hundred_thousand_items_fifty_annotators_ten_classes():
    """The size the module is built for (its time is measured apart, not asserted): 45 careful annotators of
    accuracy 0.75..0.95 and 5 careless ones (0.2), three votes per item."""
    rng = np.random.default_rng(7)
    accuracies = np.r_[rng.uniform(0.75, 0.95, 45), np.full(5, 0.2)]
    votes, truth, ids, _ = simulated_crowd(7, items=100_000, classes=10, accuracies=accuracies)
    assert len(votes) == 100_000 and len(votes.annotators()) == 50
    result = consensus(votes, 10)
    assert result.method == "dawid-skene"
    labels = np.fromiter((result.items[item].label for item in ids), np.int64, len(ids))
    assert np.mean(labels == truth) > 0.9
    quality = np.array([result.annotators[f"a{j}"].quality for j in range(50)])
    assert np.abs(quality - accuracies).max() < 0.05


def test_a_gold_answer_in_l_is_the_items_gold_not_a_vote():
    from aal_rpc.consensus import GOLD_ANNOTATOR
    from aal_rpc.types import GOLD_ANNOTATOR as TYPES_GOLD_ANNOTATOR

    assert GOLD_ANNOTATOR == TYPES_GOLD_ANNOTATOR
    votes = Votes()
    votes.extend([record(1, "g", 2, GOLD_ANNOTATOR), record(2, "g", 2, "careful"), record(3, "g", 0, "careless"),
                  record(4, "h", 1, GOLD_ANNOTATOR)])
    assert votes.gold == {"g": 2, "h": 1} and votes.votes_of("g") == {"careful": 2, "careless": 0}
    agreed = consensus(votes, 3)
    assert agreed.items["g"].label == 2 and agreed.items["g"].confidence == 1.0
    assert agreed.items["h"] == ItemConsensus(1, 1.0, {})
    assert (agreed.annotators["careless"].gold_labels, agreed.annotators["careless"].gold_correct) == (1, 0)
    assert GOLD_ANNOTATOR not in agreed.annotators
