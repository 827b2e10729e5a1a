"""The bridge's side of Label Studio: the few calls it makes through Label Studio's SDK (label-studio-sdk), with
tasks and annotations handed back as plain dicts.

A failure that a retry can cure (no connection, a timeout, a 5xx or 429 while Label Studio restarts or is busy) is
raised as StudioUnavailable; any other answer (a wrong token, a missing project) as the SDK's ApiError.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator

import httpx
from label_studio_sdk import LabelStudio
from label_studio_sdk.actions.types import PrepareParamsRequestRequestSelectedItemsIncluded
from label_studio_sdk.core.api_error import ApiError

from aal_rpc.labelstudio.ids import valid_id

CALL_TIMEOUT = 30.0  # seconds for one call to Label Studio (an import of a full window of images included)
PAGE_SIZE = 100  # tasks per page when listing a project
WEBHOOK_ACTIONS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED")
SECRET_HEADER = "X-AAL-Webhook-Secret"  # sent by Label Studio with every webhook; the receiver checks it
# Calls that create something are not retried by the SDK (it resends a request whose answer was lost, and a resent
# import makes a second task): the bridge finds out what became of them itself (Window._adopt).
ONCE = {"max_retries": 0}
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"  # how the data manager's filters take a datetime (UTC)
# what the bridge reads of a task and its annotations (the list applies at every level; the item's data stays behind)
_TASK_FIELDS = "id,updated_at,draft_exists,annotations,result,was_cancelled,completed_by"


class StudioUnavailable(Exception):
    """Label Studio cannot answer now (restarting, unreachable, overloaded): try again later."""


def _transient(exc: Exception) -> bool:
    if isinstance(exc, httpx.TransportError):
        return True
    return isinstance(exc, ApiError) and (exc.status_code or 0) in (429, 500, 502, 503, 504)


def _plain(obj) -> dict:
    return obj.dict() if hasattr(obj, "dict") else dict(obj)


def timestamp(value) -> str:
    """Label Studio's datetime (a datetime or its ISO text) as one comparable ISO text in UTC."""
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value is None:
        return ""
    return value.astimezone(dt.timezone.utc).isoformat()


