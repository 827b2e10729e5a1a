"""The reconciling of annotations: reading a task's annotations in Label Studio, deciding what each means, and
submitting the labels, corrections and cancellations that follow to the coordinator.

The label of a task is that of its latest annotation that chooses one class:
- the first such annotation becomes SubmitLabel (with the task's lease);
- a later change of that label (an annotation updated, or another one added) becomes CorrectLabel;
- a cancelled annotation (Label Studio's Skip) on a task with no label gives the query back: DEFER by default (others
  may label it; this project is not offered it again for a while), SKIP with on_cancel="skip" (never offered to
  anyone again); the task then leaves the project;
- deleting annotations changes nothing in L (append-only; a label cannot be withdrawn): the task shows as unlabeled
  again, and a new annotation on it becomes a correction. Deleting a task whose lease the bridge holds gives the
  query back (RETURN).

Every annotation seen is recorded in the state file (keyed on its Label Studio id) with who made it and what was done.
The bridge holds the leases, and names the Label Studio user behind each label and correction as its labeler
(`labeler_name`: their e-mail, else their user id), so L records it as `<bridge>/<user>` and consensus, the
annotators' figures and the lead's page see each person. That takes a coordinator token allowed to delegate
(`annotator+delegate IDENTITY TOKEN`, or an admin's); with another token every label is the bridge's own, and the
user is only in the state file (BridgeState.labelers) and in the bridge's log. Decisions are
made from Label Studio's current state of a task against the state file, and every call that changes L is
idempotent (SubmitLabel per lease, CorrectLabel per item and label), so a restart of the bridge, the coordinator or
Label Studio at any point loses no annotation and duplicates none. Intermediate edits made while the bridge was down
collapse into the latest one.

Whatever Label Studio holds may be odd: its API takes any JSON as an annotation's result, from any user. An annotation
that is not in the editor's shape is recorded as unreadable (logged once) and the task waits for one that chooses a
class; a task that cannot be read at all is marked as such in the state file (logged once per reason). Neither stops
the loop, nor the tasks after it.
"""

from __future__ import annotations

import datetime as dt
import logging

import grpc

from aal_rpc.client.annotation import LEASE_GONE
from aal_rpc.labelstudio.config import Unreadable, label_of
from aal_rpc.labelstudio.ids import valid_id
from aal_rpc.labelstudio.state import TaskRow, TaskState
from aal_rpc.labelstudio.studio import timestamp
from aal_rpc.labelstudio.window import Window, query_of

log = logging.getLogger("aal.labelstudio")

POLL_MARGIN = dt.timedelta(seconds=30)  # a poll looks this far behind the newest update seen (commits land late)
# what odd data in a task raises while it is read (the calls to Label Studio and the coordinator raise other errors)
ODD_DATA = (Unreadable, ValueError, TypeError, KeyError, AttributeError, IndexError, OverflowError)
MAX_EMAIL = 254  # characters of an e-mail address
MAX_USERS = 10_000  # Label Studio users whose e-mail the bridge keeps in memory


def usable_email(email) -> bool:
    return isinstance(email, str) and 0 < len(email) <= MAX_EMAIL and email.isprintable() and " " not in email


def labeler(annotation: dict, email_of=lambda user_id: None) -> str:
    """The Label Studio user who made an annotation: ls:<email> (from the annotation, else `email_of(user id)`),
    ls:<user id> when no usable e-mail is known, "" when it names nobody (its API may hold anything there)."""
    who = annotation.get("completed_by")
    email = who.get("email") if isinstance(who, dict) else None
    user_id = valid_id(who.get("id") if isinstance(who, dict) else who)
    if not usable_email(email) and user_id is not None:
        email = email_of(user_id)
    if usable_email(email):
        return f"ls:{email}"
    return f"ls:{user_id}" if user_id is not None else ""


def labeler_name(who: str) -> str:
    """The labeler the coordinator records for a Label Studio user (`labeler`'s "ls:<email>" or "ls:<user id>"):
    the e-mail or the user id; "" (the bridge's own label) when the annotation names nobody."""
    return who.removeprefix("ls:")


