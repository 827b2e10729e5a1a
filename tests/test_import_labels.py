"""Importing labels a pool already has (issue 18) over real gRPC: ImportLabels is for admins only, survives hostile
streams, imports nothing when the client's items fail part-way, and `aal-admin import` reads back what
`aal-admin export` writes. The import's rules on both backends are in the behavioural suite
(test_coordinator_contract.py)."""

from __future__ import annotations

import io
import json

import grpc
import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from aal_rpc.cli import admin
from aal_rpc.cli.admin_import import import_command
from aal_rpc.client import AnnotationClient, CoordinatorClient
from aal_rpc.coordinator.app import create_coordinator_server
from aal_rpc.coordinator.contract import CoordinatorConfig
from aal_rpc.proto.v1 import admin_pb2
from aal_rpc.security import ClientSecurity
from aal_rpc.serde import payload_to_proto
from aal_rpc.types import Payload
from tests.conftest import TASK, code_of
from tests.test_fuzz import FUZZ, call, check_intact, message, target  # noqa: F401 - target: a fixture

X = np.full(TASK.input_shape, 0.25, np.float32)


def png() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (8, 8), 9).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def serve(tmp_path):
    """Start coordinators on 127.0.0.1:0 (each on a data dir of its own); all stopped at teardown."""
    started = []

    def start(**kw):
        srv = create_coordinator_server("127.0.0.1:0", tmp_path / f"data{len(started)}", TASK,
                                        CoordinatorConfig(lease_seconds=30), **kw)
        started.append(srv)
        return f"127.0.0.1:{srv.port}", srv

    yield start
    for srv in started:
        srv.stop(0)


def test_only_admins_may_import(serve):
    address, srv = serve(tokens={"ann": "annotator", "wrk": "worker", "adm": "admin"})
    items = [("1", 2, Payload.from_array(X))]
    for token, code in ((None, grpc.StatusCode.UNAUTHENTICATED), ("ann", grpc.StatusCode.PERMISSION_DENIED),
                        ("wrk", grpc.StatusCode.PERMISSION_DENIED)):
        with CoordinatorClient(address, retry_for=0, security=ClientSecurity(token=token)) as c:
            assert code_of(lambda: c.import_labels(items)) == code
    with CoordinatorClient(address, retry_for=0, security=ClientSecurity(token="adm")) as c:
        out = c.import_labels(items, annotator_id="team")
        assert (out.imported, out.skipped, out.first_seq, out.last_seq) == (1, 0, 1, 1)
        assert [(r.item_id, r.label, r.annotator_id) for r in c.export()] == [("1", 2, "team")]


def test_items_that_fail_part_way_import_nothing(serve):
    address, srv = serve()

    def items():
        for i in range(5):
            yield str(i), 1, Payload.from_array(X)
        raise OSError("the picture of item 5 cannot be read")

    with CoordinatorClient(address, retry_for=0) as c:
        with pytest.raises(OSError, match="item 5"):
            c.import_labels(items())
        assert c.stats().labeled == 0
        out = c.import_labels([(str(i), 1, Payload.from_array(X, image=png())) for i in range(5)])
        assert (out.imported, c.stats().labeled) == (5, 5)


