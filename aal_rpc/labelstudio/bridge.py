"""The bridge between the coordinator and a Label Studio project: leased queries become tasks, annotations become
labels.

Queries -> tasks. The bridge is one annotator of the coordinator. It keeps a window of `window` leased queries as
tasks of the project, each with the item (its picture as a data: URL of its own media type, or the text), its
provenance in the task data (model_version, score, strategy, cluster), an opaque reference (aal_ref, never the item's
id: annotators see task data, and an id may give the answer away) and one prediction with no result whose model_version is the
model that chose the item, whose cluster is Cluster-Margin's cluster, and whose score is the coordinator's priority
turned around (1 / (1 + e^score): Label Studio's uncertainty sampling serves the lowest score first, and spreads
annotators over clusters). It renews the leases it holds well before they lapse. When a lease shows that S holds
queries of a newer model than some of its unannotated tasks, it gives those stale tasks back (RETURN) and shows the
fresh queries instead, so the project follows the coordinator's order. A task whose lease was lost (expired while the
bridge was down; the item may since be labeled elsewhere) is removed from the project unless someone annotated it.

Annotations -> labels. The label of a task is that of its latest annotation that chooses one class:
- the first such annotation becomes SubmitLabel (with the task's lease);
- a later change of that label (an annotation updated, or another one added) becomes CorrectLabel;
- a cancelled annotation (Label Studio's Skip) on a task with no label gives the query back: DEFER by default (others
  may label it; this project is not offered it again for a while), SKIP with on_cancel="skip" (never offered to
  anyone again); the task then leaves the project;
- deleting annotations changes nothing in L (append-only; a label cannot be withdrawn): the task shows as unlabeled
  again, and a new annotation on it becomes a correction. Deleting a task whose lease the bridge holds gives the
  query back (RETURN).

Every annotation seen is recorded in the state file (keyed on its Label Studio id) with what was done. Decisions are
made from Label Studio's current state of a task against the state file, and every call that changes L is
idempotent (SubmitLabel per lease, CorrectLabel per item and label), so a restart of the bridge, the coordinator or
Label Studio at any point loses no annotation and duplicates none. Intermediate edits made while the bridge was down
collapse into the latest one.

Webhooks name the tasks to look at; polling every `poll_seconds` (tasks updated since the last poll, with a margin)
and a full sweep at start and every `sweep_seconds` catch whatever a webhook missed.

Whatever Label Studio holds may be odd: its API takes any JSON as an annotation's result, from any user. An annotation
that is not in the editor's shape is recorded as unreadable (logged once) and the task waits for one that chooses a
class; a task that cannot be read at all is marked as such in the state file (logged once per reason). Neither stops
the loop, nor the tasks after it.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import logging
import math
import threading
import time
from dataclasses import dataclass

import grpc
from label_studio_sdk.core.api_error import ApiError

from aal_rpc.client.annotation import LEASE_GONE, AnnotationClient, LeasedQuery
from aal_rpc.labelstudio.config import REF_FIELD, Interface, Unreadable, label_of
from aal_rpc.labelstudio.ids import valid_id
from aal_rpc.labelstudio.state import HELD, BridgeState, TaskRow, TaskState
from aal_rpc.labelstudio.studio import Studio, StudioUnavailable, timestamp
from aal_rpc.types import Payload, Provenance, strategy_shown

log = logging.getLogger("aal.labelstudio")

RENEW_FRACTION = 0.25  # leases are renewed after a quarter of their time: three renewals may fail before one lapses
POLL_MARGIN = dt.timedelta(seconds=30)  # a poll looks this far behind the newest update seen (commits land late)
MAX_BACKOFF = 5.0  # seconds between tries while Label Studio does not answer
IMPORT_BATCH = 100  # tasks per import request
_NO_PAYLOAD = Payload(b"", "float32", (0,))
LEGACY_ID_FIELD = "item_id"  # where bridges before aal_ref put the item's id in task data
IDS_HIDDEN = "item_ids_hidden"  # state meta: the tasks of older bridges no longer show item ids
MAX_HINTS = 10_000  # ids webhooks named that wait for the loop; past that they are dropped and a poll looks instead
REFUSED = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)  # the token: waiting cannot cure it
# what odd data in a task raises while it is read (the calls to Label Studio and the coordinator raise other errors)
ODD_DATA = (Unreadable, ValueError, TypeError, KeyError, AttributeError, IndexError, OverflowError)


@dataclass(frozen=True)
class BridgeConfig:
    """window: queries shown at once; lease_seconds: each lease's length (renewed at a quarter of it);
    poll_seconds / sweep_seconds: the polling fallback; refresh_seconds: how often the window is filled and checked
    for stale tasks; on_cancel: "defer" or "skip"; defer_seconds: 0 for the coordinator's default."""

    window: int = 50
    lease_seconds: float = 600.0
    poll_seconds: float = 5.0
    sweep_seconds: float = 300.0
    refresh_seconds: float = 5.0
    on_cancel: str = "defer"
    defer_seconds: float = 0.0