class Studio:
    """A Label Studio server reached with one user's token (a personal access token, or a legacy token where the
    organization allows them)."""

    def __init__(self, url: str, api_key: str, *, timeout: float = CALL_TIMEOUT):
        self.url = url.rstrip("/")
        self.client = LabelStudio(base_url=self.url, api_key=api_key, timeout=timeout)

    def _call(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (httpx.TransportError, ApiError) as exc:
            if _transient(exc):
                raise StudioUnavailable(f"{type(exc).__name__}: {getattr(exc, 'status_code', '') or exc}") from exc
            raise

    def whoami(self) -> dict:
        return _plain(self._call(self.client.users.whoami))

    def user_email(self, user_id: int) -> str | None:
        """A user's e-mail address; None when Label Studio does not show this user to the bridge's."""
        try:
            email = _plain(self._call(self.client.users.get, id=user_id)).get("email")
        except ApiError as exc:
            if exc.status_code in (403, 404):
                return None
            raise
        return email if isinstance(email, str) else None

    # -- projects -------------------------------------------------------------------------------------------

    def create_project(self, title: str, label_config: str, instructions: str = "") -> int:
        """A project that serves the lowest prediction score first ("Uncertainty sampling", which also spreads
        annotators over prediction clusters), one annotation per task; `instructions` (HTML, safe to show: the
        rendered guidelines) are shown to annotators before they start, and on demand in the editor."""
        project = self._call(self.client.projects.create, title=title, label_config=label_config,
                             sampling="Uncertainty sampling", maximum_annotations=1, show_skip_button=True,
                             description="Queries of an aal_rpc coordinator, kept by aal-labelstudio.",
                             expert_instruction=instructions, show_instruction=bool(instructions),
                             request_options=ONCE)
        return project.id

    def project(self, project_id: int) -> dict:
        return _plain(self._call(self.client.projects.get, id=project_id))

    def set_model_version(self, project_id: int, version: int) -> None:
        """The version whose predictions uncertainty sampling uses (Label Studio accepts only versions some
        prediction of the project has)."""
        self._call(self.client.projects.update, id=project_id, model_version=str(version))

    # -- tasks ----------------------------------------------------------------------------------------------

    def import_tasks(self, project_id: int, tasks: list[dict]) -> list[int]:
        """Create tasks (with their predictions) in one request; their ids, in order."""
        response = self._call(self.client.projects.import_tasks, id=project_id, request=tasks, return_task_ids=True,
                              request_options=ONCE)
        ids = list(response.task_ids or [])
        if len(ids) != len(tasks):
            raise StudioUnavailable(f"Label Studio created {len(ids)} of {len(tasks)} tasks")
        if not all(valid_id(task_id) for task_id in ids):
            raise StudioUnavailable("Label Studio answered task ids that are no positive 64-bit integers")
        return ids

    def set_prediction_clusters(self, project_id: int, clusters: dict[int, int]) -> None:
        """Give the predictions of these tasks their cluster (an import drops a prediction's cluster), so that
        uncertainty sampling spreads annotators over clusters."""
        tasks = self.tasks(project_id, ids=sorted(clusters), include="id,predictions,cluster")
        for task in list(tasks):
            for prediction in task.get("predictions") or []:
                if prediction.get("cluster") != clusters[task["id"]]:
                    self._call(self.client.predictions.update, id=prediction["id"], cluster=clusters[task["id"]])

    def delete_task(self, task_id: int) -> bool:
        """Delete a task; False when it was already gone."""
        try:
            self._call(self.client.tasks.delete, id=str(task_id))
        except ApiError as exc:
            if exc.status_code == 404:
                return False
            raise
        return True

    def delete_tasks(self, project_id: int, task_ids: list[int]) -> None:
        """Delete several tasks in one request (the data manager's action); ids already gone are no error."""
        if task_ids:
            selected = PrepareParamsRequestRequestSelectedItemsIncluded(all_=False, included=list(task_ids))
            self._call(self.client.actions.create, id="delete_tasks", project=project_id, selected_items=selected)

    def task_exists(self, task_id: int) -> bool:
        try:
            self._call(self.client.tasks.get, id=str(task_id))
        except ApiError as exc:
            if exc.status_code == 404:
                return False
            raise
        return True

    def set_task_data(self, task_id: int, data: dict) -> None:
        self._call(self.client.tasks.update, id=str(task_id), data=data)

    def tasks(self, project_id: int, *, ids: list[int] | None = None, updated_after: str | None = None,
              data_in: dict[str, list[str]] | None = None, with_data: bool = False, include: str | None = None
              ) -> Iterator[dict]:
        """The project's tasks with their annotations (cancelled ones included), optionally only `ids`, those
        updated after an ISO time, or those whose data holds one of `data_in`'s values in its field; with
        `with_data`, their data too (`include`: other fields instead)."""
        query: dict = {}
        if ids is not None:
            if not ids:
                return
            query["selectedItems"] = {"all": False, "included": list(ids)}
        if updated_after is not None:
            when = dt.datetime.fromisoformat(updated_after).astimezone(dt.timezone.utc)
            query["filters"] = {"conjunction": "and", "items": [{
                "filter": "filter:tasks:updated_at", "operator": "greater", "type": "Datetime",
                "value": when.strftime(_TIME_FORMAT)}]}
        elif data_in is not None:
            wanted = [(key, value) for key, values in data_in.items() for value in values]
            if not wanted:
                return
            query["filters"] = {"conjunction": "or", "items": [{
                "filter": f"filter:tasks:data.{key}", "operator": "equal", "type": "String", "value": value}
                for key, value in wanted]}
        page = self._call(self.client.tasks.list, project=project_id, fields="all", page_size=PAGE_SIZE,
                          query=json.dumps(query) if query else None,
                          include=include or (_TASK_FIELDS + (",data" if with_data else "")))
        while page is not None:
            for task in page.items or []:
                task = _plain(task)
                if valid_id(task.get("id")) is not None:  # an id out of range names no task of the bridge's
                    yield task
            if len(page.items or []) < PAGE_SIZE:
                return  # the last page (asking for the next one only earns a 404)
            try:
                page = self._call(page.next_page)
            except ApiError as exc:
                if exc.status_code == 404:
                    return
                raise

    # -- webhooks -------------------------------------------------------------------------------------------

    def ensure_webhook(self, project_id: int, url: str, secret: str, webhook_id: int | None) -> int:
        """Point the project's webhook at `url` with the secret header (creating it if `webhook_id` is None or
        gone) and activate it."""
        settings = dict(url=url, send_payload=True, send_for_all_actions=False, actions=list(WEBHOOK_ACTIONS),
                        headers={SECRET_HEADER: secret}, is_active=True)
        if webhook_id is not None:
            try:
                self._call(self.client.webhooks.update, id=webhook_id, **settings)
                return webhook_id
            except ApiError as exc:
                if exc.status_code != 404:
                    raise
        created = self._call(self.client.webhooks.create, project=project_id, request_options=ONCE, **settings).id
        if valid_id(created) is None:
            raise StudioUnavailable(f"Label Studio answered webhook id {created!r}")
        return created

    def deactivate_webhook(self, webhook_id: int) -> None:
        """Stop the webhook and take the secret out of its headers (a stopped bridge's secret is of no use)."""
        self._call(self.client.webhooks.update, id=webhook_id, is_active=False, headers={})
