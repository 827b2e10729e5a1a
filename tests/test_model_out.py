"""The results out (issue 18): exports name each label's class, `aal-admin model --out` writes a published model
that `aal-admin predict` and aal_rpc.predict use without a coordinator, and `aal-admin stats` and `models` say
where labels came from and how accurate the latest model is estimated to be."""

import contextlib
import dataclasses
import hashlib
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from aal_rpc.chunking import sha256_hex
from aal_rpc.cli import admin
from aal_rpc.client import CoordinatorClient
from aal_rpc.coordinator.app import create_coordinator_server
from aal_rpc.coordinator.contract import CoordinatorConfig
from aal_rpc.data.text import TEXT_LENGTH
from aal_rpc.measures import AUDIT_CORRECT, AUDIT_LABELS
from aal_rpc.models import build_model
from aal_rpc.predict import CARD_FILE, WEIGHTS_FILE, load_model, write_model
from aal_rpc.serde import weights_to_bytes
from aal_rpc.training import predict_proba
from aal_rpc.types import LabeledRecord, ModelInfo, Payload, Provenance
from tests.conftest import TASK

NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
WORDS = dataclasses.replace(TASK, class_names=NAMES)  # class names that are not the labels' digits


@contextlib.contextmanager
def serving(task, data_dir):
    """A real gRPC coordinator of `task` on 127.0.0.1:0; yields (address, server)."""
    srv = create_coordinator_server("127.0.0.1:0", data_dir, task, CoordinatorConfig(pool_capacity=64,
                                                                                     lease_seconds=30))
    try:
        yield f"127.0.0.1:{srv.port}", srv
    finally:
        srv.stop(grace=0)


@pytest.fixture
def coordinator(tmp_path):
    """A coordinator whose task names its classes in words."""
    with serving(WORDS, tmp_path / "data") as served:
        yield served


def label(address, srv, labels: dict[str, int], *, strategy="margin", version=0, x=None):
    """Queue the items of `labels` (payload `x`, a TASK-shaped ramp by default) and label each as given."""
    x = np.linspace(0, 1, 64, dtype=np.float32).reshape(TASK.input_shape) if x is None else x
    with CoordinatorClient(address) as c:
        c.submit_candidates(worker_id="w", strategy=strategy, model_version=version,
                            candidates=[(i, Payload.from_array(x), 0.5) for i in labels])
    for _ in labels:
        q = srv.coordinator.lease("ann")
        srv.coordinator.submit_label(lease_id=q.lease_id, item_id=q.item_id, label=labels[q.item_id],
                                     annotator_id="ann")


def publish(srv, *, num_labels, metrics):
    torch.manual_seed(0)
    model = build_model(TASK.architecture, TASK.input_shape, TASK.num_classes)
    data = weights_to_bytes(model.state_dict())
    srv.coordinator.publish_model(data=data, server_id="s", trained_seq=num_labels, num_labels=num_labels,
                                  architecture=TASK.architecture, metrics=metrics, sha256=sha256_hex(data))
    return model, data


def invoke(*args, address=None):
    """aal-admin with the given arguments; AAL_COORDINATOR unset, so only --coordinator names one."""
    pre = ["--coordinator", address] if address else []
    return CliRunner().invoke(admin.main, [*pre, *map(str, args)], env={"AAL_COORDINATOR": None})


def test_exports_carry_the_class_name_beside_the_label(coordinator, tmp_path):
    address, srv = coordinator
    label(address, srv, {"a": 2, "b": 7})
    for fmt in ("jsonl", "csv", "npz"):
        r = invoke("export", "--format", fmt, "--out", tmp_path / f"labels.{fmt}", address=address)
        assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in (tmp_path / "labels.jsonl").read_text().splitlines()]
    assert {(r["item_id"], r["label"], r["label_name"]) for r in rows} == {("a", 2, "two"), ("b", 7, "seven")}
    assert "source" not in rows[0]  # only with --sources
    header, *lines = (tmp_path / "labels.csv").read_text().splitlines()
    assert header.split(",")[2:4] == ["label", "label_name"] and {line.split(",")[3] for line in lines} == {
        "two", "seven"}
    with np.load(tmp_path / "labels.npz") as z:  # allow_pickle is off: the names are plain strings
        assert sorted(zip(z["y"].tolist(), z["label_name"].tolist())) == [(2, "two"), (7, "seven")]


