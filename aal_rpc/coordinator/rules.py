"""The rules of the query pool S, each written once and applied by both backends.

The embedded store applies them to its pool in memory (query_pool.py), the PostgreSQL store inside its
transactions (postgres_store.py); neither decides anything for itself. What lives here: the pick orders and the
eviction order (one definition gives both the in-memory sort key and the SQL ORDER BY), the offer rule (dedup
against L and skips, refresh by a newer version, capacity with stalest-first eviction), the demand share, and
the lease check. The shard key is types.shard_key; the round claims are rounds.decide; corrections are
corrections.decide.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from aal_rpc.errors import FailedPrecondition, NotFound, ResourceExhausted
from aal_rpc.types import AUDIT_STRATEGY, GOLD_STRATEGY, RELABEL_STRATEGY, Candidate


# -- orders ---------------------------------------------------------------------------------------------------


# Terms an order can sort on, each as its value in memory and as its SQL expression over S's columns (a candidate's
# model version, score, strategy, and how many labels its item already has). "audit" is 1 for an audit item
# (types.AUDIT_STRATEGY): the selectors submit those at the audit share of their shard's labels, and serving them
# first keeps that share of labels uniform random, whatever the strategy scores. "partly_labeled" is 1 for an item
# that is owed labels (`owed`): finishing it comes before starting another.
def owed(labels: int, strategy: str) -> bool:
    """Is an item in S owed labels of its quota (labels_per_item > 1): it has some of them, and it is not there for
    one more by adaptive re-labeling (RELABEL_STRATEGY), which competes by its score, nor a gold item (served apart:
    GOLD_STRATEGY)? OWED_SQL is the same test."""
    return labels > 0 and strategy not in (RELABEL_STRATEGY, GOLD_STRATEGY)


OWED_SQL = f"(labels > 0 AND strategy NOT IN ('{RELABEL_STRATEGY}', '{GOLD_STRATEGY}'))"


def evictable(labels: int, strategy: str) -> bool:
    """May an available candidate make room for a fresher one (STALEST)? Not when it is owed labels, nor a gold
    item. EVICTABLE_SQL is the same test."""
    return not owed(labels, strategy) and strategy != GOLD_STRATEGY


EVICTABLE_SQL = f"(NOT {OWED_SQL} AND strategy <> '{GOLD_STRATEGY}')"

TERMS: dict[str, tuple[Callable[[int, float, str, int], float], str]] = {
    "audit": (lambda version, score, strategy, labels: float(strategy == AUDIT_STRATEGY),
              f"(strategy = '{AUDIT_STRATEGY}')"),
    "partly_labeled": (lambda version, score, strategy, labels: float(owed(labels, strategy)), OWED_SQL),
    "model_version": (lambda version, score, strategy, labels: version, "model_version"),
    "score": (lambda version, score, strategy, labels: score, "score"),
}


@dataclass(frozen=True)
class Order:
    """A lexicographic order over TERMS, each ascending or descending.

    `key` sorts candidates in memory (smallest first, as heapq and sorted take them); `sql` is the same order as
    an ORDER BY clause over S's columns, so the two backends cannot drift apart.
    """

    terms: tuple[tuple[str, bool], ...]  # (term, descending)

    def key(self, model_version: int, score: float, strategy: str = "", labels: int = 0) -> tuple:
        values = (TERMS[t][0](model_version, score, strategy, labels) for t, _ in self.terms)
        return tuple(-v if desc else v for v, (_, desc) in zip(values, self.terms))

    def sql(self) -> str:
        return ", ".join(f"{TERMS[t][1]} {'DESC' if desc else 'ASC'}" for t, desc in self.terms)


RANDOM = None  # the "random" pick order: a uniform choice among the available candidates (audit items included)
AUDIT_FIRST = ("audit", True)
PARTLY_LABELED_FIRST = ("partly_labeled", True)
PICK_ORDERS: dict[str, Order | None] = {
    # the newest model's choices, best first
    "fresh": Order((AUDIT_FIRST, PARTLY_LABELED_FIRST, ("model_version", True), ("score", True))),
    "score": Order((AUDIT_FIRST, PARTLY_LABELED_FIRST, ("score", True))),  # the best score, whichever model gave it
    "random": RANDOM,  # as in the paper
}
# Who makes room first when S is full, among the available candidates not `owed` labels: an item owed some
# (labels_per_item > 1) is never evicted, or its first labels would never get company.
STALEST = Order((("model_version", False), ("score", False)))


def pick_order(name: str) -> Order | None:
    if name not in PICK_ORDERS:
        raise ValueError(f"pick must be one of {tuple(PICK_ORDERS)}, got {name!r}")
    return PICK_ORDERS[name]


# -- offers ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Queued:
    """What the offer rule needs to know of a candidate already in S."""

    model_version: int
    leased: bool  # held by a live (unexpired) lease


@dataclass
class OfferPlan:
    """What a batch of candidates does to S: the store writes `put` (new or refreshing rows) and deletes
    `evicted`, in one step."""

    accepted: int = 0
    refreshed: int = 0
    rejected: int = 0
    put: list[Candidate] = field(default_factory=list)
    evicted: list[str] = field(default_factory=list)
    relabeled: dict[str, tuple[str, ...]] = field(default_factory=dict)  # put items back for one more label: who
    # labeled them (each barred from it for good, as after any of their labels)


def plan_offer(candidates: Iterable[Candidate], *, taken: Callable[[str], bool], queued: dict[str, Queued],
               size: int, capacity: int, stalest: Callable[[int, set[str]], list[tuple[int, str]]],
               min_version: int = 0, labelers: Callable[[str], tuple[str, ...] | None] = lambda _: None,
               max_labels: int = 1) -> OfferPlan:
    """Decide what a worker's batch does to S.

    A candidate is rejected when its item is in L or skipped (`taken`), when its model is older than
    `min_version` (a synchronous round's), or when it is already queued and either leased or not from a newer
    model version; a queued, unleased item from an older version is refreshed (replaced). A new item is accepted
    while S holds fewer than `capacity`; when full, the stalest available candidate (STALEST) makes room, but only
    for a candidate of a strictly newer model version. A batch never evicts its own items.

    A re-labeling candidate (strategy RELABEL_STRATEGY: adaptive re-labeling, a worker's choice to ask for one more
    label of an item in L) is the exception to `taken`: it is accepted as a new item when its item is in L and not
    skipped (`labelers` gives who labeled it, None otherwise), has fewer than `max_labels` labels (may_relabel)
    and is not in S; then it waits for one more label, from anyone who has not labeled it yet. A gold candidate
    (GOLD_STRATEGY: the coordinator's own, for an item whose gold answer is in L) is accepted the same way, under
    MAX_LABELS_PER_ITEM.

    `queued` maps the batch's item ids that are in S to their state; `size` is how many S holds (leased ones
    included); `stalest(n, batch_ids)` returns up to n available candidates (version, item id) in STALEST order,
    leaving out the batch's own items; it is called at most once, and only when S overflows.
    """
    plan = OfferPlan()
    batch = list(candidates)
    in_batch = {c.item_id for c in batch}
    room: list[tuple[int, str]] | None = None  # fetched when S first overflows, stalest last
    for c in batch:
        version = c.provenance.model_version
        existing = queued.get(c.item_id)
        relabel = c.provenance.strategy in (RELABEL_STRATEGY, GOLD_STRATEGY)
        cap = MAX_LABELS_PER_ITEM if c.provenance.strategy == GOLD_STRATEGY else max_labels
        who = labelers(c.item_id) if relabel and existing is None else None
        if relabel and (who is None or not may_relabel(len(who), cap)):
            plan.rejected += 1
        elif version < min_version or (taken(c.item_id) and not relabel):
            plan.rejected += 1
        elif existing is not None:
            if existing.leased or version <= existing.model_version:
                plan.rejected += 1
            else:
                queued[c.item_id] = Queued(version, False)
                plan.refreshed += 1
                plan.put.append(c)
        else:
            if size >= capacity:
                if room is None:
                    room = stalest(len(batch), in_batch)[::-1]
                if not room or room[-1][0] >= version:
                    plan.rejected += 1
                    continue
                plan.evicted.append(room.pop()[1])
                size -= 1
            queued[c.item_id] = Queued(version, False)
            size += 1
            plan.accepted += 1
            plan.put.append(c)
            if who is not None:
                plan.relabeled[c.item_id] = who
    return plan


def demand(capacity: int, fresh: int) -> int:
    """How many candidates of a model version S still wants, `fresh` being those of that version or newer it
    holds: older ones count as replaceable."""
    return max(0, capacity - fresh)


def shard_share(demand_: int, num_shards: int) -> int:
    """Every shard's worker is told the same share, so k workers do not each send the whole demand."""
    return -(-demand_ // num_shards)


# -- several labels per item ----------------------------------------------------------------------------------

# The most labels per item a coordinator may ask for (--labels-per-item). Each annotator who labeled an item is
# barred from it for good by a deferral that never ends, and an item keeps MAX_DEFERRALS_PER_ITEM deferrals, those
# ending last: the bound leaves room for the "don't know"s of as many people again.
MAX_LABELS_PER_ITEM = 16


def check_labels_per_item(labels_per_item: int, mode: str, max_labels_per_item: int = 0) -> None:
    """Raise ValueError unless `labels_per_item`, and `max_labels_per_item` (adaptive re-labeling; 0: none), are
    ones the coordinator can keep (1 to MAX_LABELS_PER_ITEM; more than one label in async mode only: a synchronous
    round counts items, not labels)."""
    if not 1 <= labels_per_item <= MAX_LABELS_PER_ITEM:
        raise ValueError(f"labels per item must be 1 to {MAX_LABELS_PER_ITEM}, got {labels_per_item}")
    if not 0 <= max_labels_per_item <= MAX_LABELS_PER_ITEM:
        raise ValueError(f"max labels per item must be 0 to {MAX_LABELS_PER_ITEM}, got {max_labels_per_item}")
    if label_cap(labels_per_item, max_labels_per_item) > 1 and mode != "async":
        raise ValueError("several labels per item need --mode async")


def label_cap(labels_per_item: int, max_labels_per_item: int) -> int:
    """The most labels an item may get: `labels_per_item` for all, and by adaptive re-labeling (may_relabel) up to
    `max_labels_per_item` (0: no re-labeling)."""
    return max(labels_per_item, max_labels_per_item)


def wants_another_label(labels: int, labels_per_item: int, strategy: str = "") -> bool:
    """After its `labels`-th label (first labels from different annotators, the gold answer included; corrections do
    not count), does an item go back to S for one more? Then it waits there, never for an annotator who labeled it,
    served before items with no label (PARTLY_LABELED_FIRST) and never evicted (STALEST), until it has
    `labels_per_item`. A gold item (`strategy` GOLD_STRATEGY) stays for MAX_LABELS_PER_ITEM."""
    return labels < (MAX_LABELS_PER_ITEM if strategy == GOLD_STRATEGY else labels_per_item)


def gold_first(share: float, draw: float) -> bool:
    """Is this lease one of the gold share (aal-coordinator --gold-share), `draw` a uniform number in [0, 1)? Then
    a gold item the annotator has not labeled is served, if there is one; else, and for every other lease, the pick
    order's best item that is not gold."""
    return draw < share


def may_relabel(labels: int, max_labels: int) -> bool:
    """May an item with `labels` first labels (from as many annotators) be offered for one more, by adaptive
    re-labeling (plan_offer), under the coordinator's `max_labels` (aal-coordinator --max-labels-per-item)?"""
    return 0 < labels < max_labels


# A deferral's end for an annotator who labeled an item: they are never offered it again.
FOREVER = float("inf")


# -- leases ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Held:
    """A lease as the store holds it."""

    item_id: str
    annotator_id: str
    deadline: float


# Most live leases one annotator may hold (0: no cap). Heartbeats keep a lease alive for good, so without a cap one
# client could hold all of S and leave everyone else nothing. Room for the Label Studio bridge's default window (50
# leases as one annotator) and a few aal-web tabs; a bridge's --window must fit the cap.
DEFAULT_MAX_LEASES_PER_ANNOTATOR = 64


# Most deferrals ("don't know") an item in S keeps: those ending last. Annotators are many and their ids free without
# tokens; an item that this many people could not label is rightly offered again to the first of them.
MAX_DEFERRALS_PER_ITEM = 64


def check_lease_cap(annotator_id: str, held: int, cap: int) -> None:
    """Raise ResourceExhausted when `annotator_id`, holding `held` live (unexpired) leases, may not take another
    under the cap `cap` (0: no cap)."""
    if cap > 0 and held >= cap:
        raise ResourceExhausted(
            f"annotator {annotator_id!r} holds {held} live leases, the most one annotator may hold "
            f"(aal-coordinator --max-leases-per-annotator {cap}): submit, release or let one expire first")


def check_held(held: Held | None, *, lease_id: str, item_id: str, annotator_id: str, now: float,
               item_known: Callable[[], bool]) -> None:
    """Raise unless `annotator_id` holds the live lease `lease_id` on `item_id`.

    No such lease: FailedPrecondition when the item exists (in S, L or skipped: the lease expired, ended or never
    was), NotFound when the item is unknown. A lease on another item, of another annotator, or past its deadline:
    FailedPrecondition.
    """
    if held is None:
        if item_known():
            raise FailedPrecondition(f"lease {lease_id} on item {item_id} has expired or is not held")
        raise NotFound(f"no query for item {item_id} with lease {lease_id}")
    if held.item_id != item_id:
        raise FailedPrecondition(f"lease {lease_id} is for item {held.item_id}, not {item_id}")
    if held.annotator_id != annotator_id:
        raise FailedPrecondition(f"lease {lease_id} belongs to another annotator")
    if held.deadline <= now:
        raise FailedPrecondition(f"lease {lease_id} on item {item_id} has expired")


@dataclass(frozen=True)
class Recorded:
    """A label already recorded under a lease: what a retry of its submission must repeat."""

    seq: int
    item_id: str
    label: int
    annotator_id: str


def check_retry(done: Recorded, *, lease_id: str, item_id: str, label: int, annotator_id: str) -> None:
    """A label submitted again under a lease already used is a retry (acknowledged, not recorded again) only if it
    repeats the first: the same item, annotator and label. FailedPrecondition otherwise; a different label is
    refused, not taken as a correction, so a stale retry can never overwrite a later decision: CorrectLabel says
    so explicitly."""
    if done.item_id != item_id:
        raise FailedPrecondition(f"lease {lease_id} was for item {done.item_id}, not {item_id}")
    if done.annotator_id != annotator_id:
        raise FailedPrecondition(f"lease {lease_id} belongs to another annotator")
    if done.label != label:
        raise FailedPrecondition(f"lease {lease_id} already recorded label {done.label} for item {item_id} (seq "
                                 f"{done.seq}); a retry must carry the same label: use CorrectLabel to change it")


# -- how far labels may run ahead of the models ----------------------------------------------------------------


def may_lease_ahead(labeled: int, covered: int, max_ahead: int) -> bool:
    """May another query be leased with `labeled` labels in L and the latest model trained on `covered`? Always
    when `max_ahead` is 0; else while fewer than `max_ahead` labels are ahead of that model (queries already
    leased may still be labeled, so L can run ahead by up to the number of annotators more)."""
    return max_ahead <= 0 or labeled - covered < max_ahead
