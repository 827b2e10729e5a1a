"""aal-labelstudio: the bridge between the coordinator and a Label Studio project.

Unit tests of the labeling config, the webhook hints and the state file need nothing else. The rest run a real Label
Studio 1.23 (the `label-studio` of .venv-labelstudio, `make labelstudio`; one server for the session, on SQLite in a
temporary folder, on a free loopback port), a real coordinator in-process on 127.0.0.1:0, and the bridge as its
command. People's work is driven through Label Studio's API as its editor does it: an annotation created, updated,
cancelled (Skip) or deleted. Without the Label Studio virtualenv these tests skip on a developer's machine and fail in
CI (CI set), where `make test` builds it first.
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import sqlite3
import subprocess
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET

import grpc
import numpy as np
import pytest
from PIL import Image

from aal_rpc.client import AnnotationClient, CoordinatorClient
from aal_rpc.coordinator.app import create_coordinator_server
from aal_rpc.coordinator.contract import CoordinatorConfig
from aal_rpc.data.images import render_png
from aal_rpc.experiment.processes import ProcessGroup, command, read_address, read_line
from aal_rpc.labelstudio.window import item_content, priority, task_json, task_ref
from aal_rpc.labelstudio.config import (REF_FIELD, ConfigMismatch, kind_for, label_config, label_of,
                                        parse_label_config, result_for)
from aal_rpc.labelstudio.local import LocalLabelStudio, label_studio_executable
from aal_rpc.labelstudio.state import STATE_FILE, BridgeState, StateLocked, TaskState
from aal_rpc.labelstudio.studio import SECRET_HEADER
from aal_rpc.labelstudio.webhook import hints_of
from aal_rpc.models import build_model
from aal_rpc.proto.v1 import selection_pb2, selection_pb2_grpc
from aal_rpc.serde import payload_to_proto, weights_to_bytes
from aal_rpc.types import Payload, Provenance, Task
from tests.conftest import TASK, wait_until

pytestmark = pytest.mark.filterwarnings("ignore:The `parse_obj` method is deprecated")  # inside Label Studio's SDK

WAIT = 60.0  # seconds a step may take on a loaded 2-core machine
NO_POLLING = ["--poll-seconds", "3600", "--sweep-seconds", "3600"]  # webhooks alone (and the sweep at start)


# -- the labeling config, webhook hints, the state file: no server ------------------------------------------------

def test_generated_config_names_every_class_and_reads_back():
    names = ("cat", 'say "hi" & <bye>', "2")
    for kind in ("image", "text"):
        iface = parse_label_config(label_config(names, kind), names)
        assert (iface.kind, iface.data_key) == (kind, kind)
        for i in range(len(names)):
            assert label_of(result_for(i, iface), iface) == i
    iface = parse_label_config(label_config(names, "image"), names)
    assert label_of([], iface) is None  # no choice
    both = result_for(0, iface) + result_for(1, iface)
    assert label_of(both, iface) is None  # two classes: no label
    foreign = [{**result_for(0, iface)[0], "from_name": "other"}]
    assert label_of(foreign, iface) is None


def test_an_existing_config_is_checked_against_the_classes():
    names = ("neg", "pos")
    own = ('<View><Text name="review" value="$body"/><Choices name="sentiment" toName="review">'
           '<Choice value="pos" alias="P"/><Choice value="neg"/></Choices></View>')
    iface = parse_label_config(own, names)
    assert (iface.kind, iface.data_key, iface.control, iface.to_name) == ("text", "body", "sentiment", "review")
    assert iface.classes == {"P": 1, "neg": 0}  # a result holds the alias where there is one
    with pytest.raises(ConfigMismatch, match="exactly the task's classes"):
        parse_label_config(own.replace('value="neg"', 'value="meh"'), names)
    with pytest.raises(ConfigMismatch, match="fills itself"):
        parse_label_config(own.replace("$body", "$score"), names)
    with pytest.raises(ConfigMismatch, match="not valid XML"):
        parse_label_config("<View>", names)


def test_class_descriptions_become_hints_and_configs_without_them_still_read():
    names = ("cat", "dog", "two")
    config = label_config(names, "image", ("a small feline", "", 'the digit "2" & <kin>'))
    hints = {c.get("value"): c.get("hint") for c in ET.fromstring(config).iter("Choice")}
    assert hints == {"cat": "a small feline", "dog": None, "two": 'the digit "2" & <kin>'}
    assert parse_label_config(config, names) == parse_label_config(label_config(names, "image"), names)


def test_object_kind_follows_the_task():
    assert kind_for(TASK) == "image"
    text = Task(dataset="jsonl:x", num_classes=2, class_names=("a", "b"), input_shape=(256,), architecture="text")
    assert kind_for(text) == "text" and kind_for(text, "image") == "image"


def test_prediction_score_puts_the_coordinators_first_choice_first():
    scores = [-800.0, -3.0, 0.0, 0.5, 2.0, 900.0]
    turned = [priority(s) for s in scores]
    assert all(0.0 <= p <= 1.0 for p in turned)
    assert turned == sorted(turned, reverse=True)  # Label Studio serves the lowest first
    x = np.full(TASK.input_shape, 0.5, np.float32)
    task = task_json("7", Payload.from_array(x), Provenance("w", "cluster_margin", 3, 0.25, cluster=4),
                     parse_label_config(label_config(TASK.class_names, "image"), TASK.class_names))
    shown = Image.open(io.BytesIO(base64.b64decode(task["data"]["image"].split(",", 1)[1])))
    original = Image.open(io.BytesIO(render_png(x)))  # rendered when absent, then enlarged by a whole factor
    assert shown.size == (original.width * 64, original.height * 64)
    assert shown.resize(original.size, Image.Resampling.NEAREST).tobytes() == original.tobytes()
    assert task["data"]["cluster"] == 4 and task["predictions"][0]["cluster"] == 4
    assert task["predictions"][0]["model_version"] == "3" and task["predictions"][0]["result"] == []


def test_webhook_payloads_name_tasks_and_deleted_annotations():
    assert hints_of({"action": "ANNOTATION_CREATED", "annotation": {"id": 5, "task": 12}}) == ({12}, set())
    assert hints_of({"action": "ANNOTATION_UPDATED", "annotation": {"id": 5}, "task": {"id": 13}}) == ({13}, set())
    assert hints_of({"action": "ANNOTATIONS_DELETED", "annotations": [{"id": 5}, {"id": 6}]}) == (set(), {5, 6})
    assert hints_of({"action": "PROJECT_UPDATED"}) == (set(), set())


def test_state_file_persists_and_admits_one_bridge(tmp_path):
    state = BridgeState(tmp_path)
    state.add_leased(lease_id="L1", item_id="1", model_version=2, score=0.5)
    state.set_task_id("L1", 40)
    state.record_annotation(ls_annotation_id=9, lease_id="L1", label=3, cancelled=False, ls_updated_at="t")
    state.set_state("L1", TaskState.LABELED, label=3, seq=1)
    with pytest.raises(StateLocked):
        BridgeState(tmp_path)
    state.close()
    again = BridgeState(tmp_path)
    row = again.by_task_id(40)
    assert (row.item_id, row.state, row.label, row.seq) == ("1", TaskState.LABELED, 3, 1)
    assert again.task_of_annotation(9) == 40 and again.annotations_of("L1")[9].label == 3
    again.close()


# -- against a real Label Studio ------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def label_studio():
    exe = label_studio_executable()
    if exe is None:
        message = "Label Studio's virtualenv is missing (make labelstudio)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    server = LocalLabelStudio(exe)
    yield server
    server.stop()


class Coordinator:
    """A real coordinator in-process that can be stopped and started again on the same port and data dir."""

    def __init__(self, data_dir, task=TASK):
        self.data_dir, self.task = data_dir, task
        self.port = 0
        self.srv = None
        self.start()

    def start(self):
        self.srv = create_coordinator_server(f"127.0.0.1:{self.port}", self.data_dir, self.task,
                                             CoordinatorConfig(pool_capacity=256, lease_seconds=60))
        self.port = self.srv.port

    def stop(self):
        if self.srv is not None:
            self.srv.stop(grace=0)
            self.srv = None

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    def admin(self) -> CoordinatorClient:
        return CoordinatorClient(self.address, retry_for=30)

    def queue(self, ids, *, version=0, scores=None, clusters=None, guesses=None):
        """Candidates as a Cluster-Margin worker sends them: a PNG each, a score, a cluster, the model's guess
        (class, probability)."""
        cands = []
        for n, item_id in enumerate(ids):
            x = np.full(TASK.input_shape, (int(item_id) % 16) / 16, np.float32)
            c = selection_pb2.Candidate(item_id=str(item_id), score=scores[n] if scores else 0.5,
                                        payload=payload_to_proto(Payload.from_array(x, image=render_png(x))))
            if clusters is not None:
                c.cluster = clusters[n]
            if guesses is not None:
                c.guess, c.guess_probability = guesses[n]
            cands.append(c)
        channel = grpc.insecure_channel(self.address)
        try:
            resp = selection_pb2_grpc.SelectionServiceStub(channel).SubmitCandidates(
                selection_pb2.SubmitCandidatesRequest(worker_id="w0", strategy="cluster_margin",
                                                      model_version=version, candidates=cands), timeout=30)
        finally:
            channel.close()
        assert resp.accepted == len(ids)

    def records(self):
        with self.admin() as admin:
            return list(admin.export())


@pytest.fixture
def coordinator(tmp_path):
    c = Coordinator(tmp_path / "coordinator")
    yield c
    c.stop()


class Bridge:
    """aal-labelstudio as its command, restartable on the same state dir."""

    def __init__(self, procs: ProcessGroup, label_studio: LocalLabelStudio, coordinator: Coordinator, state_dir,
                 *args):
        self.procs, self.state_dir, self.args, self.n = procs, state_dir, [
            "--coordinator", coordinator.address, "--label-studio-url", label_studio.url,
            "--state-dir", state_dir, *args], 0
        self.lines: list[str] = []

    def start(self, *extra):
        self.n += 1
        self.name = f"bridge-{self.n}"
        proc = self.procs.start(self.name, command("labelstudio", *self.args, *extra), capture_stdout=True,
                                env={"LABEL_STUDIO_API_KEY": self.token})
        self.address = read_address(proc, self.name, self.procs.log_dir / f"{self.name}.log")
        self.project_id = int(read_line(proc).split()[1])
        return self

    def stop(self, sig=signal.SIGTERM):
        return self.procs.stop(self.name, sig)

    def log(self) -> str:
        return (self.procs.log_dir / f"{self.name}.log").read_text()


@pytest.fixture
def bridge_for(procs, label_studio, coordinator, tmp_path):
    def make(*args):
        b = Bridge(procs, label_studio, coordinator, tmp_path / "bridge-state", *args)
        b.token = label_studio.token  # the personal access token, as a team gives it
        return b
    return make


def tasks_of(ls, bridge):
    """The bridge's project's tasks, each with the id of the item it shows as "item", from the bridge's state file:
    the task data names it only by an opaque reference."""
    tasks = [t.dict() for t in ls.tasks.list(project=bridge.project_id, fields="all")]
    with sqlite3.connect(f"file:{bridge.state_dir / STATE_FILE}?mode=ro", uri=True) as db:
        items = {task_ref(lease): item for lease, item in db.execute("SELECT lease_id, item_id FROM tasks")}
    return [{**t, "item": items.get((t["data"] or {}).get(REF_FIELD))} for t in tasks]


def annotate(ls, task_id, iface, label=None, *, cancel=False):
    """An annotator's save in the editor: a choice, or Skip."""
    if cancel:
        return ls.annotations.create(id=task_id, result=[], was_cancelled=True)
    return ls.annotations.create(id=task_id, result=result_for(label, iface))