class Reconciler:
    """Brings L in line with the annotations of the window's tasks. on_cancel: "defer" or "skip"; defer_seconds: 0
    for the coordinator's default; name_labelers: name each Label Studio user as the labeler (the token may)."""

    def __init__(self, window: Window, *, on_cancel: str = "defer", defer_seconds: float = 0.0,
                 name_labelers: bool = False):
        self.window = window
        self.client = window.client
        self.studio = window.studio
        self.state = window.state
        self.project_id = window.project_id
        self.interface = window.interface
        self.on_cancel = on_cancel
        self.defer_seconds = defer_seconds
        self.name_labelers = name_labelers
        self._watermark: dt.datetime | None = None  # the newest task update seen by a poll or sweep
        self._emails: dict[int, str | None] = {}  # Label Studio user id -> e-mail (None: not shown to the bridge)

    def _email_of(self, user_id: int) -> str | None:
        if user_id not in self._emails:
            if len(self._emails) >= MAX_USERS:
                self._emails.clear()
            self._emails[user_id] = self.studio.user_email(user_id)
        return self._emails[user_id]

    # -- reading Label Studio ---------------------------------------------------------------------------------

    def live(self, task_id: int) -> bool:
        """The task is one of the bridge's and still its concern."""
        row = self.state.by_task_id(task_id)
        return row is not None and row.state in (TaskState.OPEN, TaskState.LABELED)

    def sync_ids(self, task_ids: set[int]) -> None:
        """These tasks, by id (a task asked for and not found is gone once Label Studio says so by id)."""
        found = set()
        for task in self.studio.tasks(self.project_id, ids=sorted(task_ids)):
            found.add(task["id"])
            self.reconcile(task)
        for task_id in task_ids - found:
            row = self.state.by_task_id(task_id)
            if row is not None and row.state in (TaskState.OPEN, TaskState.LABELED):
                if not self.studio.task_exists(task_id):
                    self.window.task_gone(row)

    def poll(self) -> None:
        """The tasks updated since the last poll (with a margin): annotations whose webhook was missed."""
        if self._watermark is None:
            return self.sweep()
        newest: dt.datetime | None = self._watermark
        after = (self._watermark - POLL_MARGIN).isoformat()
        for task in self.studio.tasks(self.project_id, updated_after=after):
            newest = _later(newest, task.get("updated_at"))
            self.reconcile(task)
        self._watermark = newest

    def sweep(self) -> None:
        """Every task of the project: at start (what happened while the bridge was down), then now and then (task
        deletions, and edits that do not touch a task's update time)."""
        newest = self._watermark
        seen = set()
        for task in self.studio.tasks(self.project_id):
            seen.add(task["id"])
            newest = _later(newest, task.get("updated_at"))
            self.reconcile(task)
        for row in self.state.tasks(TaskState.OPEN, TaskState.LABELED):
            # pages may shift under a listing while tasks are deleted: a task is gone only once asked for by id
            if row.task_id not in seen and not self.studio.task_exists(row.task_id):
                self.window.task_gone(row)
        self._watermark = newest

    # -- annotations -> labels --------------------------------------------------------------------------------

    def reconcile(self, task: dict) -> None:
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
            if self.state.mark_unreadable(row.task_id, reason):
                log.warning("task %s cannot be read (%s); its readable annotations count, the rest are ignored until "
                            "it changes", row.ls_task_id, " ".join(reason.split()))
        else:
            self.state.clear_unreadable(row.task_id)

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
        """reconcile's work; returns why parts of the task could not be read (nothing when all could)."""
        annotations = task.get("annotations") or []
        if not isinstance(annotations, list):
            return [f"its annotations are a {type(annotations).__name__}, not a list"]
        known = self.state.annotations_of(row.lease_id)
        current: dict[int, tuple[int | None, bool, str]] = {}
        who: dict[int, str] = {}
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
            who[aid] = labeler(a, self._email_of)
            if why is not None:
                odd.add(aid)
            k = known.get(aid)
            if k is None or k.deleted or (k.label, k.cancelled, k.ls_updated_at) != (label, cancelled, stamp):
                self.state.record_annotation(ls_annotation_id=aid, lease_id=row.lease_id, label=label,
                                             cancelled=cancelled, ls_updated_at=stamp, completed_by=who[aid])
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
                self._submit(row, latest[1], latest[2], who[latest[1]])
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
                self._correct(row, latest[1], latest[2], who[latest[1]])
            elif latest is not None and latest[1] in changed:
                self.state.set_outcome(latest[1], "unchanged", row.seq)
            elif latest is None and (set(changed) - odd or deleted):
                log.info("task %s has no label left in Label Studio; item %s keeps label %s in L (L is "
                         "append-only: annotate the task again to correct it)", row.ls_task_id, row.item_id, row.label)
        return problems

    def _submit(self, row: TaskRow, annotation_id: int, label: int, by: str) -> None:
        try:
            result = self.client.submit(query_of(row), label, labeler=self._labeler(by))
        except grpc.RpcError as exc:
            if exc.code() not in LEASE_GONE:
                raise
            self.state.set_outcome(annotation_id, "lost")
            return self.window.lost(row, annotated=True)
        self.state.set_state(row.lease_id, TaskState.LABELED, label=label, seq=result.seq)
        self.state.record_in_l(result.seq, annotation_id, by)
        self.state.set_outcome(annotation_id, "submitted", result.seq)
        self.window.room()  # a place in the window is free
        log.info("item %s labeled %d from annotation %s by %s (task %s): record %d in L", row.item_id, label,
                 annotation_id, by or "an unknown user", row.ls_task_id, result.seq)

    def _correct(self, row: TaskRow, annotation_id: int, label: int, by: str) -> None:
        try:
            result = self.client.correct(row.item_id, label, labeler=self._labeler(by))
        except grpc.RpcError as exc:
            if exc.code() not in (grpc.StatusCode.PERMISSION_DENIED, *LEASE_GONE):
                raise
            log.warning("the coordinator refused to correct item %s to %d (annotation %s): %s: %s", row.item_id, label,
                        annotation_id, exc.code().name, exc.details())
            self.state.set_refused(row.lease_id, label)
            self.state.set_outcome(annotation_id, "refused")
            return
        self.state.set_state(row.lease_id, TaskState.LABELED, label=label, seq=result.seq)
        if not result.duplicate:
            self.state.record_in_l(result.seq, annotation_id, by)
        self.state.set_outcome(annotation_id, "unchanged" if result.duplicate else "corrected", result.seq)
        log.info("item %s corrected from %s to %d by annotation %s by %s: record %d in L", row.item_id, row.label,
                 label, annotation_id, by or "an unknown user", result.seq)

    def _labeler(self, by: str) -> str:
        return labeler_name(by) if self.name_labelers else ""

    def _cancel(self, row: TaskRow, annotation_ids: list[int]) -> None:
        """Give the query back (defer or skip), then take the task out of the project. Released first: a bridge
        stopped in between finds the task and its cancelled annotation again, and finishes the job."""
        try:
            if self.on_cancel == "skip":
                self.client.skip(query_of(row))
            else:
                self.client.defer(query_of(row), defer_seconds=self.defer_seconds)
        except grpc.RpcError as exc:
            if exc.code() not in LEASE_GONE:
                raise  # the lease is gone already (given back before a restart): nothing to give back
        self.studio.delete_task(row.task_id)
        self.state.set_state(row.lease_id, TaskState.RELEASED)
        outcome = "skipped" if self.on_cancel == "skip" else "deferred"
        for aid in annotation_ids:
            self.state.set_outcome(aid, outcome)
        self.window.room()
        log.info("item %s %s: its annotation on task %s was cancelled", row.item_id, outcome, row.ls_task_id)


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
