"""Corrections of labels, the one rule both coordinators apply.

L is append-only. A correction is a new record for the same item that names the record it supersedes (its
`supersedes` seq); trainers and exports take each item's latest record, and the history keeps every one.
Only the annotator who gave an item's current label, or an admin, may correct it; with several labels per item, an
annotator corrects their own (`target`). A holder that names the labeler behind a correction (types.delegate_id, the
Label Studio bridge for its users) may correct any label recorded in its own namespace (types.in_namespace).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable

from aal_rpc.errors import NotFound, PermissionDenied
from aal_rpc.types import LabeledRecord, in_namespace


def target(latest: Callable[[str | None], LabeledRecord | None], *, annotator_id: str, is_admin: bool
           ) -> LabeledRecord | None:
    """The record a correction supersedes, `latest(by)` giving an item's latest record (of annotator `by`, or of
    anyone with None). An admin corrects the item's latest record. An annotator corrects their own latest record of
    it, when they have one (an item has a label of each of its annotators' with labels_per_item > 1); else the
    item's latest, which `decide` refuses them."""
    if not is_admin:
        own = latest(annotator_id)
        if own is not None:
            return own
    return latest(None)


def decide(latest: LabeledRecord | None, *, item_id: str, label: int, annotator_id: str, is_admin: bool,
           delegator: str = "") -> bool:
    """May `annotator_id` set `item_id`'s label to `label`? True: append a correction; False: the current label
    already is `label` (a retried correction, or no change), so nothing is appended. Raises otherwise. `delegator`:
    the holder `annotator_id` was named by (a labeler it speaks for), who may correct any label in its namespace."""
    if latest is None:
        raise NotFound(f"item {item_id} has no label to correct")
    mine = latest.annotator_id == annotator_id or (delegator and in_namespace(latest.annotator_id, delegator))
    if not mine and not is_admin:
        raise PermissionDenied(f"item {item_id} was labeled by another annotator; only they or an admin may "
                               "correct it")
    return latest.label != label


def record(latest: LabeledRecord, *, seq: int, label: int, annotator_id: str, now: float) -> LabeledRecord:
    """The correction record: the item's payload and provenance, the new label, superseding `latest`."""
    return dataclasses.replace(latest, seq=seq, label=int(label), annotator_id=annotator_id, labeled_at=now,
                               lease_id=f"correction-{uuid.uuid4().hex}", supersedes=latest.seq)