def latest_labels(records):
    """Each item's current label in L (its latest record)."""
    out = {}
    for r in records:
        out[r.item_id] = r.label
    return out


def test_queries_become_tasks_in_the_coordinators_order(label_studio, coordinator, bridge_for):
    scores = [0.1, 0.9, 0.5, 0.7, 0.3, 0.8]
    coordinator.queue(range(6), scores=scores, clusters=[0, 1, 0, 2, 1, 2])
    bridge = bridge_for("--create-project", "order", "--window", "4", *NO_POLLING).start()
    ls = label_studio.client()

    def shown():  # the tasks, then their predictions' clusters (set just after), then the project's model version
        tasks = tasks_of(ls, bridge)
        return (len(tasks) == 4 and all(t["predictions"][0]["cluster"] is not None for t in tasks)
                and ls.projects.get(id=bridge.project_id).model_version == "0")

    assert wait_until(shown, WAIT), bridge.log()
    project = ls.projects.get(id=bridge.project_id)
    iface = parse_label_config(project.label_config, TASK.class_names)  # the config names the task's classes
    assert iface.kind == "image" and project.sampling == "Uncertainty sampling" and project.model_version == "0"
    tasks = tasks_of(ls, bridge)
    # the four best queries by the coordinator's order, and Label Studio's order (lowest prediction first) agrees
    assert {t["item"] for t in tasks} == {"1", "5", "3", "2"}
    by_prediction = sorted(tasks, key=lambda t: t["predictions"][0]["score"])
    assert [t["item"] for t in by_prediction] == ["1", "5", "3", "2"]
    for t in tasks:
        item, pred = t["item"], t["predictions"][0]
        x = np.full(TASK.input_shape, int(item) / 16, np.float32)
        assert t["data"]["image"] == item_content(Payload.from_array(x, image=render_png(x)), "image")  # enlarged
        assert t["data"]["cluster"] == [0, 1, 0, 2, 1, 2][int(item)] == pred["cluster"]
        assert t["data"]["strategy"] == "cluster_margin" and pred["model_version"] == "0"
        assert set(t["data"]) == {"image", REF_FIELD, "model_version", "score", "strategy", "cluster"}  # no id
        assert pred["score"] == pytest.approx(priority(scores[int(item)]))
    with coordinator.admin() as admin:
        assert (admin.stats().leased, admin.stats().queued) == (4, 2)
    [hook] = [w for w in ls.webhooks.list(project=bridge.project_id)]
    assert hook.url == f"http://{bridge.address}/webhook" and hook.is_active
    assert bridge.stop() == 0
    [hook] = [w for w in ls.webhooks.list(project=bridge.project_id)]
    assert not hook.is_active  # no webhook waits on a bridge that is gone
    with coordinator.admin() as admin:
        assert admin.stats().leased == 4  # its leases are kept for the next start


