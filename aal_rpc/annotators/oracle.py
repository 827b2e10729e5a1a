"""Simulated annotators: N concurrent threads that lease, "think" for a random time, and answer from
the dataset's ground truth. They measure what a person would feel: the wait from submitting a label
(or first asking) until holding the next query. Each may be careless (an accuracy below 1: a crowd with
some sloppy members, for --labels-per-item and the consensus to be measured against).

They ride out an outage of any length (their calls retry until the coordinator answers again). A failure that
concerns one query (its lease expired) is counted and they go on; any other (a token without the annotator
role, say) stops them all, and `run()` raises it: repeating it could only fail the same way.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np

from aal_rpc.client import LEASE_GONE, AnnotationClient
from aal_rpc.client.retry import TRANSIENT
from aal_rpc.data import Dataset
from aal_rpc.grpc_utils import create_channel
from aal_rpc.security import ClientSecurity

log = logging.getLogger(__name__)

LEASE_POLL_SECONDS = 5.0  # one long poll; an annotator keeps asking until a query comes or it is told to stop
ID_PREFIX = "oracle"  # simulated annotator i is f"{ID_PREFIX}-{i}" unless told otherwise


def check_accuracies(accuracies: tuple[float, ...]) -> tuple[float, ...]:
    """`accuracies` as a tuple of floats, each the probability that one annotator answers the true label; ValueError
    unless each lies in [0, 1] (nan included)."""
    accuracies = tuple(float(a) for a in accuracies)
    bad = [a for a in accuracies if not 0.0 <= a <= 1.0]
    if bad:
        raise ValueError(f"an annotator's accuracy is a probability in [0, 1], got {bad[0]}")
    return accuracies


def parse_accuracies(text: str) -> tuple[float, ...]:
    """Accuracies from a comma-separated list ("0.9,0.9,0.3"; "" for none), checked by `check_accuracies`;
    ValueError for a value that is no number or lies outside [0, 1]."""
    values = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        try:
            values.append(float(part))
        except ValueError:
            raise ValueError(f"an annotator's accuracy is a number in [0, 1], got {part!r}") from None
    return check_accuracies(tuple(values))


def accuracy_of(accuracies: tuple[float, ...], index: int) -> float:
    """The probability that simulated annotator `index` answers the true label: `accuracies[index % len]`, 1 for
    none."""
    return accuracies[index % len(accuracies)] if accuracies else 1.0


def answer(rng: random.Random, truth: int, num_classes: int, accuracy: float) -> int:
    """The label a simulated annotator gives an item of class `truth`: the truth with probability `accuracy`, else a
    class drawn uniformly from the `num_classes - 1` others (a careless annotator's mistakes favour no class, as in
    the symmetric noise model crowd studies assume). An accuracy of 1 draws nothing from `rng`, so a careful crowd's
    thinking times are the same as before annotators had accuracies; a task of one class has no wrong answer."""
    if accuracy >= 1.0 or num_classes < 2 or rng.random() < accuracy:
        return truth
    wrong = rng.randrange(num_classes - 1)
    return wrong + (wrong >= truth)  # skips the truth: every other class equally likely


@dataclass
class OracleReport:
    acknowledged: int = 0
    duplicates: int = 0
    errors: Counter = field(default_factory=Counter)
    waits: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict:
        w = np.asarray(self.waits) if self.waits else np.zeros(1)
        return {
            "acknowledged": self.acknowledged,
            "duplicates": self.duplicates,
            "errors": dict(self.errors),
            "seconds": round(self.seconds, 3),
            "labels_per_second": round(self.acknowledged / self.seconds, 3) if self.seconds else 0.0,
            "wait_seconds": {"mean": float(w.mean()), "p50": float(np.percentile(w, 50)),
                             "p99": float(np.percentile(w, 99)), "max": float(w.max()), "count": len(self.waits)},
        }


class OracleAnnotators:
    """Run `annotators` simulated annotators until `budget` labels are acknowledged or `stop()` is called.

    Parameters
    ----------
    delay:
        Mean labeling time in seconds; each label takes a uniform random time in [0.5, 1.5] x delay.
    acks_path:
        If given, every acknowledged label is appended there as a JSON line as soon as it is acknowledged.
    retry_for:
        Seconds each call keeps retrying through an outage; None (the default): until the coordinator answers.
    accuracy:
        Annotator i (its id `{id_prefix}-{i}`) answers the true label with probability `accuracy[i % len(accuracy)]`,
        else another class (`answer`), drawn from its own seeded random stream so a run repeats; empty (the default):
        every annotator always answers the truth. ValueError for a value outside [0, 1], or for more values than
        annotators (some would never be used).
    """

    def __init__(self, target: str, dataset: Dataset, *, annotators: int = 1, delay: float = 0.0,
                 budget: int | None = None, seed: int = 0, id_prefix: str = ID_PREFIX,
                 acks_path: Path | None = None, retry_for: float | None = None,
                 security: ClientSecurity | None = None, accuracy: tuple[float, ...] = ()):
        self.accuracy = check_accuracies(accuracy)
        if len(self.accuracy) > annotators:
            raise ValueError(f"{len(self.accuracy)} accuracies for {annotators} annotators: give at most one each")
        self.target = target
        self.dataset = dataset
        self.annotators = annotators
        self.delay = delay
        self.budget = budget
        self.seed = seed
        self.id_prefix = id_prefix
        self.retry_for = retry_for
        self.security = security
        self.report = OracleReport()
        self._lock = threading.Lock()
        self._reserved = 0
        self._stop = threading.Event()
        self._clients: list[AnnotationClient] = []
        self._fatal: grpc.RpcError | None = None
        self._acks = open(acks_path, "a", buffering=1) if acks_path else None

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            clients = list(self._clients)
        for client in clients:  # a call waiting out an outage gives up now
            client.stop_retrying()

    def _reserve(self) -> bool:
        with self._lock:
            if self._stop.is_set() or (self.budget is not None and self._reserved >= self.budget):
                return False
            self._reserved += 1
            return True

    def _unreserve(self) -> None:
        with self._lock:
            self._reserved -= 1

    def run(self) -> OracleReport:
        channel = create_channel(self.target, self.security)
        t0 = time.monotonic()
        threads = [threading.Thread(target=self._annotate, args=(channel, i), name=f"annotator-{i}", daemon=True)
                   for i in range(self.annotators)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.report.seconds = time.monotonic() - t0
        channel.close()
        if self._acks:
            self._acks.close()
        if self._fatal is not None:
            raise self._fatal
        return self.report

    def _annotate(self, channel: grpc.Channel, index: int) -> None:
        annotator_id = f"{self.id_prefix}-{index}"
        # one query ready ahead, as a person's tool holds: the label's acknowledgement brings the next one
        client = AnnotationClient(self.target, annotator_id, channel=channel, retry_for=self.retry_for, prefetch=1)
        with self._lock:
            self._clients.append(client)
        try:
            if not self._stop.is_set():
                self._label(client, index, annotator_id)
        finally:
            client.close()  # the query held ready goes back to S

    def _label(self, client: AnnotationClient, index: int, annotator_id: str) -> None:
        rng = random.Random(self.seed * 100_003 + index)
        accuracy = accuracy_of(self.accuracy, index)
        asked = time.monotonic()
        while self._reserve():
            query = None
            try:
                while query is None and not self._stop.is_set():
                    query = client.lease(wait_seconds=LEASE_POLL_SECONDS)
            except grpc.RpcError as exc:
                self._failed(exc)
                self._unreserve()
                continue
            if query is None:
                self._unreserve()
                break
            waited = time.monotonic() - asked
            if self.delay > 0:
                time.sleep(self.delay * rng.uniform(0.5, 1.5))
            truth = int(self.dataset.y_pool[self.dataset.index_of(query.item_id)])
            label = answer(rng, truth, self.dataset.num_classes, accuracy)
            asked = time.monotonic()  # the next wait runs from pressing "submit" to holding the next query
            try:
                result = client.submit(query, label)
            except grpc.RpcError as exc:
                self._failed(exc)
                self._unreserve()
                continue
            with self._lock:
                self.report.acknowledged += 1
                self.report.duplicates += int(result.duplicate)
                self.report.waits.append(waited)
                if self._acks:
                    self._acks.write(json.dumps({"item_id": query.item_id, "label": label, "seq": result.seq,
                                                 "annotator_id": annotator_id}) + "\n")

    def _failed(self, exc: grpc.RpcError) -> None:
        if self._stop.is_set():  # stopping: an unfinished call does not matter
            return
        if exc.code() not in LEASE_GONE + TRANSIENT:  # one lease gone: count, go on; else every call would fail so
            with self._lock:
                self._fatal = self._fatal or exc
            self.stop()
            return
        log.warning("annotator call failed: %s %s", exc.code(), exc.details())
        with self._lock:
            self.report.errors[exc.code().name] += 1
