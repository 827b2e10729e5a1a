"""Rows <-> records: the one encoding of labels, queries and registry entries in the stores' tables.

Both stores (sqlite_store.py, postgres_store.py) have these columns (schema.py makes them), so each column list here
is what both stores select or insert, and each codec reads or writes the values in that order.
"""

from __future__ import annotations

import json

from aal_rpc.types import Candidate, LabeledRecord, Lease, ModelInfo, Payload, Provenance

LABEL_COLUMNS = ("seq, item_id, lease_id, label, annotator_id, queued_at, leased_at, labeled_at, "
                 "worker_id, strategy, model_version, score, supersedes, cluster, guess, guess_probability")
LABEL_INSERT_COLUMNS = LABEL_COLUMNS + ", tensor, dtype, shape, image_png, text"
QUERY_COLUMNS = ("item_id, worker_id, strategy, model_version, score, queued_at, tensor, dtype, shape, image_png, "
                 "lease_id, lease_owner, leased_at, lease_deadline, text, cluster, guess, guess_probability")
QUERY_INSERT_COLUMNS = ("item_id, worker_id, strategy, model_version, score, queued_at, tensor, dtype, shape, "
                        "image_png, text, cluster, guess, guess_probability")  # a query as offered: not leased yet
MODEL_COLUMNS = ("version, server_id, trained_seq, num_labels, architecture, metrics, created_at, size_bytes, "
                 "sha256, blob_available")



def count(columns: str) -> int:
    """How many columns a list above names (as many values an insert of it takes)."""
    return len(columns.split(", "))


# L is append-only: a correction is a new record naming the one it supersedes. This leaves out superseded records.
LATEST_ONLY = "AND seq NOT IN (SELECT supersedes FROM labels WHERE supersedes > 0)"


def _shape(payload: Payload) -> str:
    return json.dumps(list(payload.shape))


def label_row(r: LabeledRecord) -> tuple:
    """A labeled record as the values of LABEL_INSERT_COLUMNS."""
    p, prov = r.payload, r.provenance
    assert p is not None, "a record is written to L with its payload"
    return (r.seq, r.item_id, r.lease_id, r.label, r.annotator_id, r.queued_at, r.leased_at, r.labeled_at,
            prov.worker_id, prov.strategy, prov.model_version, prov.score, r.supersedes, prov.cluster, prov.guess,
            prov.guess_probability, p.tensor, p.dtype, _shape(p), p.image, p.text)


def label_from_row(r, *, include_payload: bool) -> LabeledRecord:
    """A row of LABEL_COLUMNS (then tensor, dtype, shape, image_png, text with `include_payload`)."""
    payload = Payload(bytes(r[16]), r[17], tuple(json.loads(r[18])), bytes(r[19]), r[20]) if include_payload else None
    return LabeledRecord(seq=r[0], item_id=r[1], lease_id=r[2], label=r[3], annotator_id=r[4], queued_at=r[5],
                         leased_at=r[6], labeled_at=r[7],
                         provenance=Provenance(r[8], r[9], r[10], r[11], r[13], r[14], r[15]),
                         supersedes=r[12], payload=payload)


def query_row(cand: Candidate, queued_at: float) -> tuple:
    """A candidate offered to S at `queued_at` as the values of QUERY_INSERT_COLUMNS."""
    p, prov = cand.payload, cand.provenance
    return (cand.item_id, prov.worker_id, prov.strategy, prov.model_version, prov.score, queued_at, p.tensor,
            p.dtype, _shape(p), p.image, p.text, prov.cluster, prov.guess, prov.guess_probability)


def query_from_row(r) -> tuple[Candidate, float, Lease | None]:
    """A row of QUERY_COLUMNS as (candidate, queued_at, lease or None)."""
    cand = Candidate(r[0], Payload(bytes(r[6]), r[7], tuple(json.loads(r[8])), bytes(r[9]), r[14]),
                     Provenance(r[1], r[2], r[3], r[4], r[15], r[16], r[17]))
    return cand, r[5], Lease(r[10], r[11], r[12], r[13]) if r[10] else None


def model_row(m: ModelInfo) -> tuple:
    """A registry entry as the values of MODEL_COLUMNS."""
    return (m.version, m.server_id, m.trained_seq, m.num_labels, m.architecture, json.dumps(m.metrics),
            m.created_at, m.size_bytes, m.sha256, m.blob_available)


def model_from_row(r) -> ModelInfo:
    """A row of MODEL_COLUMNS."""
    return ModelInfo(version=r[0], server_id=r[1], trained_seq=r[2], num_labels=r[3], architecture=r[4],
                     metrics=json.loads(r[5]), created_at=r[6], size_bytes=r[7], sha256=r[8],
                     blob_available=bool(r[9]))
