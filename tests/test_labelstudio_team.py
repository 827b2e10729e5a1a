"""Label Studio as teams run it (issue 23, item 4): the README's commands for starting it and connecting the bridge,
run as written; a created project's hotkeys and crisp pictures; and two Label Studio users labeling, each one's work
traced from L's records to the user, against a real Label Studio 1.23 (skipped without .venv-labelstudio on a
developer's machine, failed in CI).
"""

from __future__ import annotations

import base64
import io
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aal_rpc.labelstudio.config import IMAGE_PANEL, label_config, label_of, parse_label_config, result_for
from aal_rpc.labelstudio.local import TEMPLATE, free_port, label_studio_executable
from aal_rpc.labelstudio.reconcile import labeler
from aal_rpc.labelstudio.state import BridgeState
from aal_rpc.labelstudio.window import item_content, task_json
from aal_rpc.models import build_model
from aal_rpc.serde import weights_to_bytes
from aal_rpc.types import Payload, Provenance
from aal_rpc.web.guidelines import class_keys
from tests.conftest import TASK, wait_until
from tests.test_labelstudio import (NO_POLLING, WAIT, Coordinator, annotate, bridge_for, coordinator,  # noqa: F401
                                    label_studio, tasks_of)

pytestmark = pytest.mark.filterwarnings("ignore:The `parse_obj` method is deprecated")

README = Path(__file__).resolve().parents[1] / "README.md"
START_MARK = "<!-- label-studio-start:"


def test_keys_are_the_same_in_aal_web_and_label_studio():
    assert class_keys([str(i) for i in range(10)]) == [str(i) for i in range(10)]  # digits: their own key
    names = [f"c{i}" for i in range(12)]
    assert class_keys(names) == list("1234567890") + ["", ""]
    config = label_config(tuple(names), "image")
    root = ET.fromstring(config)
    assert [c.get("hotkey") for c in root.iter("Choice")] == list("1234567890") + [None, None]
    assert root.find("Image").get("smoothing") == "false"
    assert parse_label_config(config, names).classes == {n: i for i, n in enumerate(names)}


def test_a_label_studio_user_is_named_by_email_else_id():
    assert labeler({"completed_by": {"id": 3, "email": "bob@example.org"}}) == "ls:bob@example.org"
    assert labeler({"completed_by": 7}) == "ls:7"
    assert labeler({"completed_by": {"id": 4, "email": "not an\naddress"}}) == "ls:4"
    assert labeler({"completed_by": None}) == "" and labeler({"completed_by": 2**63}) == ""


