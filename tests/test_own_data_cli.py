"""aal-coordinator on a team's own data: the labels a partly labeled pool brings are imported once, and bad data is
refused at start in one line (exit 1, no traceback)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from click.testing import CliRunner

from aal_rpc.cli import coordinator as coordinator_cli
from aal_rpc.client import CoordinatorClient
from aal_rpc.types import IMPORTED_STRATEGY

pytestmark = pytest.mark.e2e


def texts(path, labels) -> None:
    words = {"sports": "goal match team", "cooking": "oven flour bake", None: "something else entirely"}
    path.write_text("".join(json.dumps({"id": f"t{i}", "text": f"{words[lab]} {i}", **({"label": lab} if lab else {})})
                            + "\n" for i, lab in enumerate(labels)))


def test_a_partly_labeled_pool_brings_its_labels_into_L_once(tmp_path, procs):
    path = tmp_path / "texts.jsonl"
    texts(path, ["sports", None, "cooking", None, None, "cooking"] * 5)
    args = ["--data-dir", tmp_path / "data", "--dataset", f"jsonl:{path}", "--classes", "sports,cooking",
            "--model", "text"]
    for restart in range(2):
        _, address = procs.start_coordinator("coordinator", args)
        with CoordinatorClient(address, retry_for=5) as client:
            records = list(client.export(include_payload=True))
            assert len(records) == 15  # 3 of every 6 rows are labeled; a restart imports nothing again
            assert {r.provenance.strategy for r in records} == {IMPORTED_STRATEGY}
            by_id = {r.item_id: r.label for r in records}
            assert by_id["t0"] == 0 and by_id["t2"] == 1  # the declared order: sports=0, cooking=1
            assert all(r.payload.text for r in records)
            assert client.task().audit_share == 0.05  # no labeled test set: the audit estimates accuracy
        procs.stop("coordinator")


def start(tmp_path, *args):
    """aal-coordinator's command in this process (its checks come before it serves anything)."""
    return CliRunner().invoke(coordinator_cli.main, [
        "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "data"), *map(str, args)])


def refused(result, *words: str, code: int = 1) -> None:
    """Exit 1 for bad data, 2 for a bad option (click's usage error), with a line naming the cause, no traceback."""
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit), result.exc_info
    assert all(w in result.output for w in words), result.output


def test_bad_data_is_refused_at_start_in_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    refused(start(tmp_path, "--dataset", f"folder:{tmp_path / 'empty'}", "--classes", "a,b"), "no")

    pics = tmp_path / "pics"
    pics.mkdir()
    for i in range(4):
        Image.fromarray(np.full((40, 30, 3), 60 * i, np.uint8)).save(pics / f"{i}.png")
    refused(start(tmp_path, "--dataset", f"folder:{pics}"), "--classes")  # no labels, no declared classes
    refused(start(tmp_path, "--dataset", f"folder:{pics}", "--classes", "only"), "two")
    (pics / "4.png").write_bytes((pics / "0.png").read_bytes()[:60])  # truncated
    refused(start(tmp_path, "--dataset", f"folder:{pics}", "--classes", "a,b"), "4.png")

    path = tmp_path / "texts.jsonl"
    texts(path, ["sports", None])
    refused(start(tmp_path, "--dataset", f"jsonl:{path}", "--classes", "cooking,travel"), "sports")
    path.write_text('{"id": "x", "text": "a"}\n{"id": "x", "text": "b"}\n')
    refused(start(tmp_path, "--dataset", f"jsonl:{path}", "--classes", "a,b"), "x")

    test_set = tmp_path / "test.jsonl"
    test_set.write_text('{"text": "a", "label": "other"}\n{"text": "b", "label": "a"}\n')
    texts(path, [None, None])
    refused(start(tmp_path, "--dataset", f"jsonl:{path}", "--classes", "a,b", "--test-dataset", f"jsonl:{test_set}"),
            "other")
    refused(start(tmp_path, "--dataset", f"jsonl:{path}", "--classes", "a,b", "--input-size", "0x3"),
            "--input-size", code=2)
