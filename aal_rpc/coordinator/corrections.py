"""Corrections of labels, the one rule both coordinators apply.

L is append-only. A correction is a new record for the same item that names the record it supersedes (its
`supersedes` seq); trainers and exports take each item's latest record, and the history keeps every one.
Only the annotator who gave an item's current label, or an admin, may correct it.
"""

from __future__ import annotations

import dataclasses
import uuid

from aal_rpc.errors import NotFound, PermissionDenied
from aal_rpc.types import LabeledRecord


def decide(latest: LabeledRecord | None, *, item_id: str, label: int, annotator_id: str, is_admin: bool) -> bool:
    """May `annotator_id` set `item_id`'s label to `label`? True: append a correction; False: the current label
    already is `label` (a retried correction, or no change), so nothing is appended. Raises otherwise."""
    if latest is None:
        raise NotFound(f"item {item_id} has no label to correct")
    if latest.annotator_id != annotator_id and not is_admin:
        raise PermissionDenied(f"item {item_id} was labeled by another annotator; only they or an admin may "
                               "correct it")
    return latest.label != label


def record(latest: LabeledRecord, *, seq: int, label: int, annotator_id: str, now: float) -> LabeledRecord:
    """The correction record: the item's payload and provenance, the new label, superseding `latest`."""
    return dataclasses.replace(latest, seq=seq, label=int(label), annotator_id=annotator_id, labeled_at=now,
                               lease_id=f"correction-{uuid.uuid4().hex}", supersedes=latest.seq)