def test_annotations_become_labels_across_restarts(label_studio, coordinator, bridge_for):
    """created -> a label in L; updated -> a correction; Skip -> deferred; deleted -> L unchanged, and a new
    annotation corrects. The bridge (killed), the coordinator and Label Studio restart mid-way: every annotation
    reaches L once."""
    coordinator.queue(range(12), scores=[i / 12 for i in range(12)])
    bridge = bridge_for("--create-project", "restarts", "--window", "6", *NO_POLLING).start()
    ls = label_studio.client()
    assert wait_until(lambda: len(tasks_of(ls, bridge)) == 6, WAIT), bridge.log()
    iface = parse_label_config(ls.projects.get(id=bridge.project_id).label_config, TASK.class_names)
    task_of = {t["item"]: t["id"] for t in tasks_of(ls, bridge)}
    first = sorted(task_of, key=int)  # six items, in the bridge's window
    expected: dict[str, list[int]] = {}  # item -> its labels in L, first then corrections

    def holds(expect):
        by_item: dict[str, list[int]] = {}
        for r in coordinator.records():
            by_item.setdefault(r.item_id, []).append(r.label)
        return by_item == expect

    # created -> in L
    a = annotate(ls, task_of[first[0]], iface, 3)
    expected[first[0]] = [3]
    assert wait_until(lambda: holds(expected), WAIT), bridge.log()
    # updated -> a correction supersedes it
    ls.annotations.update(id=a.id, result=result_for(5, iface))
    expected[first[0]].append(5)
    assert wait_until(lambda: holds(expected), WAIT), bridge.log()
    # Skip -> deferred: back in S for others, and out of the project
    annotate(ls, task_of[first[1]], iface, cancel=True)
    with AnnotationClient(coordinator.address, "observer", retry_for=30) as observer:
        assert wait_until(lambda: observer.get_item(first[1]).state == "queued", WAIT), bridge.log()
    # its task leaves, fresh queries keep six tasks waiting, and the deferred item is not among them
    def refilled():
        tasks = tasks_of(ls, bridge)
        waiting = [t for t in tasks if not t["annotations"]]
        return len(waiting) == 6 and task_of[first[1]] not in {t["id"] for t in tasks}

    assert wait_until(refilled, WAIT), bridge.log()
    assert first[1] not in {t["item"] for t in tasks_of(ls, bridge)}

    # the bridge dies; meanwhile a label and a correction are made
    bridge.stop(signal.SIGKILL)
    annotate(ls, task_of[first[2]], iface, 7)
    ls.annotations.update(id=a.id, result=result_for(6, iface))
    expected[first[2]] = [7]
    expected[first[0]].append(6)
    bridge.start()
    assert wait_until(lambda: holds(expected), WAIT), bridge.log()

    # the coordinator restarts (same data dir, same port) while an annotation is saved
    coordinator.stop()
    annotate(ls, task_of[first[3]], iface, 1)
    expected[first[3]] = [1]
    coordinator.start()
    assert wait_until(lambda: holds(expected), WAIT), bridge.log()

    # Label Studio restarts; work carries on after it
    label_studio.restart()
    ls = label_studio.client()
    annotate(ls, task_of[first[4]], iface, 2)
    expected[first[4]] = [2]
    assert wait_until(lambda: holds(expected), WAIT), bridge.log()

    # a deleted annotation leaves L as it is; a new one on the task corrects the label
    [ann] = [x for x in tasks_of(ls, bridge) if x["id"] == task_of[first[2]]][0]["annotations"]
    ls.annotations.delete(id=ann["id"])
    annotate(ls, task_of[first[2]], iface, 8)
    expected[first[2]].append(8)
    assert wait_until(lambda: holds(expected), WAIT), bridge.log()

    # the window was kept full of queries waiting for a label
    assert wait_until(lambda: len([t for t in tasks_of(ls, bridge) if not t["annotations"]]) == 6, WAIT), \
        [(t["id"], t["item"], len(t["annotations"] or [])) for t in tasks_of(ls, bridge)]
    shown = [t["item"] for t in tasks_of(ls, bridge)]
    assert len(shown) == len(set(shown))  # one task per item: no import was made twice
    records = coordinator.records()
    firsts = [r.item_id for r in records if r.supersedes == 0]
    assert sorted(firsts) == sorted(expected) and len(set(firsts)) == len(firsts)  # one first label per task
    lead = label_studio.client().users.whoami().email  # the bridge names each label's user (no tokens: it may)
    assert all(r.annotator_id == f"labelstudio/{lead}" for r in records)
    assert bridge.stop() == 0


