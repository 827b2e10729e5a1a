"""The window of the bridge: which leased queries are open as tasks of the Label Studio project, their leases kept
and given back, their tasks created and deleted.

The bridge is one annotator of the coordinator. It keeps a window of `size` leased queries as tasks of the project,
each with the item (its picture as a data: URL of its own media type, or the text), its provenance in the task data
(model_version, score, strategy, cluster), an opaque reference (aal_ref, never the item's id: annotators see task data,
and an id may give the answer away) and one prediction whose result is that model's guess (the class it predicts,
pre-filled in the editor, with its probability as the region's score; empty without a guess), whose model_version is
the model that chose the item, whose cluster is Cluster-Margin's cluster, and whose score is the coordinator's
priority turned around (1 / (1 + e^score): Label Studio's uncertainty sampling serves the lowest score first, and
spreads annotators over clusters). It renews the leases it holds well before they lapse. When a lease shows that S holds queries of a newer
model than some of its unannotated tasks, it gives those stale tasks back (RETURN) and shows the fresh queries
instead, so the project follows the coordinator's order. A task whose lease was lost (expired while the bridge was
down; the item may since be labeled elsewhere) is removed from the project unless someone annotated it.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import math
from collections.abc import Callable

import grpc
from label_studio_sdk.core.api_error import ApiError

from aal_rpc.client.annotation import LEASE_GONE, AnnotationClient, LeasedQuery
from aal_rpc.labelstudio.config import IMAGE_PANEL, REF_FIELD, Interface, result_for
from aal_rpc.labelstudio.state import HELD, BridgeState, TaskRow, TaskState
from aal_rpc.labelstudio.studio import Studio
from aal_rpc.types import Payload, Provenance, strategy_shown

log = logging.getLogger("aal.labelstudio")

IMPORT_BATCH = 100  # tasks per import request
NO_PAYLOAD = Payload(b"", "float32", (0,))
LEGACY_ID_FIELD = "item_id"  # where bridges before aal_ref put the item's id in task data
IDS_HIDDEN = "item_ids_hidden"  # state meta: the tasks of older bridges no longer show item ids


def priority(score: float) -> float:
    """The prediction score that makes Label Studio ask the coordinator's first choice first: it serves the lowest
    score first, the coordinator the highest. 1 / (1 + e^score), in (0, 1), decreasing, computed without overflow."""
    if score >= 0:
        e = math.exp(-score)
        return e / (1.0 + e)
    return 1.0 / (1.0 + math.exp(score))


def item_content(payload: Payload, kind: str) -> str:
    """What the project's object shows: the picture as a data: URL (a small one enlarged by a whole factor to at most
    config.IMAGE_PANEL pixels, each pixel a block: Label Studio stretches pictures to its panel, and would blur a
    small one), or the text (a short summary of the values of an item that has neither)."""
    if kind == "image":
        from aal_rpc.data.images import render_png
        from aal_rpc.data.pictures import enlarged_picture

        picture = payload.image or render_png(payload.to_array())
        if not picture:
            return ""
        shown = enlarged_picture(picture, IMAGE_PANEL)
        if shown is picture and payload.image:
            return payload.image_data_url()  # its own media type
        return "data:image/png;base64," + base64.b64encode(shown).decode()
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
    prediction = {"result": guess_result(provenance, interface), "score": priority(provenance.score),
                  "model_version": str(provenance.model_version)}
    if provenance.cluster is not None:
        prediction["cluster"] = provenance.cluster
    return {"data": data, "predictions": [prediction]}


def guess_result(provenance: Provenance, interface: Interface) -> list[dict]:
    """The prediction's result: the model's guess (Provenance.guess) as the choice Label Studio pre-fills, with the
    guess's probability as its score; none when the item came without one (a cold start, an audit or gold item)."""
    if provenance.guess is None or provenance.guess not in interface.classes.values():
        return []
    return [dict(region, score=provenance.guess_probability) for region in result_for(provenance.guess, interface)]


def query_of(row: TaskRow) -> LeasedQuery:
    """The lease of a row, as the client's calls take it (only the ids matter to them)."""
    return LeasedQuery(row.item_id, row.lease_id, 0.0, NO_PAYLOAD, Provenance())