def test_malformed_messages_refuse_the_import_and_an_empty_one_imports_nothing(serve):
    address, srv = serve()
    good = admin_pb2.ImportLabelsRequest(item_id="ok", label=1, payload=payload_to_proto(Payload.from_array(X)))
    tensor = good.payload.tensor
    stub = CoordinatorClient(address, retry_for=0)._admin
    for bad, match in [
        (admin_pb2.ImportLabelsRequest(item_id="a", label=1), "item a: payload dtype ''"),
        (admin_pb2.ImportLabelsRequest(label=1), "#2: payload dtype"),
        (admin_pb2.ImportLabelsRequest(item_id="a", label=1, payload={"tensor": {"data": tensor.data[:-4],
                                                                                  "dtype": "float32",
                                                                                  "shape": tensor.shape}}),
         "item a: payload of shape"),
        (admin_pb2.ImportLabelsRequest(item_id="a", label=2 ** 31 - 1, payload=good.payload), "item a: label"),
        (admin_pb2.ImportLabelsRequest(item_id="a", label=1, payload=good.payload, annotator_id="x\x00"),
         "item a: annotator_id contains a NUL"),
        (admin_pb2.ImportLabelsRequest(item_id="a" * 300, label=1, payload=good.payload), "#2: item_id is longer"),
    ]:
        with pytest.raises(grpc.RpcError) as info:
            stub.ImportLabels(iter([good, bad]), timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and match in info.value.details()
    assert stub.ImportLabels(iter([]), timeout=10) == admin_pb2.ImportLabelsResponse()
    assert srv.coordinator.stats().labeled == 0


def test_imports_survive_hostile_streams(target):
    srv, channel = target

    @FUZZ
    @given(st.lists(message(admin_pb2.ImportLabelsRequest.DESCRIPTOR), max_size=4))
    def fuzz(requests):
        call(channel, "AdminService", "ImportLabels", admin_pb2.ImportLabelsRequest, admin_pb2.ImportLabelsResponse,
             "client_stream", requests)

    fuzz()
    check_intact(srv)


# -- aal-admin import ---------------------------------------------------------------------------------------------


class Pool:
    """A dataset's pool as the import command reads it (data.Dataset's fields it uses)."""

    def __init__(self, n: int = 12, texts: bool = False):
        self.item_ids = tuple(f"img-{i}" for i in range(n))
        self.x_pool = np.stack([np.full(TASK.input_shape, i / n, np.float32) for i in range(n)])
        self.texts = tuple(f"text {i}" for i in range(n)) if texts else None
        self.sources = None  # not read from files

    def index_of(self, item_id: str) -> int:
        return {i: row for row, i in enumerate(self.item_ids)}[item_id]  # KeyError, as Dataset's

    def picture(self, row: int) -> bytes:
        return b"" if self.texts is not None else png()


@pytest.fixture
def pool(monkeypatch):
    p = Pool()
    monkeypatch.setattr("aal_rpc.data.load_task_dataset", lambda task: p, raising=False)
    return p


def run_import(address, *args):
    with CoordinatorClient(address, retry_for=0, wait_for_ready=False) as c:
        return CliRunner().invoke(import_command, [str(a) for a in args], obj=c)


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_what_export_writes_imports_back(serve, pool, tmp_path, fmt):
    source, _ = serve()
    with CoordinatorClient(source) as c:
        c.submit_candidates(worker_id="w", strategy="margin", model_version=0,
                            candidates=[(i, Payload.from_array(pool.x_pool[pool.index_of(i)]), 0.5)
                                        for i in pool.item_ids[:5]])
    with AnnotationClient(source, "alice") as a:
        first = a.lease()
        a.submit(first, 3)
        for value in (1, 4):
            a.submit(a.lease(), value)
        a.correct(first.item_id, 9)  # exported with --history: the item's last record counts
    out = tmp_path / f"labels.{fmt}"
    result = CliRunner().invoke(admin.main, ["--coordinator", source, "export", "--format", fmt, "--out", str(out),
                                             "--history"])
    assert result.exit_code == 0, result.output

    dest, srv = serve()
    result = run_import(dest, out, "--annotator", "team")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "imported 3 labels (0 already labeled, skipped)"
    with CoordinatorClient(dest) as c:
        exported = {r.item_id: r for r in CoordinatorClient(source).export()}
        imported = list(c.export())
        assert {r.item_id: r.label for r in imported} == {i: r.label for i, r in exported.items()}
        for r in imported:  # the current label of a corrected item, its payload read from the dataset
            assert (r.annotator_id, r.provenance.strategy) == ("team", "imported")
            assert r.payload.to_array().tolist() == pool.x_pool[pool.index_of(r.item_id)].tolist()
            assert r.payload.image == png()
        assert dict(c.stats().labels_by_strategy) == {"imported": 3}
    result = run_import(dest, out)
    assert result.output.strip() == "imported 0 labels (3 already labeled, skipped)"


def test_label_names_texts_and_ids(serve, tmp_path, monkeypatch):
    p = Pool(texts=True)
    monkeypatch.setattr("aal_rpc.data.load_task_dataset", lambda task: p, raising=False)
    address, srv = serve()
    f = tmp_path / "labels.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in [{"id": "img-1", "label_name": "7"},
                                                   {"item_id": "img-2", "label": 5, "label_name": "5"}]) + "\n")
    assert run_import(address, f).output.strip() == "imported 2 labels (0 already labeled, skipped)"
    records = {r.item_id: r for r in CoordinatorClient(address).export()}
    assert {i: r.label for i, r in records.items()} == {"img-1": 7, "img-2": 5}
    assert records["img-1"].payload.text == "text 1" and records["img-1"].payload.image == b""


@pytest.mark.parametrize("rows, message", [
    ("item_id,label_name\nimg-1,3\nimg-2,cat\n", "line 3: unknown class 'cat'"),
    ("item_id,label\nimg-1,3\nimg-2,10\n", "line 3: label '10' is not a class index"),
    ("item_id,label\nimg-1,3\nimg-2,\n", "line 3: no label"),
    ("item_id,label\nimg-1,3\n,2\n", "line 3: no item_id"),
    ("item_id,label,label_name\nimg-1,3,4\n", "line 2: label 3 and label_name '4' disagree"),
    ("item_id,label\nimg-1,3\nnot-there,2\nalso-not,1\n", "2 item(s) are not in the pool of 'digits', e.g. "
                                                          "'not-there'"),
])
def test_a_bad_row_ends_the_command_with_one_line_and_imports_nothing(serve, pool, tmp_path, rows, message):
    address, srv = serve()
    f = tmp_path / "labels.csv"
    f.write_text(rows)
    result = run_import(address, f)
    assert result.exit_code == 1 and message in result.output and "nothing imported" in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert srv.coordinator.stats().labeled == 0


def test_a_row_may_name_its_item_by_its_file(tmp_path):
    """A pool read from files: a label file (an import, or aal-coordinator --gold) names items by `source`, as
    `aal-admin export --sources` writes it; a file the pool does not hold is refused, naming the line."""
    import click

    from aal_rpc.cli.admin_import import read_labels

    good = tmp_path / "good.jsonl"
    good.write_text('{"source": "cats/a.png", "label_name": "1"}\n{"item_id": "7", "label": 2}\n')
    assert read_labels(good, TASK.class_names, by_source={"cats/a.png": "img-1"}) == {"img-1": 1, "7": 2}
    bad = tmp_path / "bad.csv"
    bad.write_text("source,label\ncats/none.png,1\n")
    with pytest.raises(click.ClickException, match="line 2: the pool holds no file 'cats/none.png'"):
        read_labels(bad, TASK.class_names, by_source={"cats/a.png": "img-1"})
    with pytest.raises(click.ClickException, match="no item_id"):
        read_labels(bad, TASK.class_names)