def test_stale_tasks_give_way_to_a_newer_models_queries(label_studio, coordinator, bridge_for):
    coordinator.queue(range(5), scores=[0.1, 0.2, 0.3, 0.4, 0.5])
    bridge = bridge_for("--create-project", "refresh", "--window", "3", "--refresh-seconds", "0.5",
                        *NO_POLLING).start()
    ls = label_studio.client()
    assert wait_until(lambda: len(tasks_of(ls, bridge)) == 3, WAIT), bridge.log()
    # someone is at work on one task (an annotation that chooses nothing yet): it is not taken away
    busy = tasks_of(ls, bridge)[0]
    ls.annotations.create(id=busy["id"], result=[])
    # a model is published and a worker rescored with it
    weights = weights_to_bytes(build_model(TASK.architecture, TASK.input_shape, TASK.num_classes).state_dict())
    with coordinator.admin() as admin:
        version = admin.upload_model(weights, server_id="s", trained_seq=0, num_labels=0,
                                     architecture=TASK.architecture, metrics={}).version
    coordinator.queue(range(100, 104), version=version, scores=[0.1, 0.2, 0.3, 0.4])

    def refreshed():
        tasks = tasks_of(ls, bridge)
        fresh = sorted(t["item"] for t in tasks if t["data"]["model_version"] == version)
        return (fresh == ["102", "103"] and {t["id"] for t in tasks if t["data"]["model_version"] == 0} == {busy["id"]}
                and ls.projects.get(id=bridge.project_id).model_version == str(version))  # served first

    assert wait_until(refreshed, WAIT), bridge.log()
    with coordinator.admin() as admin:
        s = admin.stats()
        assert (s.leased, s.queued) == (3, 6)  # the stale ones went back to S
    assert bridge.stop() == 0


