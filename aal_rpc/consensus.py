"""Crowd consensus: several annotators' labels of the same item, folded from L's records, turned into one consensus
label per item (with its probability) and a quality figure per annotator, by Dawid–Skene's EM over per-annotator
confusion matrices, with majority vote as its start and its fallback. Pure numpy, below the coordinator and tools.

Dawid, A. P. and Skene, A. M. (1979), "Maximum likelihood estimation of observer error-rates using the EM
algorithm", Applied Statistics 28(1). Known answers (gold items) anchor the estimate as in the crowdsourcing
literature's "gold standard" questions: their posterior is the true label, fixed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from itertools import chain
from operator import attrgetter
from typing import Protocol

import numpy as np

DAWID_SKENE = "dawid-skene"
MAJORITY = "majority"
METHODS = (DAWID_SKENE, MAJORITY)

# Dirichlet pseudo-counts added to every annotator's confusion matrix (row: true class, column: their label). The
# off-diagonal one keeps every cell above zero, so that one vote never vetoes a class outright; the diagonal one
# favours the diagonal a little, worth about one correct answer, so that an annotator with few labels and one
# disagreement among them is not taken for a useless one. Negligible beside a few dozen labels.
OFF_DIAGONAL_PSEUDO = 0.1
DIAGONAL_PSEUDO = 1.0
PRIOR_PSEUDO = 1.0  # per class, added to the class prior's expected counts: no class gets probability zero
RESCALE_EVERY = 8  # votes of one item multiplied between rescalings of its likelihood (Dawid–Skene's E-step)
# A gold item's known answer is a record of L by this annotator (aal-coordinator --gold imports them): `Votes` keeps
# it as the item's gold answer, not as a vote. The same name as types.GOLD_ANNOTATOR (this module imports nothing
# of aal_rpc; tests/test_consensus.py holds the two equal).
GOLD_ANNOTATOR = "gold"


class VoteRecord(Protocol):
    """What `Votes` reads of a record of L (types.LabeledRecord has it all)."""

    @property
    def seq(self) -> int: ...

    @property
    def item_id(self) -> str: ...

    @property
    def label(self) -> int: ...

    @property
    def annotator_id(self) -> str: ...

    @property
    def supersedes(self) -> int: ...


@dataclass(frozen=True)
class ItemConsensus:
    """One item's consensus: the class, its posterior probability under the model of annotator reliability (for
    majority vote, the smoothed share of votes; 1.0 for a gold item, whose label is the known answer), and each
    annotator's current vote on the item."""

    label: int
    confidence: float
    votes: dict[str, int]


@dataclass(frozen=True)
class AnnotatorQuality:
    """How one annotator fares against the consensus.

    labels: items they have a current vote on, gold items included.
    agreement: share of their votes equal to the consensus label, on items with two voters or more (nan: none); on
        such items their own vote is part of the consensus, so this is a description, not an estimate.
    quality: estimated probability that they label an item correctly. Dawid–Skene: the trace of their confusion
        matrix weighted by the class prior; gold answers enter the matrix as certain truths and sharpen it. Majority:
        their smoothed agreement, (matches + 1) / (votes + 2), over their votes on items with two voters or more
        and on gold items (nan: none, nothing to judge them by).
    gold_labels, gold_correct: their votes on gold items, and how many of them are the known answer.
    """

    labels: int
    agreement: float
    quality: float
    gold_labels: int
    gold_correct: int


@dataclass(frozen=True)
class Consensus:
    """Every voted item's consensus and every voting annotator's quality, keyed by sorted id; `method` says which
    estimate made them ("dawid-skene" or "majority", the latter also when Dawid–Skene had nothing to work on)."""

    items: dict[str, ItemConsensus]
    annotators: dict[str, AnnotatorQuality]
    method: str


