"""The query pool S in memory: scored candidates waiting for annotators, their leases and deferrals.

Pure in-memory structure, not thread-safe: the embedded coordinator holds its lock around every call and
persists each change through the SQLite store. The rules it applies (pick order, offers, eviction) are
rules.py's, the same ones the PostgreSQL store applies in its transactions. Its memory follows its state (items,
live leases, running deferrals), not the calls made: stale heap entries and ended deferrals are let go.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import random
import secrets
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from aal_rpc.coordinator import rules
from aal_rpc.types import GOLD_STRATEGY, Candidate, Lease, shard_key

PICK_ORDERS = tuple(rules.PICK_ORDERS)  # names, for command-line choices


@dataclass
class Entry:
    candidate: Candidate
    queued_at: float
    token: int  # changes whenever the entry becomes available again; stale heap entries are skipped
    lease: Lease | None = None
    shard_key: int = 0  # crc32 of the item id: shard j of k holds it when shard_key % k == j
    labels: int = 0  # labels its item already has (labels_per_item > 1): rules.wants_another_label

    @property
    def version(self) -> int:
        return self.candidate.provenance.model_version

    @property
    def score(self) -> float:
        return self.candidate.provenance.score

    @property
    def strategy(self) -> str:
        return self.candidate.provenance.strategy


class QueryPool:
    """S with a capacity, deduplicated by item id, leased with deadlines.

    Parameters
    ----------
    capacity:
        Most candidates held (leased ones included); rules.plan_offer says who makes room when full.
    pick:
        A name of rules.PICK_ORDERS.
    """

    def __init__(self, *, capacity: int, pick: str = "fresh", seed: int = 0):
        self._order = rules.pick_order(pick)
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.pick = pick
        self._rng = random.Random(seed)
        self._entries: dict[str, Entry] = {}
        self._leases: dict[str, str] = {}  # lease_id -> item_id
        self._held: Counter[str] = Counter()  # annotator_id -> leases held (live until `expire` ends them)
        self._by_version: Counter[int] = Counter()
        self._next_token = 0
        # lease ids unique across restarts: this pool's random prefix and a counter (a uuid4 a lease read the
        # kernel's random source, letting go of the GIL on the event loop: 4% of the loop's time under load)
        self._lease_ids = map(f"{secrets.token_hex(8)}{{:08x}}".format, itertools.count())
        self._pick_heap: list[tuple] = []  # (*pick key, token, item_id)
        self._deadlines: list[tuple[float, str]] = []  # (deadline, lease_id); renewed or ended leases' go stale
        self._random_items: list[str] = []  # available ids, for O(1) uniform picks
        self._random_pos: dict[str, int] = {}
        self._gold: dict[str, None] = {}  # gold items in S (an ordered set): served apart, at the gold share
        self._deferred: dict[str, dict[str, float]] = {}  # item_id -> {annotator_id: not offered to them until}
        self._deferrals = 0  # entries in _deferred
        self._deferrals_swept = 0  # entries left by the last sweep of ended ones

    # -- sizes ----------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, item_id: str) -> bool:
        return item_id in self._entries

    @property
    def leased_count(self) -> int:
        return len(self._leases)

    @property
    def available_count(self) -> int:
        return len(self._entries) - len(self._leases)

    def held_by(self, annotator_id: str) -> int:
        """Leases `annotator_id` holds (the live ones, once `expire` ran for now)."""
        return self._held.get(annotator_id, 0)

    def item_ids(self) -> list[str]:
        return list(self._entries)

    def item_ids_in_shard(self, shard_index: int, num_shards: int) -> list[str]:
        return [i for i, e in self._entries.items() if e.shard_key % num_shards == shard_index]

    def get(self, item_id: str) -> Entry | None:
        return self._entries.get(item_id)

    def by_lease(self, lease_id: str) -> Entry | None:
        item_id = self._leases.get(lease_id)
        return self._entries.get(item_id) if item_id is not None else None

    def count_at_least(self, model_version: int) -> int:
        """Candidates (leased or not) proposed with `model_version` or a newer model."""
        return sum(n for v, n in self._by_version.items() if v >= model_version)

    def demand(self, model_version: int) -> int:
        return rules.demand(self.capacity, self.count_at_least(model_version))

    def drop_older_than(self, model_version: int) -> list[str]:
        """Remove every unleased candidate of a model older than `model_version`; their ids."""
        stale = [i for i, e in self._entries.items() if e.lease is None and e.version < model_version]
        for item_id in stale:
            self._remove(item_id)
        return stale

    # -- availability bookkeeping -----------------------------------------------------------------------

    def _make_available(self, entry: Entry) -> None:
        self._next_token += 1
        entry.token = self._next_token
        item_id = entry.candidate.item_id
        if entry.strategy == GOLD_STRATEGY:
            return  # leased from self._gold only (rules.gold_first)
        if self._order is rules.RANDOM:
            self._random_pos[item_id] = len(self._random_items)
            self._random_items.append(item_id)
        else:
            key = self._order.key(entry.version, entry.score, entry.strategy, entry.labels)
            heapq.heappush(self._pick_heap, (*key, entry.token, item_id))
            self._compact()

    def _make_unavailable(self, item_id: str) -> None:
        """Heap entries go stale by token; the random list needs an explicit swap-remove."""
        pos = self._random_pos.pop(item_id, None)
        if pos is not None:
            last = self._random_items.pop()
            if last != item_id:
                self._random_items[pos] = last
                self._random_pos[last] = pos

    def _valid(self, token: int, item_id: str) -> bool:
        e = self._entries.get(item_id)
        return e is not None and e.lease is None and e.token == token

    def _compact(self) -> None:
        """Rebuild the heap once stale entries outnumber live ones, so memory stays bounded."""
        if len(self._pick_heap) > 2 * self.available_count + 64:
            self._pick_heap = [h for h in self._pick_heap if self._valid(h[-2], h[-1])]
            heapq.heapify(self._pick_heap)

    def _pop_valid(self, heap: list[tuple]) -> str | None:
        while heap:
            top = heap[0]
            if self._valid(top[-2], top[-1]):
                return top[-1]
            heapq.heappop(heap)
        return None

    # -- candidates -------------------------------------------------------------------------------------

    def offer(self, candidates: list[Candidate], now: float, *, taken: Callable[[str], bool] = lambda _: False,
              min_version: int = 0, labelers: Callable[[str], tuple[str, ...] | None] = lambda _: None,
              max_labels: int = 1) -> rules.OfferPlan:
        """Apply rules.plan_offer to a worker's batch (`taken`: is the item in L or skipped; `labelers` and
        `max_labels`: adaptive re-labeling); returns the plan."""
        queued = {c.item_id: rules.Queued(e.version, e.lease is not None)
                  for c in candidates if (e := self._entries.get(c.item_id)) is not None}
        plan = rules.plan_offer(candidates, taken=taken, queued=queued, size=len(self._entries),
                                capacity=self.capacity, stalest=self._stalest, min_version=min_version,
                                labelers=labelers, max_labels=max_labels)
        for item_id in plan.evicted:
            self._remove(item_id)
        for c in plan.put:
            if c.item_id in self._entries:
                self._remove(c.item_id)
            who = plan.relabeled.get(c.item_id, ())
            self._insert(c, now, labels=len(who))
            for annotator_id in who:
                self.defer(c.item_id, annotator_id, rules.FOREVER, now=now)
        return plan

    def _stalest(self, n: int, exclude: set[str]) -> list[tuple[int, str]]:
        """Up to n available candidates (version, item id) not owed labels (rules.owed) but `exclude`, in
        rules.STALEST order."""
        available = (e for i, e in self._entries.items()
                     if e.lease is None and rules.evictable(e.labels, e.strategy) and i not in exclude)
        return [(e.version, e.candidate.item_id)
                for e in heapq.nsmallest(n, available, key=lambda e: rules.STALEST.key(e.version, e.score))]

    def _insert(self, candidate: Candidate, queued_at: float, labels: int = 0) -> Entry:
        entry = Entry(candidate, queued_at, token=0, shard_key=shard_key(candidate.item_id), labels=labels)
        self._entries[candidate.item_id] = entry
        if entry.strategy == GOLD_STRATEGY:
            self._gold[candidate.item_id] = None
        self._by_version[entry.version] += 1
        self._make_available(entry)
        return entry

    def _remove(self, item_id: str) -> Entry:
        self._deferrals -= len(self._deferred.pop(item_id, ()))
        self._gold.pop(item_id, None)
        entry = self._entries.pop(item_id)
        self._by_version[entry.version] -= 1
        if not self._by_version[entry.version]:
            del self._by_version[entry.version]
        if entry.lease is not None:
            self._end_lease(entry)
        else:
            self._make_unavailable(item_id)
        return entry

    def remove(self, item_id: str) -> Entry:
        """Take an item out of S for good (labeled or skipped)."""
        return self._remove(item_id)

    def restore(self, candidate: Candidate, queued_at: float, lease: Lease | None,
                labelers: tuple[str, ...] = ()) -> None:
        """Put back a candidate read from the store after a restart, with its lease if it had one, and the annotators
        who gave its item the labels it has (labels_per_item > 1: none of them is offered it again)."""
        entry = self._insert(candidate, queued_at, labels=len(labelers))
        for annotator_id in labelers:
            self._deferred.setdefault(candidate.item_id, {})[annotator_id] = rules.FOREVER
            self._deferrals += 1
        if lease is not None:
            self._lease(entry, lease)

    def labeled_once_more(self, item_id: str, annotator_id: str, *, now: float) -> Entry:
        """An item that wants another label (rules.wants_another_label) got one from its lease holder `annotator_id`:
        its lease ends and it is available again, with one label more, never to that annotator."""
        self._entries[item_id].labels += 1
        return self.defer(item_id, annotator_id, rules.FOREVER, now=now)

    # -- leases -----------------------------------------------------------------------------------------

    def _deferred_for(self, item_id: str, annotator_id: str, now: float) -> bool:
        return self._deferred.get(item_id, {}).get(annotator_id, 0.0) > now

    def lease(self, annotator_id: str, now: float, lease_seconds: float, *, gold: bool = False) -> Entry | None:
        """Lease the next available candidate in pick order that `annotator_id` did not defer, or None; with `gold`
        (rules.gold_first), a gold item they did not label first, if there is one. Gold items are never picked
        otherwise."""
        if gold:
            for item_id in self._gold:
                entry = self._entries[item_id]
                if entry.lease is None and not self._deferred_for(item_id, annotator_id, now):
                    self._lease(entry, Lease(next(self._lease_ids), annotator_id, now, now + lease_seconds))
                    return entry
        if self._order is rules.RANDOM:
            if not self._random_items:
                return None
            item_id = self._random_items[self._rng.randrange(len(self._random_items))]
            if self._deferred_for(item_id, annotator_id, now):
                allowed = [i for i in self._random_items if not self._deferred_for(i, annotator_id, now)]
                if not allowed:
                    return None
                item_id = allowed[self._rng.randrange(len(allowed))]
        else:
            set_aside, found = [], None
            while (top := self._pop_valid(self._pick_heap)) is not None:
                popped = heapq.heappop(self._pick_heap)
                if not self._deferred_for(top, annotator_id, now):
                    found = top
                    break
                set_aside.append(popped)
            for popped in set_aside:
                heapq.heappush(self._pick_heap, popped)
            if found is None:
                return None
            item_id = found
        entry = self._entries[item_id]
        self._lease(entry, Lease(next(self._lease_ids), annotator_id, now, now + lease_seconds))
        return entry

    def _lease(self, entry: Entry, lease: Lease) -> None:
        self._make_unavailable(entry.candidate.item_id)
        entry.lease = lease
        self._leases[lease.lease_id] = entry.candidate.item_id
        self._held[lease.annotator_id] += 1
        self._push_deadline(lease.deadline, lease.lease_id)

    def _push_deadline(self, deadline: float, lease_id: str) -> None:
        """Each lease and renewal pushes its deadline; the entries it replaced stay until they surface (up to the
        longest lease, a day), so once stale entries outnumber live leases the heap is rebuilt from the live ones."""
        heapq.heappush(self._deadlines, (deadline, lease_id))
        if len(self._deadlines) > 2 * len(self._leases) + 64:
            self._deadlines = [(d, lease) for d, lease in self._deadlines if self._deadline_live(d, lease)]
            heapq.heapify(self._deadlines)

    def _deadline_live(self, deadline: float, lease_id: str) -> bool:
        item_id = self._leases.get(lease_id)
        lease = self._entries[item_id].lease if item_id is not None else None
        return lease is not None and lease.deadline == deadline

    def defer(self, item_id: str, annotator_id: str, until: float, *, now: float) -> Entry:
        """End an item's lease; it is available again, but not to `annotator_id` before `until`.

        An item keeps at most rules.MAX_DEFERRALS_PER_ITEM deferrals (the ones ending last), and ended deferrals
        are forgotten: this item's at once, every item's once they outnumber the running ones."""
        deferred = self._deferred.setdefault(item_id, {})
        self._deferrals += annotator_id not in deferred
        deferred[annotator_id] = until
        if len(deferred) > rules.MAX_DEFERRALS_PER_ITEM:
            self._forget_deferrals(item_id, now)
        if self._deferrals > 2 * self._deferrals_swept + 64:
            for deferred_item in list(self._deferred):
                self._forget_deferrals(deferred_item, now)
            self._deferrals_swept = self._deferrals
        return self.release(item_id)

    def _forget_deferrals(self, item_id: str, now: float) -> None:
        """Drop an item's ended deferrals, and beyond rules.MAX_DEFERRALS_PER_ITEM those ending first."""
        deferred = self._deferred[item_id]
        running = sorted(((until, who) for who, until in deferred.items() if until > now), reverse=True)
        kept = dict((who, until) for until, who in running[:rules.MAX_DEFERRALS_PER_ITEM])
        self._deferrals += len(kept) - len(deferred)
        if kept:
            self._deferred[item_id] = kept
        else:
            del self._deferred[item_id]

    def renew(self, lease_id: str, deadline: float) -> Entry:
        """Move a held lease's deadline."""
        entry = self.by_lease(lease_id)
        assert entry is not None and entry.lease is not None, f"lease {lease_id} is not held"
        entry.lease = dataclasses.replace(entry.lease, deadline=deadline)
        self._push_deadline(deadline, lease_id)
        return entry

    def release(self, item_id: str) -> Entry:
        """End an item's lease and make it available again."""
        entry = self._entries[item_id]
        if entry.lease is not None:
            self._end_lease(entry)
            self._make_available(entry)
        return entry

    def _end_lease(self, entry: Entry) -> None:
        lease, entry.lease = entry.lease, None
        assert lease is not None  # callers end only a leased entry's lease
        self._leases.pop(lease.lease_id, None)
        self._held[lease.annotator_id] -= 1
        if not self._held[lease.annotator_id]:
            del self._held[lease.annotator_id]

    def next_deadline(self) -> float | None:
        """The earliest deadline a lease may have (or had: a renewed or ended lease leaves its old one behind)."""
        return self._deadlines[0][0] if self._deadlines else None

    def expire(self, now: float) -> list[str]:
        """Return every item whose lease deadline has passed to the available set; their ids."""
        expired = []
        while self._deadlines and self._deadlines[0][0] <= now:
            _, lease_id = heapq.heappop(self._deadlines)
            item_id = self._leases.get(lease_id)
            lease = self._entries[item_id].lease if item_id is not None else None
            if item_id is not None and lease is not None and lease.deadline <= now:  # else renewed since
                self.release(item_id)
                expired.append(item_id)
        return expired