def test_a_lapsed_lease_takes_its_task_out(label_studio, coordinator, bridge_for):
    """The bridge is down past its leases; the items are labeled and leased elsewhere meanwhile. Back, it removes
    those tasks and shows what S offers now."""
    coordinator.queue(["1", "2"])
    bridge = bridge_for("--create-project", "lapse", "--window", "2", "--lease-seconds", "3",
                        "--refresh-seconds", "0.5", *NO_POLLING).start()
    ls = label_studio.client()
    assert wait_until(lambda: len(tasks_of(ls, bridge)) == 2, WAIT), bridge.log()
    old = {t["id"] for t in tasks_of(ls, bridge)}
    bridge.stop()
    with coordinator.admin() as admin:
        assert wait_until(lambda: admin.stats().queued == 2, WAIT)  # the leases lapsed
    with AnnotationClient(coordinator.address, "alice", retry_for=30) as alice:
        one, two = alice.lease(), alice.lease()
        alice.submit(one, 4)
        bridge.start()
        assert wait_until(lambda: not old & {t["id"] for t in tasks_of(ls, bridge)}, WAIT), bridge.log()
        alice.release(two)  # back in S: the bridge shows it again, as a new task
        assert wait_until(lambda: [t["item"] for t in tasks_of(ls, bridge)] == [two.item_id],
                          WAIT), bridge.log()
    assert bridge.stop() == 0