class Votes:
    """Each annotator's current vote on each item, folded from L's records in seq order.

    A first label (supersedes 0) sets its annotator's vote on the item; the same annotator labeling the item again
    replaces their vote (the later record wins). A correction (supersedes s) removes the vote that record s gave,
    if its annotator still holds that vote from it (a later record of theirs may have replaced it already), and
    sets the corrector's vote on the item: a correction by another annotator moves the vote, one by the same
    annotator changes it. A correction of a record never seen (filtered out by the caller) only sets the vote.
    Every record counts, audit ones included: the caller filters what it wants.

    Records must come in increasing seq; one whose seq was folded already is skipped (a follower of L may see a
    record twice), one older than the newest folded raises ValueError, since folding it late would misorder the
    "later record wins" rule. `extend` sorts its batch first.
    """

    def __init__(self) -> None:
        self._votes: dict[str, dict[str, int]] = {}  # item -> annotator -> current label
        self._seq: dict[tuple[str, str], int] = {}  # (item, annotator) -> seq of the record that gave the vote
        self._by_seq: dict[int, tuple[str, str]] = {}  # seq -> (item, annotator) of every record folded
        self._per_annotator: dict[str, int] = {}  # annotator -> items they hold a current vote on
        self._last_seq: int | None = None
        self.gold: dict[str, int] = {}  # item -> its known answer (a record by GOLD_ANNOTATOR): consensus' `gold`

    def add(self, record: VoteRecord) -> None:
        seq = int(record.seq)
        by_seq = self._by_seq
        if seq in by_seq:
            return
        if self._last_seq is not None and seq < self._last_seq:
            raise ValueError(f"record seq {seq} (item {record.item_id!r}) comes after seq {self._last_seq}: "
                             "votes fold in seq order")
        self._last_seq = seq
        if record.annotator_id == GOLD_ANNOTATOR:
            self.gold[record.item_id] = int(record.label)
            return
        item, annotator = key = (record.item_id, record.annotator_id)
        by_seq[seq] = key
        superseded = record.supersedes
        old = by_seq.get(superseded) if superseded else None
        if old is not None and self._seq.get(old) == superseded:  # its annotator still holds that vote
            self._drop(old)
        votes = self._votes.get(item)
        if votes is None:
            votes = self._votes[item] = {}
        if annotator not in votes:
            self._per_annotator[annotator] = self._per_annotator.get(annotator, 0) + 1
        votes[annotator] = int(record.label)
        self._seq[key] = seq

    def _drop(self, key: tuple[str, str]) -> None:
        item, annotator = key
        del self._seq[key]
        votes = self._votes[item]
        del votes[annotator]
        if not votes:
            del self._votes[item]
        self._per_annotator[annotator] -= 1
        if not self._per_annotator[annotator]:
            del self._per_annotator[annotator]

    def extend(self, records: Iterable[VoteRecord]) -> None:
        for record in sorted(records, key=attrgetter("seq")):
            self.add(record)

    def __len__(self) -> int:
        """Items with at least one current vote."""
        return len(self._votes)

    def items(self) -> list[str]:
        """The ids of the items with at least one current vote, sorted."""
        return sorted(self._votes)

    def annotators(self) -> list[str]:
        """The ids of the annotators with at least one current vote, sorted."""
        return sorted(self._per_annotator)

    def votes_of(self, item_id: str) -> dict[str, int]:
        """Annotator -> current label of the item, by sorted annotator id ({} for an item without votes)."""
        votes = self._votes.get(item_id, {})
        return {a: votes[a] for a in sorted(votes)}

    def labels_of(self, item_id: str) -> int:
        """How many current votes the item has."""
        return len(self._votes.get(item_id, {}))


@dataclass(frozen=True)
class _Encoded:
    """The votes as flat arrays, one entry per vote, sorted by item then annotator (ids sorted): what both methods
    compute on, independent of the order in which records of unrelated items arrived."""

    items: list[str]
    annotators: list[str]
    sizes: np.ndarray  # votes per item
    item: np.ndarray  # item index of each vote (non-decreasing)
    annotator: np.ndarray  # annotator index of each vote
    label: np.ndarray  # the vote
    votes: list[dict[str, int]]  # per item, annotator -> label (fresh dicts for ItemConsensus)


