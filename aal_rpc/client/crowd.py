"""A crowd's figures, read from L's current records: each item's consensus label and each annotator's quality
(consensus.py), as `aal-admin export --consensus`, `aal-admin annotators` and the lead's page (client/job.py) give
them. Every figure is worked out from the records the caller reads, so all three agree on the same L."""

from __future__ import annotations

import math
from collections.abc import Iterable

from aal_rpc.consensus import Consensus, Votes, consensus
from aal_rpc.types import GOLD_ANNOTATOR, AnnotatorCounts, LabeledRecord

CONSENSUS_FIELDS = ("item_id", "label", "label_name", "confidence", "labels", "votes", "method")
ANNOTATOR_FIELDS = ("annotator", "labels", "agreement", "quality", "gold_labels", "gold_correct", "skips", "defers")


def crowd_of(records: Iterable[LabeledRecord], num_classes: int) -> Consensus:
    """The consensus of L's records (every record, or only current ones: a correction replaces the vote it
    supersedes either way)."""
    votes = Votes()
    votes.extend(records)
    return consensus(votes, num_classes)


def _figure(value: float) -> float | None:
    """A figure for JSON: None where there is none yet (NaN is not JSON)."""
    return None if value is None or math.isnan(value) else round(float(value), 4)


def consensus_rows(agreed: Consensus, class_names: tuple[str, ...]) -> list[dict]:
    """One row per item (CONSENSUS_FIELDS), by item id: its consensus label (and class name), the label's confidence,
    how many labels it has, and each annotator's vote."""
    return [{"item_id": item_id, "label": c.label,
             "label_name": class_names[c.label] if 0 <= c.label < len(class_names) else None,
             "confidence": _figure(c.confidence), "labels": len(c.votes), "votes": dict(sorted(c.votes.items())),
             "method": agreed.method}
            for item_id, c in sorted(agreed.items.items())]


def annotator_rows(agreed: Consensus, counts: dict[str, AnnotatorCounts] | None = None) -> list[dict]:
    """One row per annotator (ANNOTATOR_FIELDS), lowest quality first: their current labels, their agreement with
    the consensus (on items someone else labeled too), their estimated quality (the probability they label an item
    right), their gold answers, and from GetStats (`counts`) their skips and defers. None: not estimated yet."""
    counts = counts or {}
    names = sorted((set(agreed.annotators) | set(counts)) - {GOLD_ANNOTATOR})  # gold answers are no one's labels
    rows = []
    for name in names:
        q = agreed.annotators.get(name)
        c = counts.get(name, AnnotatorCounts())
        rows.append({"annotator": name, "labels": q.labels if q else 0,
                     "agreement": _figure(q.agreement) if q else None, "quality": _figure(q.quality) if q else None,
                     "gold_labels": q.gold_labels if q else 0, "gold_correct": q.gold_correct if q else 0,
                     "skips": c.skips, "defers": c.defers})
    return sorted(rows, key=lambda r: (r["quality"] is None, r["quality"] or 0.0, r["annotator"]))