def test_polling_alone_carries_annotations(label_studio, coordinator, bridge_for):
    coordinator.queue(["1"])
    bridge = bridge_for("--create-project", "polling", "--window", "1", "--no-webhooks", "--poll-seconds", "0.5",
                        "--sweep-seconds", "3600")
    bridge.address = None
    proc = bridge.procs.start("bridge-poll", command("labelstudio", *bridge.args), capture_stdout=True,
                              env={"LABEL_STUDIO_API_KEY": bridge.token})
    bridge.name = "bridge-poll"
    first = read_line(proc)
    assert first.startswith("polling project ")
    project_id = int(first.split()[2])
    bridge.project_id = int(first.split()[2])
    ls = label_studio.client()
    assert not list(ls.webhooks.list(project=project_id))
    assert wait_until(lambda: len(tasks_of(ls, bridge)) == 1, WAIT), bridge.log()
    iface = parse_label_config(ls.projects.get(id=project_id).label_config, TASK.class_names)
    annotate(ls, tasks_of(ls, bridge)[0]["id"], iface, 9)
    assert wait_until(lambda: [(r.item_id, r.label) for r in coordinator.records()] == [("1", 9)], WAIT), bridge.log()
    assert bridge.stop() == 0


def test_attach_refuses_a_project_without_the_classes(label_studio, coordinator, tmp_path):
    ls = label_studio.client()
    project = ls.projects.create(title="other classes", label_config=label_config(("cat", "dog"), "image"))
    done = subprocess.run(command("labelstudio", "--coordinator", coordinator.address, "--label-studio-url",
                                  label_studio.url, "--project", project.id, "--state-dir", tmp_path / "s"),
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "LABEL_STUDIO_API_KEY": label_studio.token})
    assert done.returncode == 1
    assert "exactly the task's classes" in done.stderr and "Traceback" not in done.stderr
    wrong = subprocess.run(command("labelstudio", "--coordinator", coordinator.address, "--label-studio-url",
                                   label_studio.url, "--project", project.id, "--state-dir", tmp_path / "t"),
                           capture_output=True, text=True, timeout=120,
                           env={**os.environ, "LABEL_STUDIO_API_KEY": "not-a-token"})
    assert wrong.returncode == 1 and "refused the token" in wrong.stderr