def priority(score: float) -> float:
    """The prediction score that makes Label Studio ask the coordinator's first choice first: it serves the lowest
    score first, the coordinator the highest. 1 / (1 + e^score), in (0, 1), decreasing, computed without overflow."""
    if score >= 0:
        e = math.exp(-score)
        return e / (1.0 + e)
    return 1.0 / (1.0 + math.exp(score))


def item_content(payload: Payload, kind: str) -> str:
    """What the project's object shows: the picture as a data: URL, or the text (a short summary of the values of
    an item that has neither)."""
    if kind == "image":
        if payload.image:
            return payload.image_data_url()
        from aal_rpc.data.images import render_png

        png = render_png(payload.to_array())
        return "data:image/png;base64," + base64.b64encode(png).decode() if png else ""
    if payload.text:
        return payload.text
    flat = payload.to_array().reshape(-1)
    return f"{flat.size} values: " + " ".join(f"{v:.3g}" for v in flat[:32]) + (" …" if flat.size > 32 else "")


def task_ref(lease_id: str) -> str:
    """The opaque reference in a task's data to the lease it shows: the bridge finds its tasks by it, and it tells
    annotators nothing (the state file maps leases to items)."""
    return hashlib.sha256(lease_id.encode()).hexdigest()[:20]


def task_json(ref: str, payload: Payload, provenance: Provenance, interface: Interface) -> dict:
    """A Label Studio task (with its prediction) for a query; `ref` is task_ref of its lease."""
    data = {interface.data_key: item_content(payload, interface.kind), REF_FIELD: ref,
            "model_version": provenance.model_version, "score": provenance.score,
            "strategy": strategy_shown(provenance.strategy),
            "cluster": provenance.cluster}
    prediction = {"result": [], "score": priority(provenance.score), "model_version": str(provenance.model_version)}
    if provenance.cluster is not None:
        prediction["cluster"] = provenance.cluster
    return {"data": data, "predictions": [prediction]}


def _query(row: TaskRow) -> LeasedQuery:
    """The lease of a row, as the client's calls take it (only the ids matter to them)."""
    return LeasedQuery(row.item_id, row.lease_id, 0.0, _NO_PAYLOAD, Provenance())