class Window:
    """The leases the bridge holds and the tasks that show them. `room` is called whenever a place in the window
    comes free (the loop then fills it at once)."""

    def __init__(self, client: AnnotationClient, studio: Studio, state: BridgeState, project_id: int,
                 interface: Interface, size: int, room: Callable[[], None] = lambda: None):
        self.client = client
        self.studio = studio
        self.state = state
        self.project_id = project_id
        self.interface = interface
        self.size = size
        self.room = room
        self._queries: dict[str, tuple[Payload, Provenance]] = {}  # items of leases not yet in Label Studio
        self._said_capped = False  # the coordinator's lease cap stopped a fill (said once)
        self._import_uncertain = bool(state.tasks(TaskState.LEASED))  # an import may have landed unrecorded
        self._project_version: str | None = None
        self.ids_hidden = state.get(IDS_HIDDEN) is not None

    # -- leases ---------------------------------------------------------------------------------------------

    def renew(self) -> list[TaskRow]:
        """Renew every lease held; returns the rows whose lease is gone (for `drop_lapsed`, once their
        annotations were read)."""
        if self._import_uncertain:
            self._adopt()  # a lease that lapsed must find its task, if an unanswered import made one
        lapsed = []
        for row in self.state.tasks(*HELD):
            try:
                self.client.renew(query_of(row))
            except grpc.RpcError as exc:
                if exc.code() not in LEASE_GONE:
                    raise
                lapsed.append(row)
        return lapsed

    def drop_lapsed(self, lapsed: list[TaskRow]) -> None:
        """The rows `renew` found lapsed, as they stand now (reading their annotations may have settled some)."""
        for row in lapsed:
            now = next((r for r in self.state.tasks(*HELD) if r.lease_id == row.lease_id), None)
            if now is not None:
                self.lost(now, annotated=self.state.annotated(now.lease_id))

    def give_back(self, row: TaskRow) -> None:
        try:
            self.client.release(query_of(row))
        except grpc.RpcError as exc:
            if exc.code() not in LEASE_GONE:
                raise

    def task_gone(self, row: TaskRow) -> None:
        """Someone deleted the task in Label Studio."""
        if row.state == TaskState.LABELED:
            self.state.set_state(row.lease_id, TaskState.REMOVED)
            return
        self.give_back(row)
        self.state.set_state(row.lease_id, TaskState.RELEASED)
        self.room()
        log.info("task %s was deleted in Label Studio: item %s given back", row.ls_task_id, row.item_id)

    def lost(self, row: TaskRow, *, annotated: bool) -> None:
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
        self.room()
        if annotated:
            log.warning("the lease on item %s lapsed before its annotation on task %s reached L; the item is %s now",
                        row.item_id, row.ls_task_id, where)
        else:
            log.info("the lease on item %s lapsed (the item is %s now): task %s removed", row.item_id, where,
                     row.ls_task_id)

    # -- queries -> tasks -------------------------------------------------------------------------------------

    def _lease(self) -> LeasedQuery | None:
        query = self.client.lease(wait_seconds=0.0)
        if query is not None:
            p = query.provenance
            self.state.add_leased(lease_id=query.lease_id, item_id=query.item_id, model_version=p.model_version,
                                  score=p.score)
            self._queries[query.lease_id] = (query.payload, p)
        return query

    def fill(self) -> None:
        """Lease until the window is full (or S has nothing more, or the coordinator's cap on one annotator's
        leases is reached: a window above it is as full as the cap lets it be, said once), and show what was
        leased."""
        room = self.size - self.state.count(*HELD)
        try:
            while room > 0 and self._lease() is not None:
                room -= 1
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise
            if not self._said_capped:
                self._said_capped = True
                log.warning("the coordinator caps this annotator's leases below --window %d: the window holds %d "
                            "(%s)", self.size, self.state.count(*HELD), exc.details())
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
        return item.payload or NO_PAYLOAD, item.provenance or Provenance()

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

    def hide_item_ids(self) -> None:
        """Once per state dir: the tasks that a bridge from before references made show their item's id to
        annotators; their data takes the reference instead."""
        rows = {row.task_id: row for row in self.state.tasks(TaskState.OPEN, TaskState.LABELED)}
        if rows:
            for task in self.studio.tasks(self.project_id, ids=sorted(rows), include="id,data"):
                self._hide_item_id(task["id"], _data(task), rows[task["id"]])
        self.state.put(IDS_HIDDEN, "1")
        self.ids_hidden = True

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
            self.task_gone(holder)
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

    def refresh(self) -> None:
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
            untouched = {t["id"] for t in self.studio.tasks(self.project_id, ids=[row.task_id for _, row in pairs])
                         if not t.get("annotations") and not t.get("draft_exists")}
            pairs = [(query, row) for query, row in pairs if row.ls_task_id in untouched]
            # out of the project first: a bridge stopped in between sees deleted tasks and gives them back
            self.studio.delete_tasks(self.project_id, [row.task_id for _, row in pairs])
            for query, row in pairs:
                self.give_back(row)
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