GUIDELINES = """# How to label

Pick the **animal**; a digit is *two*.

<script>alert("guidelines")</script>
"""
SECRET_TASK = Task(dataset="digits", num_classes=3, class_names=("cat", "dog", "two"), input_shape=(1, 8, 8),
                   architecture="mlp", class_descriptions=("a small feline", "", "the digit 2"), guidelines=GUIDELINES)


def test_a_created_project_has_the_guidelines_and_hints_and_tasks_tell_no_item_id(label_studio, procs, tmp_path):
    """Annotators read the guidelines as the project's instructions and each class's description as its hint; the
    task data they see names no item (ids such as "img-secret-class-cat" give the answer away), and the tasks of a
    bridge from before this rule lose their item ids at the next start."""
    coordinator = Coordinator(tmp_path / "coordinator", SECRET_TASK)
    try:
        photo = io.BytesIO()
        Image.new("RGB", (64, 48), (200, 120, 40)).save(photo, format="JPEG")
        x = np.zeros((1, 8, 8), np.float32)
        with coordinator.admin() as c:
            c.submit_candidates(worker_id="w", strategy="margin", model_version=0, candidates=[
                ("img-secret-class-cat", Payload.from_array(x, image=photo.getvalue()), 0.9),
                ("img-secret-class-two", Payload.from_array(x, image=render_png(x)), 0.5)])
        bridge = Bridge(procs, label_studio, coordinator, tmp_path / "bridge-state", "--create-project", "guided",
                        *NO_POLLING)
        bridge.token = label_studio.token
        bridge.start()
        ls = label_studio.client()
        assert wait_until(lambda: len(tasks_of(ls, bridge)) == 2, WAIT), bridge.log()
        project = ls.projects.get(id=bridge.project_id)
        assert project.show_instruction and "<h1>How to label</h1>" in project.expert_instruction
        assert "<strong>animal</strong>" in project.expert_instruction
        assert "<script" not in project.expert_instruction and "&lt;script&gt;" in project.expert_instruction
        assert 'hint="a small feline"' in project.label_config and 'hint="the digit 2"' in project.label_config
        tasks = {t["item"]: t for t in tasks_of(ls, bridge)}
        # a small JPEG is shown enlarged by a whole factor, as PNG (a picture as large as the panel keeps its bytes)
        assert tasks["img-secret-class-cat"]["data"]["image"].startswith("data:image/png;base64,")
        assert all("secret" not in str(t["data"]) for t in tasks.values())

        # tasks as a bridge from before references made them: the item's id in their data
        bridge.stop()
        for t in tasks.values():
            data = {k: v for k, v in t["data"].items() if k != REF_FIELD}
            ls.tasks.update(id=str(t["id"]), data={**data, "item_id": t["item"]})
        with sqlite3.connect(bridge.state_dir / STATE_FILE) as db:
            db.execute("DELETE FROM meta WHERE key = 'item_ids_hidden'")
        assert all("secret" in str(t["data"]) for t in tasks_of(ls, bridge))
        bridge.start()
        assert wait_until(lambda: all("secret" not in str(t["data"]) and t["item"] for t in tasks_of(ls, bridge)),
                          WAIT), bridge.log()
        annotate(ls, tasks["img-secret-class-cat"]["id"], parse_label_config(project.label_config,
                                                                             SECRET_TASK.class_names), 0)
        assert wait_until(lambda: [(r.item_id, r.label) for r in coordinator.records()]
                          == [("img-secret-class-cat", 0)], WAIT), bridge.log()
        assert bridge.stop() == 0
    finally:
        coordinator.stop()


