"""`aal-admin stats` says how labels were chosen: how many by a model (with which strategies), how many at random
and why (before any model existed, the random strategy, the audit), how many came with the data; and whether
annotators outrun training."""

import json
from dataclasses import asdict, fields

import numpy as np
import torch
from click.testing import CliRunner

from aal_rpc.chunking import sha256_hex
from aal_rpc.cli import admin
from aal_rpc.cli.admin import origins_message
from aal_rpc.client import CoordinatorClient
from aal_rpc.models import build_model
from aal_rpc.proto.v1 import admin_pb2
from aal_rpc.serde import stats_from_proto, stats_to_proto, weights_to_bytes
from aal_rpc.types import Payload, Stats
from tests.conftest import TASK


def origins(model=0, cold_start=0, random_strategy=0, audit=0, imported=0, typical=0, gold=0, **strategies):
    return {"model": model, "cold_start": cold_start, "typical": typical, "random_strategy": random_strategy,
            "audit": audit, "imported": imported, "gold": gold, "model_strategies": strategies}


def test_origins_message_before_and_after_the_first_model():
    assert origins_message(origins(), versions=0) == (
        "No labels yet. No model yet: queries are the cold start's (random picks, or typical items of the "
        "untrained network's embedding with aal-worker --cold-start typical) until the first model arrives.")
    cold = origins_message(origins(cold_start=7), versions=0)
    assert cold.startswith("Of 7 labels, 0 (0%) were chosen by a model. 7 (100%) were random: 7 chosen at random "
                           "before any model existed (cold start).")
    assert "until the first model arrives" in cold
    mixed = origins_message(origins(model=6, cold_start=2, random_strategy=1, audit=1, margin=4, entropy=2),
                            versions=3, per_model=10 / 3, batch_size=10)
    assert "Of 10 labels, 6 (60%) were chosen by a model (margin 4, entropy 2)." in mixed
    assert ("4 (40%) were random: 2 chosen at random before any model existed (cold start); 1 by the random "
            "strategy; 1 audit: drawn uniformly at random on purpose, kept out of training, used for the accuracy "
            "estimate.") in mixed
    assert "outrunning" not in mixed and "No model yet" not in mixed
    outrun = origins_message(origins(model=80, margin=80), versions=2, per_model=40.0, batch_size=10)
    assert "outrunning training: about 40.0 labels arrived per model version, more than one batch (10)" in outrun
    assert "outrunning" not in origins_message(origins(model=80, margin=80), versions=2, per_model=40.0)
    assert "1 (100%) was imported with the data." in origins_message(origins(imported=1), versions=1)


def test_the_stats_record_and_its_message_carry_the_same_figures():
    """One record (types.Stats): GetStatsResponse carries exactly its fields, and a round trip keeps every one."""
    assert [f.name for f in fields(Stats)] == [f.name for f in admin_pb2.GetStatsResponse.DESCRIPTOR.fields]
    s = Stats(labeled=7, queued=2, leased=1, skipped=3, latest_model_version=4, models=2, last_seq=9,
              candidates_submitted=20, candidates_evicted=5, labels_by_strategy={"margin": 4, "imported": 3},
              pool_capacity=256, mode="async")
    assert stats_from_proto(admin_pb2.GetStatsResponse.FromString(stats_to_proto(s).SerializeToString())) == s


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
    assert "3 (100%) were random: 3 chosen at random before any model existed (cold start)." in stats()
    assert "No model yet" in stats()
    d = json.loads(stats("--json", "--provenance"))  # --provenance: still accepted, a no-op
    assert {f.name: d[f.name] for f in fields(Stats)} == asdict(srv.coordinator.stats())  # every figure, as numbers
    assert d["labels_per_model"] is None and d["cold_start_labels"] == 3 and d["chosen_by_model_share"] == 0.0
    assert d["estimated_accuracy"] is None

    torch.manual_seed(0)
    data = weights_to_bytes(build_model(TASK.architecture, TASK.input_shape, TASK.num_classes).state_dict())
    srv.coordinator.publish_model(data=data, server_id="s", trained_seq=3, num_labels=3, architecture="mlp",
                                  metrics={"accuracy": 0.5}, sha256=sha256_hex(data))
    _label(address, srv, ["4", "5", "6"], version=1)
    d = json.loads(stats("--json"))
    assert d["labels_per_model"] == 6.0 and d["cold_start_labels"] == 3 and d["chosen_by_model_share"] == 0.5
    assert d["label_origins"] == {"model": 3, "cold_start": 3, "typical": 0, "random_strategy": 0, "audit": 0,
                                  "imported": 0, "gold": 0, "model_strategies": {"margin": 3}}
    text = stats()
    assert "Of 6 labels, 3 (50%) were chosen by a model (margin 3)." in text
    assert "3 (50%) were random: 3 chosen at random before any model existed (cold start)." in text