def test_export_sources_that_cannot_be_loaded_fail_with_one_line(tmp_path):
    task = dataclasses.replace(WORDS, dataset=f"folder:{tmp_path / 'elsewhere'}")
    with serving(task, tmp_path / "data") as (address, _):
        r = invoke("export", "--format", "jsonl", "--out", tmp_path / "l.jsonl", "--sources", address=address)
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert r.stderr.count("\n") == 1 and "--sources: cannot load the dataset" in r.stderr
    assert not (tmp_path / "l.jsonl").exists()


def test_model_out_writes_weights_and_a_card_that_predict_as_the_published_model(coordinator, tmp_path):
    address, srv = coordinator
    label(address, srv, {str(i): i % 10 for i in range(12)}, strategy="random")
    metrics = {"accuracy": 0.5, AUDIT_CORRECT: 8.0, AUDIT_LABELS: 10.0}
    model, data = publish(srv, num_labels=12, metrics=metrics)

    r = invoke("model", "--out", tmp_path / "m", address=address)
    assert r.exit_code == 0, r.output
    assert r.output.count("\n") == 1 and "version 1" in r.output and str(tmp_path / "m") in r.output
    assert (tmp_path / "m" / WEIGHTS_FILE).read_bytes() == data  # exactly as published
    card = json.loads((tmp_path / "m" / CARD_FILE).read_text())
    assert card["classes"] == list(NAMES) and card["architecture"] == "mlp" and card["input_shape"] == [1, 8, 8]
    assert (card["version"], card["labels_seen"], card["trained_seq"], card["dataset"]) == (1, 12, 12, "digits")
    assert card["metrics"] == metrics and card["sha256"] == hashlib.sha256(data).hexdigest()
    est = card["estimated_accuracy"]
    assert est["value"] == 0.8 and est["labels"] == 10 and est["low"] < 0.8 < est["high"]

    exported = load_model(tmp_path / "m")
    x = np.random.default_rng(0).random((5, 1, 8, 8), dtype=np.float32)
    expected, _ = predict_proba(model, x)
    np.testing.assert_allclose(exported.predict_arrays(x), expected, rtol=1e-6)
    assert exported.classes == NAMES

    assert invoke("model", "--out", tmp_path / "v9", "--version", 9, address=address).exit_code == 1


def test_a_model_folder_whose_weights_changed_is_refused(tmp_path):
    info = ModelInfo(version=1, server_id="s", trained_seq=0, num_labels=0, architecture="mlp")
    model = build_model(TASK.architecture, TASK.input_shape, TASK.num_classes)
    write_model(tmp_path, WORDS, info, weights_to_bytes(model.state_dict()))
    (tmp_path / WEIGHTS_FILE).write_bytes(weights_to_bytes({k: v + 1 for k, v in model.state_dict().items()}))
    with pytest.raises(ValueError, match="sha256"):
        load_model(tmp_path)
    r = invoke("predict", "--model", tmp_path, tmp_path / CARD_FILE)
    assert r.exit_code == 1 and r.stderr.count("\n") == 1 and "sha256" in r.stderr


def png(path, value: int, size=(8, 8)):
    Image.new("L", size, value).save(path)
    return path


def test_predict_classifies_pictures_without_a_coordinator(tmp_path):
    info = ModelInfo(version=3, server_id="s", trained_seq=0, num_labels=0, architecture="mlp")
    write_model(tmp_path / "m", WORDS, info,
                weights_to_bytes(build_model(TASK.architecture, TASK.input_shape, TASK.num_classes).state_dict()))
    files = [png(tmp_path / "dark.png", 10), png(tmp_path / "light.png", 240, size=(32, 20))]
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a picture")

    r = invoke("predict", "--model", tmp_path / "m", files[0], bad, files[1])  # no --coordinator at all
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert r.stderr.count("\n") == 1 and str(bad) in r.stderr
    out = [json.loads(line) for line in r.stdout.splitlines()]
    assert [o["path"] for o in out] == [str(f) for f in files]
    for o in out:
        assert o["class"] in NAMES and set(o["probabilities"]) == set(NAMES)
        assert abs(sum(o["probabilities"].values()) - 1) < 1e-5
        assert o["probabilities"][o["class"]] == max(o["probabilities"].values())

    r = invoke("predict", "--model", tmp_path / "m", *files)
    assert r.exit_code == 0 and r.stderr == "" and len(r.stdout.splitlines()) == 2
    assert "needs --coordinator" in invoke("stats").output  # commands that call one still ask for it