def post_webhook(bridge, secret: str, body: bytes) -> int:
    """POST a body to the bridge's webhook as Label Studio does; the HTTP status (an error's too)."""
    request = urllib.request.Request(f"http://{bridge.address}/webhook", data=body, method="POST",
                                     headers={SECRET_HEADER: secret, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=WAIT) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_hostile_input_never_stops_the_bridge(label_studio, coordinator, bridge_for):
    """An annotation whose choices hold a list (Label Studio's API takes it from any user) once stopped the bridge at
    every start, and so did a webhook naming id 2**63. Now the annotation is logged as unreadable once, across
    restarts; webhooks with ids SQLite cannot hold, or nested too deep to parse, change nothing (400 for the
    latter); no log line holds a traceback, and a good annotation after them all reaches L. The webhook's secret,
    which every member of the organization can read with the project's webhooks, is new at each start, never in
    the state dir, and taken out of Label Studio when the bridge stops."""
    coordinator.queue(range(3))
    bridge = bridge_for("--create-project", "hostile", "--window", "3", *NO_POLLING).start()
    ls = label_studio.client()
    assert wait_until(lambda: len(tasks_of(ls, bridge)) == 3, WAIT), bridge.log()
    iface = parse_label_config(ls.projects.get(id=bridge.project_id).label_config, TASK.class_names)
    odd_task, good_task, later_task = sorted(tasks_of(ls, bridge), key=lambda t: t["id"])
    [hook] = ls.webhooks.list(project=bridge.project_id)
    secret = hook.headers[SECRET_HEADER]

    odd = [{**result_for(3, iface)[0], "value": {"choices": [[iface_name(iface, 3)]]}}]
    ls.annotations.create(id=odd_task["id"], result=odd)
    for payload in ({"action": "ANNOTATION_CREATED", "annotation": {"id": 2**63, "task": 2**63}},
                    {"action": "ANNOTATION_UPDATED", "annotation": {"id": 1, "task": {"id": 2**64}}},
                    {"action": "ANNOTATIONS_DELETED", "annotations": [{"id": 2**63}, {"id": -1}, {"id": True}]}):
        assert post_webhook(bridge, secret, json.dumps(payload).encode()) == 200
    assert post_webhook(bridge, secret, b"[" * 50_000 + b"]" * 50_000) == 400
    assert post_webhook(bridge, secret, b'{"a":' * 5_000 + b"1" + b"}" * 5_000) == 400
    annotate(ls, good_task["id"], iface, 4)
    assert wait_until(lambda: [(r.item_id, r.label) for r in coordinator.records()] == [(good_task["item"], 4)],
                      WAIT), bridge.log()

    # a restart reads the odd annotation again (the sweep at start): it is not logged again, nor does it stop anything
    assert bridge.stop() == 0
    first_log = bridge.log()
    [hook] = ls.webhooks.list(project=bridge.project_id)
    assert not hook.is_active and SECRET_HEADER not in (hook.headers or {})  # a stopped bridge's secret is gone
    annotate(ls, later_task["id"], iface, 6)
    bridge.start()
    assert wait_until(lambda: sorted((r.item_id, r.label) for r in coordinator.records())
                      == sorted([(good_task["item"], 4), (later_task["item"], 6)]), WAIT), bridge.log()
    [hook] = ls.webhooks.list(project=bridge.project_id)
    assert hook.is_active and hook.headers[SECRET_HEADER] != secret  # new at each start
    assert bridge.stop() == 0
    logs = first_log + bridge.log()
    assert "Traceback" not in logs
    assert logs.count(f"annotation {ls.tasks.get(id=odd_task['id']).annotations[0]['id']} on task "
                      f"{odd_task['id']} is unreadable") == 1, logs
    stored = b"".join(p.read_bytes() for p in bridge.state_dir.iterdir() if p.is_file())
    assert secret.encode() not in stored and hook.headers[SECRET_HEADER].encode() not in stored
    with AnnotationClient(coordinator.address, "observer", retry_for=30) as observer:
        assert observer.get_item(odd_task["item"]).state == "leased"  # still shown, waiting for a readable one


def iface_name(iface, label: int) -> str:
    return next(name for name, index in iface.classes.items() if index == label)