def test_small_pictures_are_enlarged_by_a_whole_factor_into_a_bounded_panel():
    root = ET.fromstring(label_config(TASK.class_names, "image"))
    image = root.find("Image")
    assert (image.get("smoothing"), image.get("maxWidth")) == ("false", f"{IMAGE_PANEL}px")
    iface = parse_label_config(ET.tostring(root, encoding="unicode"), TASK.class_names)
    for size, factor in (((28, 20), IMAGE_PANEL // 28), ((300, 200), 1), ((IMAGE_PANEL // 2, 8), 2)):
        x = np.random.default_rng(0).integers(0, 255, (size[1], size[0]), dtype=np.uint8)
        original = png_of(x)
        url = item_content(Payload.from_array(x.astype(np.float32), image=original), "image")
        shown = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
        assert shown.size == (size[0] * factor, size[1] * factor)
        # each pixel a block of its colour: no blur, no new colours
        assert shown.convert("L").resize(size, Image.Resampling.NEAREST).tobytes() == x.tobytes()
        assert np.array_equal(np.asarray(shown.convert("L"))[::factor, ::factor], x)
        if factor == 1:
            assert base64.b64decode(url.split(",", 1)[1]) == original  # the file's own bytes
    assert iface.kind == "image"


def png_of(x: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(x).save(out, format="PNG")
    return out.getvalue()


def test_a_task_carries_the_models_guess_as_a_prediction_with_its_version():
    iface = parse_label_config(label_config(TASK.class_names, "image"), TASK.class_names)
    x = np.full(TASK.input_shape, 0.5, np.float32)
    guessed = task_json("r", Payload.from_array(x), Provenance("w", "margin", 4, 0.3, guess=7, guess_probability=0.8),
                        iface)
    [prediction] = guessed["predictions"]
    assert prediction["model_version"] == "4"
    assert prediction["result"] == [{**result_for(7, iface)[0], "score": 0.8}]
    assert label_of(prediction["result"], iface) == 7  # what the editor pre-fills, read back as the class
    assert "guess" not in guessed["data"]
    for blank in (Provenance("w", "random", 0, 0.3), Provenance("w", "audit", 4, 0.3)):  # no model's guess
        assert task_json("r", Payload.from_array(x), blank, iface)["predictions"][0]["result"] == []


def test_two_users_label_and_each_label_is_traced_to_its_user(label_studio, coordinator, bridge_for):  # noqa: F811
    weights = weights_to_bytes(build_model(TASK.architecture, TASK.input_shape, TASK.num_classes).state_dict())
    with coordinator.admin() as admin:
        version = admin.upload_model(weights, server_id="s", trained_seq=0, num_labels=0,
                                     architecture=TASK.architecture, metrics={}).version
    coordinator.queue(range(4), version=version, guesses=[(6, 0.9), (2, 0.4), (1, 0.55), (9, 0.7)])
    bridge = bridge_for("--create-project", "two users", "--window", "4", *NO_POLLING).start()
    ls = label_studio.client()
    assert wait_until(lambda: len(tasks_of(ls, bridge)) == 4, WAIT), bridge.log()
    project = ls.projects.get(id=bridge.project_id)
    choices = {c.get("value"): c.get("hotkey") for c in ET.fromstring(project.label_config).iter("Choice")}
    assert choices == {str(i): str(i) for i in range(10)}  # key 3 labels "3"
    iface = parse_label_config(project.label_config, TASK.class_names)
    lead = ls.users.whoami()
    bob = ls.users.create(email="bob@example.org", username="bob", first_name="Bob")
    first, second, third, _ = sorted(tasks_of(ls, bridge), key=lambda t: t["id"])

    mine = annotate(ls, first["id"], iface, 3)  # the lead's own annotation
    ls.annotations.create(id=second["id"], result=result_for(5, iface), completed_by=bob.id)  # as bob saves it
    ls.annotations.create(id=third["id"], result=result_for(1, iface), completed_by=bob.id)
    assert wait_until(lambda: len(coordinator.records()) == 3, WAIT), bridge.log()
    ls.annotations.update(id=mine.id, result=result_for(8, iface))  # the lead changes her label: a correction
    assert wait_until(lambda: len(coordinator.records()) == 4, WAIT), bridge.log()
    assert bridge.stop() == 0

    # each task came with the model's guess as its prediction, pre-filled, and the model's version
    guesses = {"0": 6, "1": 2, "2": 1, "3": 9}
    for t in (first, second, third):
        [prediction] = ls.predictions.list(task=t["id"])
        assert (label_of(prediction.result, iface), prediction.model_version) == (guesses[t["item"]], str(version))

    records = coordinator.records()
    # L names each Label Studio user, inside the bridge's namespace: consensus and the lead's page see them apart
    assert {(r.item_id, r.label): r.annotator_id for r in records} == {
        (first["item"], 3): f"labelstudio/{lead.email}", (first["item"], 8): f"labelstudio/{lead.email}",
        (second["item"], 5): "labelstudio/bob@example.org", (third["item"], 1): "labelstudio/bob@example.org"}
    state = BridgeState(bridge.state_dir)
    try:
        by_seq = state.labelers()
    finally:
        state.close()
    who = {(r.item_id, r.label): by_seq[r.seq] for r in records}
    assert who == {(first["item"], 3): f"ls:{lead.email}", (first["item"], 8): f"ls:{lead.email}",
                   (second["item"], 5): "ls:bob@example.org", (third["item"], 1): "ls:bob@example.org"}
    assert "by ls:bob@example.org" in bridge.log() and f"by ls:{lead.email}" in bridge.log()


def readme_block() -> str:
    """The README's block of commands that start Label Studio and connect the bridge."""
    text = README.read_text()
    start = text.index(START_MARK)
    block = re.search(r"```sh\n(.*?)```", text[start:], re.S)
    assert block, "the README's Label Studio block"
    return block.group(1)


def test_the_readme_starts_label_studio_and_connects_the_bridge_as_written(coordinator, procs, tmp_path):  # noqa: F811
    """The block runs in bash as written, all but its first line (the install: the test uses .venv-labelstudio),
    with the README's names bound: port 8080 a free port, ls-venv the Label Studio virtualenv, A:50051 the
    coordinator. Its data dir starts as make labelstudio's migrated empty database (the same database a first start
    makes, without the minute of migrating)."""
    exe = label_studio_executable()
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("Label Studio's virtualenv is missing (make labelstudio)")
        pytest.skip("Label Studio's virtualenv is missing (make labelstudio)")
    install, *commands = readme_block().splitlines()
    assert install.startswith("python3 -m venv ls-venv") and "label-studio==1.23.2" in install
    port = free_port()
    script = "\n".join(commands).replace("8080", str(port)).replace("ls-venv/", f"{exe.parent.parent}/")
    script = script.replace("A:50051", coordinator.address)
    template = exe.parent.parent / TEMPLATE
    if (template / "label_studio.sqlite3").exists():
        shutil.copytree(template, tmp_path / "ls-data")
    legacy = secrets.token_hex(20)
    # a password that starts with "-", as one token_urlsafe in 64 does (Label Studio's argparse once took that one
    # for an option, and the block waited for a server that had exited)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "LEAD_EMAIL": "lead@example.org",
           "LEAD_PASSWORD": "-" + secrets.token_urlsafe(16), "LEAD_LEGACY_TOKEN": legacy, "AAL_TOKEN": "",
           "LATEST_VERSION_CHECK": "false", "COLLECT_ANALYTICS": "false", "SENTRY_DSN": "", "FRONTEND_SENTRY_DSN": ""}
    coordinator.queue(range(3))
    proc = subprocess.Popen(["bash", "-e", "-c", script], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines = []
    try:
        for line in proc.stdout:  # "listening on HOST:PORT", then "project N at URL"
            lines.append(line)
            if line.startswith("project "):
                break
        assert lines and lines[-1].startswith("project "), "".join(lines)
        project_id = int(lines[-1].split()[1])
        from label_studio_sdk import LabelStudio

        ls = LabelStudio(base_url=f"http://localhost:{port}", api_key=legacy, timeout=60)
        assert ls.users.whoami().email == "lead@example.org"
        iface = parse_label_config(ls.projects.get(id=project_id).label_config, TASK.class_names)
        assert wait_until(lambda: len(list(ls.tasks.list(project=project_id))) == 3, WAIT)
        task = next(iter(ls.tasks.list(project=project_id)))
        annotate(ls, task.id, iface, 4)
        assert wait_until(lambda: [r.label for r in coordinator.records()] == [4], WAIT)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the bridge, and Label Studio started in the background
        proc.wait()
        if not wait_until(lambda: not group_alive(proc.pid), 15):
            os.killpg(proc.pid, signal.SIGKILL)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