def test_predict_reads_texts_for_a_text_task_and_refuses_vector_tasks(tmp_path):
    text_task = dataclasses.replace(WORDS, dataset="jsonl:x.jsonl", input_shape=(TEXT_LENGTH,), architecture="text")
    info = ModelInfo(version=1, server_id="s", trained_seq=0, num_labels=0, architecture="text")
    model = build_model("text", text_task.input_shape, 10)
    write_model(tmp_path / "t", text_task, info, weights_to_bytes(model.state_dict()))
    (tmp_path / "a.txt").write_text("a review of a film")
    (tmp_path / "b.md").write_text("any file is text to a text model")
    (tmp_path / "c.txt").write_bytes(b"\xff\xfe\xfa")
    predictions = load_model(tmp_path / "t").predict_files([tmp_path / "a.txt", tmp_path / "b.md"])
    assert [p.label_name in NAMES for p in predictions] == [True, True]
    r = invoke("predict", "--model", tmp_path / "t", tmp_path / "a.txt", tmp_path / "c.txt")
    assert r.exit_code == 1 and len(r.stdout.splitlines()) == 1 and "c.txt" in r.stderr

    vector_task = dataclasses.replace(WORDS, input_shape=(64,))
    write_model(tmp_path / "v", vector_task, dataclasses.replace(info, architecture="mlp"),
                weights_to_bytes(build_model("mlp", (64,), 10).state_dict()))
    r = invoke("predict", "--model", tmp_path / "v", tmp_path / "a.txt")
    assert r.exit_code == 1 and "vector" in r.stderr and "out of" in r.stderr and "Traceback" not in r.output


OWN_TEXT_MODEL = """
import torch
from torch import nn


class Bag(nn.Module):
    input_dtype = torch.int64

    def __init__(self, num_classes):
        super().__init__()
        self.bag = nn.EmbeddingBag(1 << 16, 8, padding_idx=0)
        self.head = nn.Linear(8, num_classes)

    def forward(self, x):
        return self.head(self.bag(x))


def bag(input_shape, num_classes):
    return Bag(num_classes)
"""


def test_predict_reads_texts_for_a_text_model_of_your_own(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "own_text_model.py").write_text(OWN_TEXT_MODEL)
    name = "own_text_model:bag"
    text_task = dataclasses.replace(WORDS, dataset="jsonl:x.jsonl", input_shape=(TEXT_LENGTH,), architecture=name)
    info = ModelInfo(version=1, server_id="s", trained_seq=0, num_labels=0, architecture=name)
    write_model(tmp_path / "t", text_task, info,
                weights_to_bytes(build_model(name, text_task.input_shape, 10).state_dict()))
    (tmp_path / "a.txt").write_text("a review of a film")
    r = invoke("predict", "--model", tmp_path / "t", tmp_path / "a.txt")
    assert r.exit_code == 0 and len(r.stdout.splitlines()) == 1, r.output


def record(strategy: str, model_version: int) -> LabeledRecord:
    return LabeledRecord(seq=1, item_id="i", label=0, annotator_id="a", payload=None,
                         provenance=Provenance("w", strategy, model_version), queued_at=0, leased_at=0, labeled_at=0)


def test_label_origins_say_why_each_label_was_chosen():
    records = ([record("random", 0)] * 3 + [record("margin", 0)] +  # before any model: the cold start
               [record("random", 2)] * 2 + [record("audit", 0), record("audit", 4)] + [record("imported", 0)] +
               [record("margin", 1)] * 4 + [record("entropy", 3)])
    origins = admin.label_origins(records)
    assert origins == {"model": 5, "cold_start": 4, "typical": 0, "random_strategy": 2, "audit": 2, "imported": 1, "gold": 0,
                       "model_strategies": {"entropy": 1, "margin": 4}}
    assert admin.chosen_by_model_share(origins) == 5 / 14
    assert admin.chosen_by_model_share(admin.label_origins([])) is None


