"""The metrics behind the lead's page (aal-web /lead, `aal-admin stats --json`, k8s/grafana-dashboard.json): the
pool's size and what remains, where the labels came from, what each annotator did, held-out accuracy, the models'
staleness and the stopping signal. Read at scrape time by the same rules (aal_rpc/measures.py) the page applies.
"""

from __future__ import annotations

import threading
from collections import Counter

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from aal_rpc.consensus import Consensus, Votes, consensus
from aal_rpc.measures import (ORIGINS, chosen_by_model_share, origins_of, pool_items, remaining_items,
                              stopping_signal)
from aal_rpc.types import Stats, is_encoder

NAN = float("nan")
READ_PAGE = 10_000  # records of L read per call while catching up with it
MODELS_PAGE = 500


class LeadCollector:
    """Reads L once, incrementally: each scrape folds in the records added since the last one (their provenance
    only), so a scrape costs what arrived since, not all of L. `max_annotators`: the annotators named in the
    per-annotator series, those with the most labels; the rest are summed under "other"."""

    def __init__(self, coordinator, *, max_annotators: int):
        self._coordinator = coordinator
        self._max_annotators = max_annotators
        self._lock = threading.Lock()  # scrapes may overlap
        self._through = 0  # the last seq of L folded in
        self._provenances: Counter[tuple[str, int]] = Counter()  # (strategy, model_version) -> items
        self._votes = Votes()  # each annotator's current label of each item: their quality (consensus.py)
        self._agreed: tuple[int, Consensus] | None = None  # the last consensus and the seq it was worked out at

    def _read_new_labels(self) -> Counter[tuple[str, int]]:
        with self._lock:
            while True:
                page = self._coordinator.read_labels(self._through, READ_PAGE, include_payload=False)
                for r in page:
                    self._votes.add(r)
                    if not r.supersedes:  # an item's first record: corrections keep its provenance
                        self._provenances[r.provenance.strategy, r.provenance.model_version] += 1
                if page:
                    self._through = page[-1].seq
                if len(page) < READ_PAGE:
                    return Counter(self._provenances)

    def _models(self):
        models, after = [], 0
        while True:
            page, more = self._coordinator.registry.page(after_version=after, limit=MODELS_PAGE)
            models += page
            if not more or not page:
                return models
            after = page[-1].version

    def collect(self, stats: Stats):
        models = self._models()
        pool = pool_items(models)
        remaining = remaining_items(pool, stats.labeled, stats.skipped)
        yield GaugeMetricFamily("aal_pool_size", "Items in the pool, labeled or not, as the trainers load it (NaN "
                                "before the first model)", value=NAN if pool is None else pool)
        yield GaugeMetricFamily("aal_remaining_items", "Pool items neither labeled nor skipped (NaN before the first "
                                "model)", value=NAN if remaining is None else remaining)
        origins = origins_of(self._read_new_labels(), {m.version for m in models if is_encoder(m)})
        by_origin = GaugeMetricFamily("aal_labels_by_origin", "Labeled items by why they were chosen: by a model, "
                                      "the cold start (random or typical), the random strategy, the audit, imported",
                                      labels=["origin"])
        for origin in ORIGINS:
            by_origin.add_metric([origin], origins[origin])
        yield by_origin
        share = chosen_by_model_share(origins)
        yield GaugeMetricFamily("aal_chosen_by_model_share", "Share of the labels a model chose",
                                value=NAN if share is None else share)
        yield from self._annotators(stats)
        yield from self._quality(stats)
        newest = max(models, key=lambda m: m.version) if models else None
        held_out = newest.metrics.get("accuracy") if newest else None
        yield GaugeMetricFamily("aal_held_out_accuracy", "The newest model's accuracy on the task's test set (NaN "
                                "without one)", value=NAN if held_out is None else held_out)
        yield GaugeMetricFamily("aal_latest_model_labels_behind", "Labels in L the newest model was not trained on "
                                "(NaN before any)",
                                value=NAN if newest is None else max(0, stats.labeled - newest.num_labels))
        stop = stopping_signal(models)
        yield GaugeMetricFamily("aal_stop_set_agreement", "Kappa of consecutive models' predictions on the stop set, "
                                "the mean over the last versions (NaN until known)",
                                value=NAN if stop["agreement"] is None else stop["agreement"])
        yield GaugeMetricFamily("aal_stopping_suggested", "1 when the stopping signal suggests to stop labeling: "
                                "stable predictions and a flat accuracy curve", value=float(stop["suggested"]))

    def _shown(self, stats: Stats) -> tuple[list[str], list[str]]:
        """The annotators named in the per-annotator series (the most labels first), and the rest."""
        names = sorted(stats.annotators, key=lambda a: (-stats.annotators[a].labels, a))
        return names[:self._max_annotators], names[self._max_annotators:]

    def _quality(self, stats: Stats):
        with self._lock:  # worked out again only once L has grown since
            if self._agreed is None or self._agreed[0] != self._through:
                self._agreed = (self._through, consensus(self._votes, self._coordinator.task.num_classes))
            agreed = self._agreed[1]
        shown, _ = self._shown(stats)
        families = {what: GaugeMetricFamily(f"aal_annotator_{what}", help_, labels=["annotator"])
                    for what, help_ in (("quality", "Each annotator's estimated probability of labeling an item right "
                                                    "(Dawid-Skene over L; NaN until estimated)"),
                                        ("agreement", "Share of each annotator's labels that agree with the consensus, "
                                                      "on items others labeled too (NaN until there are such)"))}
        for name in shown:
            q = agreed.annotators.get(name)
            for what, family in families.items():
                family.add_metric([name], NAN if q is None else getattr(q, what))
        yield from families.values()

    def _annotators(self, stats: Stats):
        shown, rest = self._shown(stats)
        families = {what: CounterMetricFamily(f"aal_annotator_{what}", f"Items each annotator {verb} (the "
                                              f"{self._max_annotators} with the most labels; the rest as 'other')",
                                              labels=["annotator"])
                    for what, verb in (("labels", "labeled"), ("skips", "skipped"),
                                       ("defers", "deferred (since the coordinator started, on SQLite)"))}
        for name in shown:
            counts = stats.annotators[name]
            for what, family in families.items():
                family.add_metric([name], getattr(counts, what))
        if rest:
            for what, family in families.items():
                family.add_metric(["other"], sum(getattr(stats.annotators[a], what) for a in rest))
        yield from families.values()