def _encode(votes: Votes, num_classes: int) -> _Encoded:
    items = votes.items()
    annotators = votes.annotators()
    index = {a: j for j, a in enumerate(annotators)}
    shown = [dict(sorted(held.items())) for held in map(votes._votes.__getitem__, items)]
    sizes = np.fromiter(map(len, shown), np.int64, len(items))
    total = int(sizes.sum())
    try:
        labels = np.fromiter(chain.from_iterable(map(dict.values, shown)), np.int64, total)
    except OverflowError:
        labels = np.full(total, -1, np.int64)  # a label beyond int64: found and named below
    if labels.min() < 0 or labels.max() >= num_classes:
        _raise_out_of_range(votes, items, num_classes)
    return _Encoded(items=items, annotators=annotators, sizes=sizes,
                    item=np.repeat(np.arange(len(items), dtype=np.int64), sizes),
                    annotator=np.fromiter(map(index.__getitem__, chain.from_iterable(shown)), np.int64, total),
                    label=labels, votes=shown)


def _raise_out_of_range(votes: Votes, items: list[str], num_classes: int) -> None:
    """Name the first record (in sorted item and annotator order) whose label is outside [0, num_classes)."""
    for item in items:
        held = votes._votes[item]
        for annotator in sorted(held):
            if not 0 <= held[annotator] < num_classes:
                raise ValueError(f"record seq {votes._seq[item, annotator]} (item {item!r}, annotator "
                                 f"{annotator!r}) has label {held[annotator]}, outside [0, {num_classes})")


