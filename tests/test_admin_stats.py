"""`aal-admin stats` says how labels are being chosen: at random before the first model, then how many labels
each model version chose, and how many labels were chosen before any model existed."""

import json

import numpy as np
import torch
from click.testing import CliRunner

from aal_rpc.chunking import sha256_hex
from aal_rpc.cli import admin
from aal_rpc.cli.admin import pace_message
from aal_rpc.client import CoordinatorClient
from aal_rpc.models import build_model
from aal_rpc.serde import weights_to_bytes
from aal_rpc.types import Payload
from tests.conftest import TASK


def test_pace_message_before_and_after_the_first_model():
    assert pace_message(0, 0) == "No model yet: queries are chosen at random until the first model arrives."
    assert "all 7 labels so far were chosen at random" in pace_message(7, 0)
    assert "until the first model arrives" in pace_message(7, 0)
    keeping_up = pace_message(30, 3, batch_size=10)
    assert "about 10.0 labels" in keeping_up and "outrunning" not in keeping_up
    outrun = pace_message(80, 2, batch_size=10)
    assert "about 40.0 labels" in outrun and "outrunning training" in outrun and "(10)" in outrun
    assert "outrunning" not in pace_message(80, 2)  # no batch to compare with: the figure alone
    assert "70 of 80 labels (88%) were chosen before any model existed" in pace_message(80, 2, cold_start=70)


def _label(address, srv, ids, version):
    with CoordinatorClient(address) as c:
        x = np.zeros(TASK.input_shape, dtype=np.float32)
        c.submit_candidates(worker_id="w", strategy="random" if version == 0 else "margin", model_version=version,
                            candidates=[(i, Payload.from_array(x), 0.5) for i in ids])
    for i in ids:
        q = srv.coordinator.lease("ann")
        srv.coordinator.submit_label(lease_id=q.lease_id, item_id=q.item_id, label=1, annotator_id="ann")


def test_stats_reports_labels_per_model_and_cold_start_labels(grpc_coordinator):
    address, srv = grpc_coordinator
    runner = CliRunner()

    def stats(*args):
        r = runner.invoke(admin.main, ["--coordinator", address, "stats", *args])
        assert r.exit_code == 0, r.output
        return r.output

    _label(address, srv, ["1", "2", "3"], version=0)
    assert "No model yet: all 3 labels so far were chosen at random" in stats()
    d = json.loads(stats("--json", "--provenance"))
    assert d["labels_per_model"] is None and d["cold_start_labels"] == 3

    torch.manual_seed(0)
    data = weights_to_bytes(build_model(TASK.architecture, TASK.input_shape, TASK.num_classes).state_dict())
    srv.coordinator.publish_model(data=data, server_id="s", trained_seq=3, num_labels=3, architecture="mlp",
                                  metrics={"accuracy": 0.5}, sha256=sha256_hex(data))
    _label(address, srv, ["4", "5", "6"], version=1)
    d = json.loads(stats("--json", "--provenance"))
    assert d["labels_per_model"] == 6.0 and d["cold_start_labels"] == 3
    text = stats("--provenance")
    assert "6 labels over 1 model version: each model chose about 6.0 labels." in text
    assert "3 of 6 labels (50%) were chosen before any model existed" in text
