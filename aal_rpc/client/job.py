"""The job's figures for its lead, read from a coordinator with an admin's CoordinatorClient: `aal-admin stats
--json` prints them and aal-web's lead page (/lead) shows them, so the two always agree. Every rule behind them
lives in aal_rpc/measures.py; the coordinator's metrics apply the same ones."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import asdict

from aal_rpc.client.crowd import annotator_rows
from aal_rpc.consensus import Votes, consensus
from aal_rpc.measures import (accuracy_curve, chosen_by_model_share, estimated_accuracy, labels_per_model,
                              origins_of, pace_per_minute, pool_items, remaining_items,
                              stopping_signal)
from aal_rpc.types import IMPORTED_STRATEGY, LabeledRecord, ModelInfo, Stats, is_encoder

RECENT_MODELS = 10  # model versions listed with their staleness, newest first


def job_figures(stats: Stats, models: list[ModelInfo], records: Iterable[LabeledRecord], now: float, *,
                num_classes: int) -> dict:
    """Everything the lead sees, from GetStats, the registry and L's current records (without payloads), at `now`
    (unix seconds), for a task of `num_classes` classes. Stats' own fields, then:

    - labels_per_model, label_origins (measures.origins_of), chosen_by_model_share, cold_start_labels;
    - estimated_accuracy of the newest model (measures.estimated_accuracy), held_out_accuracy where a test set is;
    - pool_items, remaining (measures.remaining_items), label_rate_per_minute (labels of people, not imports);
    - pace_per_minute: each annotator's (measures.pace_per_minute), beside Stats' `annotators` (labels, skips,
      defers); crowd: each annotator's `agreement` and `quality` (client/crowd.py; None while not estimated) and
      the consensus `method`;
    - curve: one point per model (measures.accuracy_curve); recent_models: the newest RECENT_MODELS versions with their
      staleness (labels_behind: labels in L it was not trained on; age_seconds);
    - stopping (measures.stopping_signal).
    """
    d = asdict(stats)
    d["labels_per_model"] = labels_per_model(stats.labeled, stats.latest_model_version)
    encoders = {m.version for m in models if is_encoder(m)}
    provenances: Counter[tuple[str, int]] = Counter()
    times: dict[str, list[float]] = defaultdict(list)
    votes = Votes()
    for r in records:
        votes.add(r)
        provenances[r.provenance.strategy, r.provenance.model_version] += 1
        if r.provenance.strategy != IMPORTED_STRATEGY:
            times[r.annotator_id].append(r.labeled_at)
    origins = origins_of(provenances, encoders)
    d["label_origins"] = origins
    d["chosen_by_model_share"] = chosen_by_model_share(origins)
    d["cold_start_labels"] = origins["cold_start"] + origins["typical"]
    newest = max(models, key=lambda m: m.version) if models else None
    d["estimated_accuracy"] = estimated_accuracy(newest.metrics) if newest else None
    d["held_out_accuracy"] = newest.metrics.get("accuracy") if newest else None
    d["pool_items"] = pool_items(models)
    d["remaining"] = remaining_items(d["pool_items"], stats.labeled, stats.skipped)
    d["label_rate_per_minute"] = pace_per_minute([t for ts in times.values() for t in ts], now)
    d["pace_per_minute"] = {a: pace_per_minute(times.get(a, ()), now) for a in d["annotators"]}
    agreed = consensus(votes, num_classes)
    d["crowd"] = {"method": agreed.method, "annotators": {
        row["annotator"]: {"agreement": row["agreement"], "quality": row["quality"]} for row in annotator_rows(agreed)}}
    d["curve"] = accuracy_curve(models)
    d["recent_models"] = [{"version": m.version, "server_id": m.server_id, "labels": m.num_labels,
                    "labels_behind": max(0, stats.labeled - m.num_labels), "age_seconds": max(0.0, now - m.created_at),
                    "encoder": is_encoder(m), "estimated": estimated_accuracy(m.metrics),
                    "accuracy": m.metrics.get("accuracy")}
                   for m in sorted(models, key=lambda m: m.version, reverse=True)[:RECENT_MODELS]]
    d["stopping"] = stopping_signal(models)
    d["generated_at"] = now
    return d


def job_report(client, *, now: float | None = None) -> dict:
    """job_figures read from a coordinator (`client`: a CoordinatorClient with an admin's token)."""
    stats = client.stats()
    models = client.models()
    records = client.export(include_payload=False, latest_only=True)
    return job_figures(stats, models, records, time.time() if now is None else now,
                       num_classes=client.task().num_classes)