def test_stats_and_models_show_the_estimated_accuracy(coordinator):
    address, srv = coordinator
    label(address, srv, {"a": 1, "b": 2}, strategy="random")
    label(address, srv, {"c": 3}, strategy="audit")
    publish(srv, num_labels=3, metrics={"accuracy": 0.5})
    publish(srv, num_labels=3, metrics={"accuracy": 0.6, AUDIT_CORRECT: 1.0, AUDIT_LABELS: 1.0})

    d = json.loads(invoke("stats", "--json", address=address).output)
    assert d["estimated_accuracy"]["value"] == 1.0 and d["estimated_accuracy"]["labels"] == 1
    assert d["label_origins"]["audit"] == 1 and d["label_origins"]["cold_start"] == 2
    text = invoke("stats", address=address).output
    assert "estimated_accuracy: 1.000 [" in text and "1 audit label)" in text
    assert "1 audit: drawn uniformly at random on purpose, kept out of training" in text

    models = json.loads(invoke("models", "--json", address=address).output)
    assert models[0]["estimated_accuracy"] is None and models[1]["estimated_accuracy"]["value"] == 1.0
    rows = invoke("models", address=address).output.splitlines()
    assert "estimated" in rows[0] and "1.000 [" in rows[2] and "1.000 [" not in rows[1]


def picture_folder(root):
    """A folder: task of colour pictures in cat/ and dog/, and its dataset as loaded here."""
    from aal_rpc.data import load_task_dataset

    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    task = dataclasses.replace(TASK, dataset=f"folder:{root}", num_classes=2, class_names=("cat", "dog"),
                               input_shape=(3, 8, 8), input_size=(8, 8))
    return task, load_task_dataset(task)


def test_aal_admin_imports_labels_and_stats_counts_them_as_imported(tmp_path):
    task, pool = picture_folder(tmp_path / "pics")
    (tmp_path / "l.jsonl").write_text("".join(json.dumps({"item_id": i, "label_name": "dog"}) + "\n"
                                              for i in pool.item_ids[:3]))
    with serving(task, tmp_path / "data") as (address, _):
        r = invoke("import", tmp_path / "l.jsonl", address=address)
        assert r.exit_code == 0, r.output
        d = json.loads(invoke("stats", "--json", address=address).output)
        assert d["label_origins"]["imported"] == 3 and d["chosen_by_model_share"] == 0.0
        assert "3 (100%) were imported with the data." in invoke("stats", address=address).output


def test_a_folder_task_exports_sources_and_predicts_its_files_as_its_pool(tmp_path):
    """Files are prepared exactly as the pool's pictures were: predicting a pool file gives what the model gives
    the pool item; `export --sources` names each item's file."""
    task, pool = picture_folder(tmp_path / "pics")
    with serving(task, tmp_path / "data") as (address, srv):
        label(address, srv, {pool.item_ids[0]: 1}, x=pool.x_pool[0])
        label(address, srv, {pool.item_ids[1]: 1}, x=pool.x_pool[1])
        r = invoke("export", "--format", "jsonl", "--out", tmp_path / "l.jsonl", "--sources", address=address)
        assert r.exit_code == 0, r.output
        rows = [json.loads(line) for line in (tmp_path / "l.jsonl").read_text().splitlines()]
        assert {(row["item_id"], row["source"], row["label_name"]) for row in rows} == {
            (pool.item_ids[row], pool.sources[row], "dog") for row in range(2)}

        model = build_model(task.architecture, task.input_shape, task.num_classes)
        data = weights_to_bytes(model.state_dict())
        srv.coordinator.publish_model(data=data, server_id="s", trained_seq=2, num_labels=2,
                                      architecture=task.architecture, metrics={}, sha256=sha256_hex(data))
        assert invoke("model", "--out", tmp_path / "m", address=address).exit_code == 0
    exported = load_model(tmp_path / "m")
    assert exported.card["estimated_accuracy"] is None and exported.card["input_size"] == [8, 8]
    files = [tmp_path / "pics" / source for source in pool.sources]
    np.testing.assert_array_equal(np.stack([exported.prepare_file(f) for f in files]), pool.x_pool)
    expected, _ = predict_proba(model, pool.x_pool)
    got = exported.predict_files(files)
    np.testing.assert_allclose([[p.probabilities[n] for n in ("cat", "dog")] for p in got], expected, rtol=1e-6)
