"""The bridge between the coordinator and a Label Studio project: leased queries become tasks, annotations become
labels. This is its loop; `window.Window` keeps the leased queries open as tasks (window.py says how), and
`reconcile.Reconciler` turns their annotations into labels (reconcile.py says what each case becomes).

Webhooks name the tasks to look at; polling every `poll_seconds` (tasks updated since the last poll, with a margin)
and a full sweep at start and every `sweep_seconds` catch whatever a webhook missed. The window is renewed every
quarter of `lease_seconds`, and filled and checked for stale tasks every `refresh_seconds` (at once when a place in
it comes free).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import grpc
from label_studio_sdk.core.api_error import ApiError

from aal_rpc.client.annotation import AnnotationClient
from aal_rpc.labelstudio.config import Interface
from aal_rpc.labelstudio.ids import valid_id
from aal_rpc.labelstudio.reconcile import Reconciler
from aal_rpc.labelstudio.state import BridgeState
from aal_rpc.labelstudio.studio import Studio, StudioUnavailable
from aal_rpc.labelstudio.window import Window

log = logging.getLogger("aal.labelstudio")

RENEW_FRACTION = 0.25  # leases are renewed after a quarter of their time: three renewals may fail before one lapses
MAX_BACKOFF = 5.0  # seconds between tries while Label Studio does not answer
MAX_HINTS = 10_000  # ids webhooks named that wait for the loop; past that they are dropped and a poll looks instead
REFUSED = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)  # the token: waiting cannot cure it


@dataclass(frozen=True)
class BridgeConfig:
    """window: queries shown at once; lease_seconds: each lease's length (renewed at a quarter of it);
    poll_seconds / sweep_seconds: the polling fallback; refresh_seconds: how often the window is filled and checked
    for stale tasks; on_cancel: "defer" or "skip"; defer_seconds: 0 for the coordinator's default; name_labelers: record
    each label as its Label Studio user's (reconcile.py)."""

    window: int = 50
    lease_seconds: float = 600.0
    poll_seconds: float = 5.0
    sweep_seconds: float = 300.0
    refresh_seconds: float = 5.0
    on_cancel: str = "defer"
    defer_seconds: float = 0.0
    name_labelers: bool = False  # name each Label Studio user as the labeler (the coordinator token may delegate)


class Bridge:
    """The bridge's loop; `hint()` may be called from any thread (the webhook receiver)."""

    def __init__(self, client: AnnotationClient, studio: Studio, state: BridgeState, project_id: int,
                 interface: Interface, config: BridgeConfig = BridgeConfig()):
        self.studio = studio
        self.state = state
        self.config = config
        self.window = Window(client, studio, state, project_id, interface, config.window, room=self._fill_soon)
        self.reconciler = Reconciler(self.window, on_cancel=config.on_cancel, defer_seconds=config.defer_seconds,
                                     name_labelers=config.name_labelers)
        self.wake = threading.Event()
        self._hint_lock = threading.Lock()
        self._hint_tasks: set[int] = set()
        self._hint_deleted: set[int] = set()
        self._hints_dropped = False  # more hints came than MAX_HINTS: poll instead
        self._studio_down = False
        self._due = {"sweep": 0.0, "poll": 0.0, "renew": 0.0, "fill": 0.0}  # monotonic times

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
            tasks = {t for t in tasks if self.reconciler.live(t)}
            deleted = set()
            if tasks:
                self.reconciler.sync_ids(tasks)
        except BaseException:
            self.hint(tasks, deleted)  # not done: keep them for the next round
            raise
        if not self.window.ids_hidden:
            self.window.hide_item_ids()
        now = time.monotonic()
        if now >= self._due["sweep"]:
            self.reconciler.sweep()
            self._due["sweep"] = now + self.config.sweep_seconds
            self._due["poll"] = now + self.config.poll_seconds
        elif now >= self._due["poll"]:
            self.reconciler.poll()
            self._due["poll"] = now + self.config.poll_seconds
        if now >= self._due["renew"]:
            self._renew()
            self._due["renew"] = now + self.config.lease_seconds * RENEW_FRACTION
        if now >= self._due["fill"]:
            self.window.fill()
            self.window.refresh()
            self._due["fill"] = now + self.config.refresh_seconds

    def _renew(self) -> None:
        lapsed = self.window.renew()
        if lapsed:
            # annotations first: what they became settles what the lapsed leases' tasks become
            self.reconciler.sync_ids({row.ls_task_id for row in lapsed if row.ls_task_id is not None})
            self.window.drop_lapsed(lapsed)

    def _fill_soon(self) -> None:
        """A place in the window came free: fill it in the next round, not a refresh_seconds later."""
        self._due["fill"] = 0.0

    def close(self, webhook_id: int | None = None) -> None:
        """Stop posting webhooks to a bridge that is gone (Label Studio would wait for each, inside a save). Leases
        are kept: a restarted bridge carries on with them."""
        if webhook_id is not None:
            try:
                self.studio.deactivate_webhook(webhook_id)
            except Exception as exc:  # best effort on the way out
                log.warning("could not deactivate the webhook: %s", exc)