def _majority(enc: _Encoded, num_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Majority vote: (vote counts per item and class, winning class, smoothed share of the winner).

    Ties go to the class voted by the annotator with the most labels among the tied classes' voters, then to the
    lowest class index: deterministic, and leaning on whoever has the most practice with the task."""
    n, k = len(enc.items), num_classes
    cell = enc.item * k + enc.label
    counts = np.bincount(cell, minlength=n * k).reshape(n, k)
    practice = np.bincount(enc.annotator, minlength=len(enc.annotators))
    most = np.zeros(n * k, np.int64)
    np.maximum.at(most, cell, practice[enc.annotator])
    score = counts * (int(practice.max()) + 1) + most.reshape(n, k)
    winner = np.argmax(score, axis=1)  # first maximum: the lowest class
    n_win = counts[np.arange(n), winner]
    return counts, winner, (n_win + 1) / (counts.sum(axis=1) + k)


@dataclass(frozen=True)
class _Slots:
    """The votes laid out for EM without gathers: items reordered by decreasing vote count (`order`: internal
    position -> item index), so that the items with more than j votes are a prefix of length len(groups[j]);
    groups[j] holds, for each of them, the (annotator * num_classes + label) of its j-th vote, and cells[j] the
    same times num_classes plus each true class, flattened: the bincount cells of the M-step's table."""

    order: np.ndarray
    groups: list[np.ndarray]
    cells: list[np.ndarray]


def _slots(enc: _Encoded, num_classes: int) -> _Slots:
    n, k = len(enc.items), num_classes
    order = np.argsort(-enc.sizes, kind="stable")
    position = np.empty(n, np.int64)
    position[order] = np.arange(n)
    rank = np.arange(len(enc.item)) - np.repeat(np.cumsum(enc.sizes) - enc.sizes, enc.sizes)  # j: j-th vote
    group = (enc.annotator * k + enc.label)[np.argsort(rank * n + position[enc.item], kind="stable")]
    bounds = np.r_[0, np.cumsum(np.bincount(rank))]
    groups = [group[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    return _Slots(order, groups, [(g[:, None] * k + np.arange(k)).ravel() for g in groups])


def _dawid_skene(enc: _Encoded, num_classes: int, counts: np.ndarray, gold_rows: np.ndarray,
                 gold_labels: np.ndarray, iterations: int, tol: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dawid–Skene EM from the majority's vote shares: (posteriors per item and class, class prior, confusion
    matrices [annotator, true class, label], rows summing to 1). Gold rows stay one-hot throughout.

    Vectorised over the votes' slots (_Slots): the M-step is one bincount per slot of the prefix of posteriors,
    the E-step one np.take of likelihood rows per slot multiplied onto the prefix; no per-vote gather of
    posteriors, no per-item reduction over votes and no log or exp of a posterior: about 20 ms a round for
    100,000 items x 50 annotators x 10 classes x 3 votes. The E-step multiplies probabilities rather than adding
    logs: each vote's likelihood row is scaled to a maximum of 1 (the posterior does not change), so its entries
    are at least OFF_DIAGONAL_PSEUDO over the annotator's votes plus the row's pseudo-counts, above 1e-9 below 1e8
    votes; RESCALE_EVERY such factors and the prior stay far above the smallest float64 before the rescaling."""
    n, k, m = len(enc.items), num_classes, len(enc.annotators)
    slots = _slots(enc, k)
    gold_at = np.argsort(slots.order)[gold_rows]  # internal positions of the gold items
    one_hot = np.eye(k)[gold_labels]
    posterior = counts[slots.order] / enc.sizes[slots.order, None]
    posterior[gold_at] = one_hot
    smoothing = np.full((k, k), OFF_DIAGONAL_PSEUDO) + np.eye(k) * (DIAGONAL_PSEUDO - OFF_DIAGONAL_PSEUDO)
    change = np.empty_like(posterior)
    for _ in range(max(1, iterations)):
        # M-step: the class prior and each annotator's expected (label, true class) counts, smoothed
        prior = (posterior.sum(axis=0) + PRIOR_PSEUDO) / (n + k * PRIOR_PSEUDO)
        table = sum(np.bincount(cells, weights=posterior[:len(group)].ravel(), minlength=m * k * k)
                    for group, cells in zip(slots.groups, slots.cells))
        confusion = np.asarray(table).reshape(m, k, k).transpose(0, 2, 1) + smoothing  # [annotator, true, label]
        confusion /= confusion.sum(axis=2, keepdims=True)
        # E-step: the prior times the likelihood of each item's votes under each true class, normalised
        likelihood = confusion.transpose(0, 2, 1).reshape(m * k, k)  # row: annotator * k + label
        likelihood = likelihood / likelihood.max(axis=1, keepdims=True)
        updated = np.take(likelihood, slots.groups[0], axis=0)
        for j, group in enumerate(slots.groups[1:], start=1):
            updated[:len(group)] *= np.take(likelihood, group, axis=0)
            if j % RESCALE_EVERY == 0:
                updated[:len(group)] /= updated[:len(group)].max(axis=1, keepdims=True)
        updated *= prior
        updated /= updated.sum(axis=1, keepdims=True)
        updated[gold_at] = one_hot
        np.subtract(updated, posterior, out=change)
        moved = float(np.abs(change, out=change).max())
        posterior = updated
        if moved < tol:
            break
    return posterior[np.argsort(slots.order)], prior, confusion


def consensus(votes: Votes, num_classes: int, *, gold: dict[str, int] | None = None, method: str = DAWID_SKENE,
              iterations: int = 50, tol: float = 1e-6) -> Consensus:
    """The consensus label of every voted item and the quality of every voting annotator.

    method "dawid-skene" runs EM (at most `iterations` rounds, until no posterior moves by `tol` or more) from the
    majority vote; it falls back to "majority" when there is nothing to estimate reliability from: no item with two
    voters and no voted gold item. `gold` maps item ids to known answers (default: the gold answers among the
    votes' records, `Votes.gold`): those items' consensus is the answer with confidence 1.0, and they anchor the
    confusion matrices; a gold item nobody voted on yet is in `items` with its answer and no votes.

    Majority ties go to the class voted by the annotator with the most labels among the tied classes' voters, then
    to the lowest class; Dawid–Skene's to the lowest class. Ids are sorted before anything is computed, so the
    result depends on the votes only, not on the order in which unrelated items' records came.

    A label outside [0, num_classes) raises ValueError naming its record (callers pass validated data: a guard), as
    does a gold answer outside it or an unknown method.
    """
    if method not in METHODS:
        raise ValueError(f"unknown consensus method {method!r}: one of {', '.join(METHODS)}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, not {num_classes}")
    gold = votes.gold if gold is None else gold
    unvoted = {item: ItemConsensus(int(answer), 1.0, {}) for item, answer in gold.items() if not votes.labels_of(item)}
    for item, c in unvoted.items():
        if not 0 <= c.label < num_classes:
            raise ValueError(f"gold answer {c.label} of item {item!r} is outside [0, {num_classes})")
    if not len(votes):
        return Consensus(dict(sorted(unvoted.items())), {}, method)
    enc = _encode(votes, num_classes)
    n, k, m = len(enc.items), num_classes, len(enc.annotators)
    position = {item: i for i, item in enumerate(enc.items)}
    known = sorted((position[item], int(answer), item) for item, answer in gold.items() if item in position)
    for _, answer, item in known:
        if not 0 <= answer < k:
            raise ValueError(f"gold answer {answer} of item {item!r} is outside [0, {k})")
    gold_rows = np.asarray([row for row, _, _ in known], np.int64)
    gold_labels = np.asarray([answer for _, answer, _ in known], np.int64)
    is_gold = np.zeros(n, bool)
    is_gold[gold_rows] = True
    truth = np.full(n, -1, np.int64)
    truth[gold_rows] = gold_labels

    counts, label, confidence = _majority(enc, k)
    voters = counts.sum(axis=1)
    shared = voters[enc.item] >= 2  # each vote: is its item voted on by someone else too?
    if method == DAWID_SKENE and not shared.any() and not len(gold_rows):
        method = MAJORITY
    if method == DAWID_SKENE:
        posterior, prior, confusion = _dawid_skene(enc, k, counts, gold_rows, gold_labels, iterations, tol)
        label = np.argmax(posterior, axis=1)
        confidence = np.minimum(posterior[np.arange(n), label], 1.0)
        quality = (confusion[:, np.arange(k), np.arange(k)] * prior).sum(axis=1)
    label[gold_rows] = gold_labels
    confidence = np.asarray(confidence, float)
    confidence[gold_rows] = 1.0

    matches = enc.label == label[enc.item]
    shared_votes = np.bincount(enc.annotator[shared], minlength=m)
    shared_matches = np.bincount(enc.annotator[shared], weights=matches[shared], minlength=m)
    agreement = np.where(shared_votes > 0, shared_matches / np.maximum(shared_votes, 1), np.nan)
    on_gold = is_gold[enc.item]
    gold_votes = np.bincount(enc.annotator[on_gold], minlength=m)
    gold_correct = np.bincount(enc.annotator[on_gold], weights=enc.label[on_gold] == truth[enc.item[on_gold]],
                               minlength=m)
    if method == MAJORITY:
        checked = shared | on_gold
        checked_votes = np.bincount(enc.annotator[checked], minlength=m)
        quality = np.where(checked_votes > 0, (np.bincount(enc.annotator[checked], weights=matches[checked],
                                                           minlength=m) + 1) / (checked_votes + 2), np.nan)
    per_annotator = np.bincount(enc.annotator, minlength=m)

    items = dict(sorted({**unvoted, **dict(zip(enc.items, map(ItemConsensus, label.tolist(), confidence.tolist(),
                                                              enc.votes)))}.items()))
    annotators = {a: AnnotatorQuality(labels=int(per_annotator[j]), agreement=float(agreement[j]),
                                      quality=float(quality[j]), gold_labels=int(gold_votes[j]),
                                      gold_correct=int(gold_correct[j]))
                  for j, a in enumerate(enc.annotators)}
    return Consensus(items, annotators, method)