class Bridge:
    """The bridge's loop; `hint()` may be called from any thread (the webhook receiver)."""

    def __init__(self, client: AnnotationClient, studio: Studio, state: BridgeState, project_id: int,
                 interface: Interface, config: BridgeConfig = BridgeConfig()):
        self.client = client
        self.studio = studio
        self.state = state
        self.project_id = project_id
        self.interface = interface
        self.config = config
        self.wake = threading.Event()
        self._hint_lock = threading.Lock()
        self._hint_tasks: set[int] = set()
        self._hint_deleted: set[int] = set()
        self._hints_dropped = False  # more hints came than MAX_HINTS: poll instead
        self._watermark: dt.datetime | None = None  # the newest task update seen by a poll or sweep
        self._queries: dict[str, tuple[Payload, Provenance]] = {}  # items of leases not yet in Label Studio
        self._said_capped = False  # the coordinator's lease cap stopped a fill (said once)
        self._import_uncertain = bool(state.tasks(TaskState.LEASED))  # an import may have landed unrecorded
        self._project_version: str | None = None
        self._studio_down = False
        self._due = {"sweep": 0.0, "poll": 0.0, "renew": 0.0, "fill": 0.0}  # monotonic times
        self._ids_hidden = state.get(IDS_HIDDEN) is not None

    # -- the loop -------------------------------------------------------------------------------------------

    def hint(self, task_ids: set[int], deleted_annotation_ids: set[int]) -> None:
        """A webhook named these tasks (or deleted these annotations): look at them now. Ids that are no valid ids
        are ignored; past MAX_HINTS waiting, hints are dropped and the next round polls instead."""
        task_ids = {i for i in task_ids if valid_id(i) is not None}
        deleted_annotation_ids = {i for i in deleted_annotation_ids if valid_id(i) is not None}
        with self._hint_lock:
            if len(self._hint_tasks) + len(self._hint_deleted) + len(task_ids) + len(deleted_annotation_ids) \
                    > MAX_HINTS:
                self._hints_dropped = True
            else:
                self._hint_tasks |= task_ids
                self._hint_deleted |= deleted_annotation_ids
        self.wake.set()

    def pending_hints(self) -> int:
        """How many ids webhooks named that the loop has not looked at yet (at most MAX_HINTS)."""
        with self._hint_lock:
            return len(self._hint_tasks) + len(self._hint_deleted)

    def run(self, stop: threading.Event) -> None:
        """Run until `stop` is set. Label Studio outages are waited out here; coordinator outages in the client's
        retries (the client should retry without limit and stop retrying when `stop` is set). A coordinator that
        refuses the token (UNAUTHENTICATED, PERMISSION_DENIED) ends it: the RpcError is raised."""
        backoff = 0.0
        while not stop.is_set():
            try:
                self.step()
            except StudioUnavailable as exc:
                if not self._studio_down:
                    log.warning("Label Studio does not answer (%s); trying again until it does", exc)
                    self._studio_down = True
                backoff = min(MAX_BACKOFF, max(0.5, backoff * 2))
                stop.wait(backoff)
                continue
            except grpc.RpcError as exc:
                if stop.is_set():
                    return  # a retry abandoned because we are stopping
                if exc.code() in REFUSED:
                    raise  # the command ends with one line on the token
                log.error("the coordinator answered %s: %s", exc.code().name, exc.details())
                stop.wait(MAX_BACKOFF)
                continue
            except ApiError as exc:
                log.error("Label Studio answered %s: %s", exc.status_code, exc.body)
                stop.wait(MAX_BACKOFF)
                continue
            if self._studio_down:
                log.info("Label Studio answers again")
                self._studio_down = False
            backoff = 0.0
            self.wake.wait(max(0.0, min(self._due.values()) - time.monotonic()))

    def step(self) -> None:
        """One round: the tasks webhooks named, then whatever is due (sweep or poll, renewals, window)."""
        self.wake.clear()
        with self._hint_lock:
            tasks, deleted = self._hint_tasks, self._hint_deleted
            self._hint_tasks, self._hint_deleted = set(), set()
            if self._hints_dropped:
                self._hints_dropped = False
                self._due["poll"] = 0.0
        try:
            for annotation_id in deleted:
                task_id = self.state.task_of_annotation(annotation_id)
                if task_id is not None:
                    tasks.add(task_id)
            # only the bridge's own tasks are asked for: a webhook may name anything (it is a hint, not a fact)
            tasks = {t for t in tasks if self._live(t)}
            deleted = set()
            if tasks:
                self._sync_ids(tasks)
        except BaseException:
            self.hint(tasks, deleted)  # not done: keep them for the next round
            raise
        if not self._ids_hidden:
            self._hide_item_ids()
        now = time.monotonic()
        if now >= self._due["sweep"]:
            self._sweep()
            self._due["sweep"] = now + self.config.sweep_seconds
            self._due["poll"] = now + self.config.poll_seconds
        elif now >= self._due["poll"]:
            self._poll()
            self._due["poll"] = now + self.config.poll_seconds
        if now >= self._due["renew"]:
            self._renew()
            self._due["renew"] = now + self.config.lease_seconds * RENEW_FRACTION
        if now >= self._due["fill"]:
            self._fill()
            self._refresh()
            self._due["fill"] = now + self.config.refresh_seconds

    def close(self, webhook_id: int | None = None) -> None:
        """Stop posting webhooks to a bridge that is gone (Label Studio would wait for each, inside a save). Leases
        are kept: a restarted bridge carries on with them."""
        if webhook_id is not None:
            try:
                self.studio.deactivate_webhook(webhook_id)
            except Exception as exc:  # best effort on the way out
                log.warning("could not deactivate the webhook: %s", exc)

    # -- reading Label Studio ---------------------------------------------------------------------------------

    def _live(self, task_id: int) -> bool:
        row = self.state.by_task_id(task_id)
        return row is not None and row.state in (TaskState.OPEN, TaskState.LABELED)

    def _sync_ids(self, task_ids: set[int]) -> None:
        found = set()
        for task in self.studio.tasks(self.project_id, ids=sorted(task_ids)):
            found.add(task["id"])
            self._reconcile(task)
        for task_id in task_ids - found:
            row = self.state.by_task_id(task_id)
            if row is not None and row.state in (TaskState.OPEN, TaskState.LABELED):
                if not self.studio.task_exists(task_id):
                    self._task_gone(row)

    def _poll(self) -> None:
        """The tasks updated since the last poll (with a margin): annotations whose webhook was missed."""
        if self._watermark is None:
            return self._sweep()
        newest = self._watermark
        after = (self._watermark - POLL_MARGIN).isoformat()
        for task in self.studio.tasks(self.project_id, updated_after=after):
            newest = _later(newest, task.get("updated_at"))
            self._reconcile(task)
        self._watermark = newest

    def _sweep(self) -> None:
        """Every task of the project: at start (what happened while the bridge was down), then now and then (task
        deletions, and edits that do not touch a task's update time)."""
        newest = self._watermark
        seen = set()
        for task in self.studio.tasks(self.project_id):
            seen.add(task["id"])
            newest = _later(newest, task.get("updated_at"))
            self._reconcile(task)
        for row in self.state.tasks(TaskState.OPEN, TaskState.LABELED):
            # pages may shift under a listing while tasks are deleted: a task is gone only once asked for by id
            if row.ls_task_id not in seen and not self.studio.task_exists(row.ls_task_id):
                self._task_gone(row)
        self._watermark = newest

    # -- annotations -> labels --------------------------------------------------------------------------------

    def _reconcile(self, task: dict) -> None:
        """Bring L in line with one task's annotations as Label Studio has them now. A task that cannot be read is
        marked (and logged) once per reason; it never stops the loop."""
        row = self.state.by_task_id(task["id"])  # Studio.tasks yields valid ids only
        if row is None or row.state not in (TaskState.OPEN, TaskState.LABELED):
            return  # not the bridge's task, or no longer its concern
        try:
            problems = self._reconcile_row(row, task)
        except ODD_DATA as exc:
            problems = [f"{type(exc).__name__}: {exc}"]
        if problems:
            reason = "; ".join(problems)[:500]
            if self.state.mark_unreadable(row.ls_task_id, reason):
                log.warning("task %s cannot be read (%s); its readable annotations count, the rest are ignored until "
                            "it changes", row.ls_task_id, " ".join(reason.split()))
        else:
            self.state.clear_unreadable(row.ls_task_id)

    def _read_annotation(self, a) -> tuple[int, int | None, bool, str, str | None]:
        """(id, label, cancelled, updated_at, why its result is unreadable or None) of one annotation of a task;
        Unreadable when it has no valid id or time."""
        if not isinstance(a, dict):
            raise Unreadable(f"an annotation is a {type(a).__name__}")
        aid = valid_id(a.get("id"))
        if aid is None:
            raise Unreadable(f"an annotation has no valid id ({str(a.get('id'))[:40]!r})")
        try:
            stamp = timestamp(a.get("updated_at"))
        except (ValueError, TypeError, AttributeError):
            raise Unreadable(f"annotation {aid} has no valid updated_at") from None
        cancelled = a.get("was_cancelled") is True
        try:
            label = None if cancelled else label_of(a.get("result"), self.interface)
        except Unreadable as exc:
            return aid, None, cancelled, stamp, str(exc)
        return aid, label, cancelled, stamp, None

    def _reconcile_row(self, row: TaskRow, task: dict) -> list[str]:
        """_reconcile's work; returns why parts of the task could not be read (nothing when all could)."""
        annotations = task.get("annotations") or []
        if not isinstance(annotations, list):
            return [f"its annotations are a {type(annotations).__name__}, not a list"]
        known = self.state.annotations_of(row.lease_id)
        current: dict[int, tuple[int | None, bool, str]] = {}
        changed = []
        odd: set[int] = set()
        problems = []
        for a in annotations:
            try:
                aid, label, cancelled, stamp, why = self._read_annotation(a)
            except Unreadable as exc:
                problems.append(str(exc))
                continue
            current[aid] = (label, cancelled, stamp)
            if why is not None:
                odd.add(aid)
            k = known.get(aid)
            if k is None or k.deleted or (k.label, k.cancelled, k.ls_updated_at) != (label, cancelled, stamp):
                self.state.record_annotation(ls_annotation_id=aid, lease_id=row.lease_id, label=label,
                                             cancelled=cancelled, ls_updated_at=stamp)
                changed.append(aid)
                if why is not None:  # once per version of the annotation: its record is not retried
                    self.state.set_outcome(aid, "unreadable")
                    log.warning("annotation %s on task %s is unreadable (%s): ignored", aid, row.ls_task_id, why)
        deleted = [aid for aid, k in known.items() if aid not in current and not k.deleted]
        for aid in deleted:
            self.state.mark_deleted(aid)
        labeled = sorted((stamp, aid, label) for aid, (label, cancelled, stamp) in current.items()
                         if not cancelled and label is not None)
        latest = labeled[-1] if labeled else None
        if row.state == TaskState.OPEN:
            if latest is not None:
                self._submit(row, latest[1], latest[2])
            elif any(not cancelled for _, cancelled, _ in current.values()):
                for aid in changed:
                    if not current[aid][1] and aid not in odd:
                        log.warning("annotation %s on task %s chooses no single class of the task; waiting for "
                                    "one that does", aid, row.ls_task_id)
                        self.state.set_outcome(aid, "unreadable")
            elif current:  # only cancelled annotations
                self._cancel(row, [aid for aid in current])
        else:
            if latest is not None and latest[2] != row.label and latest[2] != row.refused_label:
                self._correct(row, latest[1], latest[2])
            elif latest is not None and latest[1] in changed:
                self.state.set_outcome(latest[1], "unchanged", row.seq)
            elif latest is None and (set(changed) - odd or deleted):
                log.info("task %s has no label left in Label Studio; item %s keeps label %s in L (L is "
                         "append-only: annotate the task again to correct it)", row.ls_task_id, row.item_id, row.label)
        return problems

    def _submit(self, row: TaskRow, annotation_id: int, label: int) -> None:
        try:
            result = self.client.submit(_query(row), label)
        except grpc.RpcError as exc:
            if exc.code() not in LEASE_GONE:
                raise
            self.state.set_outcome(annotation_id, "lost")
            return self._lost(row, annotated=True)
        self.state.set_state(row.lease_id, TaskState.LABELED, label=label, seq=result.seq)
        self.state.set_outcome(annotation_id, "submitted", result.seq)
        self._due["fill"] = 0.0  # a place in the window is free
        log.info("item %s labeled %d from annotation %s (task %s): record %d in L", row.item_id, label,
                 annotation_id, row.ls_task_id, result.seq)

    def _correct(self, row: TaskRow, annotation_id: int, label: int) -> None:
        try:
            result = self.client.correct(row.item_id, label)
        except grpc.RpcError as exc:
            if exc.code() not in (grpc.StatusCode.PERMISSION_DENIED, *LEASE_GONE):
                raise
            log.warning("the coordinator refused to correct item %s to %d (annotation %s): %s: %s", row.item_id, label,
                        annotation_id, exc.code().name, exc.details())
            self.state.set_refused(row.lease_id, label)
            self.state.set_outcome(annotation_id, "refused")
            return
        self.state.set_state(row.lease_id, TaskState.LABELED, label=label, seq=result.seq)
        self.state.set_outcome(annotation_id, "unchanged" if result.duplicate else "corrected", result.seq)
        log.info("item %s corrected from %s to %d by annotation %s: record %d in L", row.item_id, row.label, label,
                 annotation_id, result.seq)

    def _cancel(self, row: TaskRow, annotation_ids: list[int]) -> None:
        """Give the query back (defer or skip), then take the task out of the project. Released first: a bridge
        stopped in between finds the task and its cancelled annotation again, and finishes the job."""
        try:
            if self.config.on_cancel == "skip":
                self.client.skip(_query(row))
            else:
                self.client.defer(_query(row), defer_seconds=self.config.defer_seconds)
        except grpc.RpcError as exc:
            if exc.code() not in LEASE_GONE:
                raise  # the lease is gone already (given back before a restart): nothing to give back
        self.studio.delete_task(row.ls_task_id)
        self.state.set_state(row.lease_id, TaskState.RELEASED)
        outcome = "skipped" if self.config.on_cancel == "skip" else "deferred"
        for aid in annotation_ids:
            self.state.set_outcome(aid, outcome)
        self._due["fill"] = 0.0
        log.info("item %s %s: its annotation on task %s was cancelled", row.item_id, outcome, row.ls_task_id)

    def _task_gone(self, row: TaskRow) -> None:
        """Someone deleted the task in Label Studio."""
        if row.state == TaskState.LABELED:
            self.state.set_state(row.lease_id, TaskState.REMOVED)
            return
        self._give_back(row)
        self.state.set_state(row.lease_id, TaskState.RELEASED)
        self._due["fill"] = 0.0
        log.info("task %s was deleted in Label Studio: item %s given back", row.ls_task_id, row.item_id)

    def _give_back(self, row: TaskRow) -> None:
        try:
            self.client.release(_query(row))
        except grpc.RpcError as exc:
            if exc.code() not in LEASE_GONE:
                raise

    def _lost(self, row: TaskRow, *, annotated: bool) -> None:
        """The lease is no longer ours (it lapsed while nobody renewed it): the task leaves the project, unless
        someone annotated it (that work stays visible, but cannot reach L through this lease)."""
        try:
            item = self.client.get_item(row.item_id)
            where = item.state + (f" by {item.labeled_by}" if item.labeled_by else "")
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise
            where = "unknown to the coordinator"
        if row.ls_task_id is not None and not annotated:
            self.studio.delete_task(row.ls_task_id)
        self.state.set_state(row.lease_id, TaskState.LOST)
        self._due["fill"] = 0.0
        if annotated:
            log.warning("the lease on item %s lapsed before its annotation on task %s reached L; the item is %s now",
                        row.item_id, row.ls_task_id, where)
        else:
            log.info("the lease on item %s lapsed (the item is %s now): task %s removed", row.item_id, where,
                     row.ls_task_id)

    # -- queries -> tasks -------------------------------------------------------------------------------------

    def _renew(self) -> None:
        if self._import_uncertain:
            self._adopt()  # a lease that lapsed must find its task, if an unanswered import made one
        lapsed = []
        for row in self.state.tasks(*HELD):
            try:
                self.client.renew(_query(row))
            except grpc.RpcError as exc:
                if exc.code() not in LEASE_GONE:
                    raise
                lapsed.append(row)
        if not lapsed:
            return
        self._sync_ids({row.ls_task_id for row in lapsed if row.ls_task_id is not None})  # annotations first
        for row in lapsed:
            now = next((r for r in self.state.tasks(*HELD) if r.lease_id == row.lease_id), None)
            if now is not None:
                self._lost(now, annotated=self.state.annotated(now.lease_id))

    def _lease(self) -> LeasedQuery | None:
        query = self.client.lease(wait_seconds=0.0)
        if query is not None:
            p = query.provenance
            self.state.add_leased(lease_id=query.lease_id, item_id=query.item_id, model_version=p.model_version,
                                  score=p.score)
            self._queries[query.lease_id] = (query.payload, p)
        return query

    def _fill(self) -> None:
        """Lease until the window is full (or S has nothing more, or the coordinator's cap on one annotator's
        leases is reached: a window above it is as full as the cap lets it be, said once), and show what was
        leased."""
        room = self.config.window - self.state.count(*HELD)
        try:
            while room > 0 and self._lease() is not None:
                room -= 1
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise
            if not self._said_capped:
                self._said_capped = True
                log.warning("the coordinator caps this annotator's leases below --window %d: the window holds %d "
                            "(%s)", self.config.window, self.state.count(*HELD), exc.details())
        self._import_leased()

    def _import_leased(self) -> None:
        """Create the tasks of leases that are not in Label Studio yet."""
        if self._import_uncertain:
            self._adopt()
        pending = self.state.tasks(TaskState.LEASED)
        for start in range(0, len(pending), IMPORT_BATCH):
            rows = pending[start:start + IMPORT_BATCH]
            tasks = []
            for row in rows:
                payload, provenance = self._item(row)
                tasks.append(task_json(task_ref(row.lease_id), payload, provenance, self.interface))
            self._import_uncertain = True  # until the answer is recorded
            ids = self.studio.import_tasks(self.project_id, tasks)
            for row, task_id in zip(rows, ids):
                self._record_task_id(row, task_id)
            self._import_uncertain = False
            clusters = {task_id: t["data"]["cluster"] for task_id, t in zip(ids, tasks)
                        if t["data"]["cluster"] is not None}
            if clusters:  # best effort: the task data holds the cluster in any case
                self.studio.set_prediction_clusters(self.project_id, clusters)
        if pending:
            self._show_newest_version()

    def _item(self, row: TaskRow) -> tuple[Payload, Provenance]:
        if row.lease_id in self._queries:
            return self._queries[row.lease_id]
        item = self.client.get_item(row.item_id)  # a lease taken before a restart
        return item.payload or _NO_PAYLOAD, item.provenance or Provenance()

    def _adopt(self) -> None:
        """Find the tasks of an import whose answer never came back (by the reference in their data; by the item's
        id for an import of a bridge from before references)."""
        rows = self.state.tasks(TaskState.LEASED)
        by_ref = {task_ref(row.lease_id): row for row in rows}
        by_item = {row.item_id: row for row in rows}
        if rows:
            for task in self.studio.tasks(self.project_id, data_in={REF_FIELD: sorted(by_ref),
                                                                    LEGACY_ID_FIELD: sorted(by_item)},
                                          with_data=True):
                data = _data(task)
                row = by_ref.pop(str(data.get(REF_FIELD)), None) or by_item.pop(str(data.get(LEGACY_ID_FIELD)), None)
                if row is not None:
                    self._record_task_id(row, task["id"])
                    self._hide_item_id(task["id"], data, row)
        self._import_uncertain = False

    def _hide_item_ids(self) -> None:
        """Once per state dir: the tasks that a bridge from before references made show their item's id to
        annotators; their data takes the reference instead."""
        rows = {row.ls_task_id: row for row in self.state.tasks(TaskState.OPEN, TaskState.LABELED)}
        if rows:
            for task in self.studio.tasks(self.project_id, ids=sorted(rows), include="id,data"):
                self._hide_item_id(task["id"], _data(task), rows[task["id"]])
        self.state.put(IDS_HIDDEN, "1")
        self._ids_hidden = True

    def _hide_item_id(self, task_id: int, data: dict, row: TaskRow) -> None:
        if LEGACY_ID_FIELD in data:
            shown = {k: v for k, v in data.items() if k != LEGACY_ID_FIELD}
            self.studio.set_task_data(task_id, {**shown, REF_FIELD: task_ref(row.lease_id)})
            log.info("task %s no longer shows its item's id", task_id)

    def _record_task_id(self, row: TaskRow, task_id: int) -> None:
        """The lease's task is `task_id`. Label Studio on SQLite gives a deleted task's id to the next task: a live
        row still holding the id lost its task without our noticing, and is dealt with as such first."""
        holder = self.state.by_task_id(task_id)
        if holder is not None and holder.lease_id != row.lease_id:
            self._task_gone(holder)
        self.state.set_task_id(row.lease_id, task_id)
        self._queries.pop(row.lease_id, None)

    def _show_newest_version(self) -> None:
        """Point the project's model version (what uncertainty sampling serves first) at the newest version shown."""
        rows = self.state.tasks(TaskState.OPEN)
        if not rows:
            return
        newest = str(max(row.model_version for row in rows))
        if newest != self._project_version:
            try:
                self.studio.set_model_version(self.project_id, int(newest))
            except ApiError as exc:  # the order within the project suffers, nothing else: no reason to stop
                log.warning("Label Studio refused model version %s for the project: %s", newest, exc.body)
            self._project_version = newest

    def _refresh(self) -> None:
        """Swap stale tasks (no annotation, an older model version than queries waiting in S) for fresh queries.

        Leases come newest model first (the coordinator's --pick fresh), so probing stops at the first query no
        newer than the stalest task; a probe that is not shown goes straight back to S.
        """
        idle = [row for row in self.state.tasks(TaskState.OPEN) if not self.state.annotated(row.lease_id)]
        idle.sort(key=lambda r: (r.model_version, r.score))
        probes: list[LeasedQuery] = []
        while len(probes) < len(idle):
            probe = self.client.lease(wait_seconds=0.0)
            if probe is None:
                break
            probes.append(probe)
            if probe.provenance.model_version <= idle[0].model_version:
                break
        probes.sort(key=lambda q: (q.provenance.model_version, q.provenance.score), reverse=True)
        pairs = [(q, row) for q, row in zip(probes, idle) if q.provenance.model_version > row.model_version]
        swapped = []
        if pairs:
            # an annotator may have started on a task since the last look: only tasks still untouched are swapped
            untouched = {t["id"] for t in self.studio.tasks(self.project_id, ids=[row.ls_task_id for _, row in pairs])
                         if not t.get("annotations") and not t.get("draft_exists")}
            pairs = [(query, row) for query, row in pairs if row.ls_task_id in untouched]
            # out of the project first: a bridge stopped in between sees deleted tasks and gives them back
            self.studio.delete_tasks(self.project_id, [row.ls_task_id for _, row in pairs])
            for query, row in pairs:
                self._give_back(row)
                self.state.set_state(row.lease_id, TaskState.RELEASED)
                p = query.provenance
                self.state.add_leased(lease_id=query.lease_id, item_id=query.item_id, model_version=p.model_version,
                                      score=p.score)
                self._queries[query.lease_id] = (query.payload, p)
                swapped.append(query)
        shown = {query.lease_id for query in swapped}
        for query in probes:
            if query.lease_id not in shown:
                self.client.release(query)
        if swapped:
            log.info("refreshed %d stale tasks with queries of model version %d", len(swapped),
                     max(q.provenance.model_version for q in swapped))
            self._import_leased()


def _data(task: dict) -> dict:
    """A task's data (anything but an object reads as empty: someone may have edited it)."""
    data = task.get("data")
    return data if isinstance(data, dict) else {}


def _later(newest: dt.datetime | None, value) -> dt.datetime | None:
    """The later of a watermark and a task's updated_at (a datetime or its ISO text; anything else is ignored)."""
    try:
        if isinstance(value, str):
            value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        if not isinstance(value, dt.datetime):
            return newest
        value = value.astimezone(dt.timezone.utc)
    except (ValueError, OverflowError):
        return newest
    return value if newest is None else max(newest, value)
