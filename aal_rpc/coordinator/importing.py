"""Importing the labels a pool already has (contract.Coordinator.import_labels), written once for both
coordinators: every item checked as a candidate is before any is written (a one-shot stream spooled to disk
meanwhile, never pickled), then batches of records each coordinator appends in its own way."""

from __future__ import annotations

import contextlib
import json
import struct
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import IO

from aal_rpc.coordinator.contract import IMPORT_ANNOTATOR, ImportedLabel, ImportOutcome
from aal_rpc.coordinator.validation import check_candidates, check_class, check_id
from aal_rpc.errors import InvalidArgument
from aal_rpc.types import (GOLD_ANNOTATOR, GOLD_STRATEGY, IMPORTED_STRATEGY, Candidate, LabeledRecord, Payload,
                           Provenance, Task)

IMPORT_BATCH = 500  # imported labels per transaction: big enough to import fast, small enough not to hold up labels
IMPORT_BATCH_BYTES = 32 * 1024 * 1024  # and their payloads' bytes at most (pictures may be up to 2 MiB each)
_SPOOLED = struct.Struct("<III")  # one spooled label: the lengths of its JSON header, tensor and picture


class ImportSpool:
    """Imported labels kept in a temporary file as they arrive and read back as often as needed, so an import is
    checked whole before any of it is written without being held in memory. No pickle: per label, a JSON header
    (id, label, annotator, dtype, shape, text), then the tensor's and the picture's bytes."""

    def __init__(self, f: IO[bytes]):
        self._f = f
        self._end = 0

    def add(self, item: ImportedLabel) -> None:
        p = item.payload
        head = json.dumps([item.item_id, int(item.label), item.annotator_id, p.dtype, list(p.shape), p.text]).encode()
        self._f.seek(self._end)
        self._f.write(_SPOOLED.pack(len(head), len(p.tensor), len(p.image)))
        for part in (head, p.tensor, p.image):
            self._f.write(part)
        self._end = self._f.tell()

    def __iter__(self) -> Iterator[ImportedLabel]:
        pos = 0
        while pos < self._end:
            self._f.seek(pos)
            n_head, n_tensor, n_image = _SPOOLED.unpack(self._f.read(_SPOOLED.size))
            item_id, label, annotator_id, dtype, shape, text = json.loads(self._f.read(n_head))
            tensor, image = self._f.read(n_tensor), self._f.read(n_image)
            pos = self._f.tell()
            yield ImportedLabel(item_id, label, Payload(tensor, dtype, tuple(shape), image, text), annotator_id)

    def close(self) -> None:
        self._f.close()


def check_imported(task: Task, item: ImportedLabel, position: int) -> None:
    """An imported label, checked as a worker's candidate is (id, payload) and its label against the classes; the
    message names the item, or its position in the import when its id is unusable."""
    try:
        check_id("item_id", item.item_id)
    except InvalidArgument as exc:
        raise InvalidArgument(f"imported label #{position}: {exc}") from None
    check_candidates(task, IMPORT_ANNOTATOR, IMPORTED_STRATEGY, 0,
                     [Candidate(item.item_id, item.payload, Provenance())], is_published=lambda version: False)
    try:
        check_id("annotator_id", item.annotator_id)
        check_class(task, item.label)
    except InvalidArgument as exc:
        raise InvalidArgument(f"item {item.item_id}: {exc}") from None


def imported_record(item: ImportedLabel, *, seq: int, now: float) -> LabeledRecord:
    """The record of L an imported label becomes: queued, leased and labeled now, chosen by no worker or model. An
    import by types.GOLD_ANNOTATOR is a gold item's known answer (aal-coordinator --gold): provenance GOLD_STRATEGY."""
    strategy = GOLD_STRATEGY if item.annotator_id == GOLD_ANNOTATOR else IMPORTED_STRATEGY
    return LabeledRecord(seq=seq, item_id=item.item_id, label=int(item.label), annotator_id=item.annotator_id,
                         payload=item.payload, provenance=Provenance("", strategy, 0, 0.0), queued_at=now,
                         leased_at=now, labeled_at=now, lease_id=f"import-{uuid.uuid4().hex}")


def import_in_batches(c, items: Iterable[ImportedLabel],
                      write: Callable[[list[ImportedLabel]], tuple[list[int], int]]) -> ImportOutcome:
    """contract.Coordinator.import_labels for coordinator `c`: every item checked before any is written (a one-shot
    iterator is spooled to `c.spool()` meanwhile), then `write(batch)` for each batch, which returns the seqs of the
    records it appended and how many items it skipped. Both coordinators import this way."""
    with contextlib.ExitStack() as stack:
        if iter(items) is items:  # it can be read once only: keep it on disk while it is checked
            spool = ImportSpool(stack.enter_context(c.spool()))
            for position, item in enumerate(items, 1):
                check_imported(c.task, item, position)
                spool.add(item)
            items = spool
        else:
            for position, item in enumerate(items, 1):
                check_imported(c.task, item, position)
        imported = skipped = first = last = 0
        for batch in _batches(items):
            seqs, n_skipped = write(batch)
            imported += len(seqs)
            skipped += n_skipped
            if seqs:
                first = min(first or seqs[0], *seqs)
                last = max(last, *seqs)
    return ImportOutcome(imported, skipped, first, last)


def _batches(items: Iterable[ImportedLabel]) -> Iterator[list[ImportedLabel]]:
    batch: list[ImportedLabel] = []
    size = 0
    for item in items:
        batch.append(item)
        size += item.payload.nbytes
        if len(batch) >= IMPORT_BATCH or size >= IMPORT_BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


