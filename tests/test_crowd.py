"""A crowd over real gRPC, on both stores: several labels per item (--labels-per-item), each item's consensus
(`aal-admin export --consensus`), each annotator's quality (`aal-admin annotators --json`), and a trainer that learns
the consensus labels. Four careful annotators and two careless ones label through AnnotationClient."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from click.testing import CliRunner

from aal_rpc.cli import admin
from aal_rpc.cli.coordinator import serve_gold
from aal_rpc.client import AnnotationClient, CoordinatorClient
from aal_rpc.coordinator.app import create_coordinator_server
from aal_rpc.coordinator.contract import CoordinatorConfig
from aal_rpc.data import UNLABELED, Dataset
from aal_rpc.trainer import Trainer, TrainerConfig
from aal_rpc.types import Payload, Task

CLASSES = 4
ITEMS = 48
GOLD = 6  # more items, with known answers: aal-coordinator --gold
K = 3
ACCURACY = {"careful-0": 0.95, "careful-1": 0.95, "careful-2": 0.95, "careful-3": 0.95,
            "careless-0": 0.25, "careless-1": 0.25}
TASK = Task(dataset="npz:unused", num_classes=CLASSES, class_names=("a", "b", "c", "d"), input_shape=(1, 8, 8),
            architecture="mlp")


def pool() -> Dataset:
    """ITEMS + GOLD pictures whose brightness tells their class (truth), none labeled."""
    rng = np.random.default_rng(0)
    y = np.arange(ITEMS + GOLD) % CLASSES
    x = np.clip(rng.normal((y[:, None, None, None] + 0.5) / CLASSES, 0.03, (ITEMS + GOLD, 1, 8, 8)), 0, 1)
    return Dataset("pool", x.astype(np.float32), np.full(ITEMS + GOLD, UNLABELED, dtype=np.int64),
                   np.zeros((0, 1, 8, 8), np.float32), np.zeros(0, np.int64), TASK.class_names)


def truth(x: np.ndarray) -> int:
    return int(x.mean() * CLASSES)


@pytest.fixture(params=["sqlite", "postgresql"])
def address(request, tmp_path):
    url = request.getfixturevalue("postgres").new_database() if request.param == "postgresql" else None
    srv = create_coordinator_server("127.0.0.1:0", None if url else tmp_path / "data", TASK,
                                    CoordinatorConfig(pool_capacity=ITEMS + GOLD, labels_per_item=K, gold_share=0.2),
                                    store=url)
    data = pool()
    serve_gold(srv.coordinator, data, {i: truth(data.x_pool[data.index_of(i)]) for i in data.item_ids[ITEMS:]})
    yield f"127.0.0.1:{srv.port}"
    srv.stop(grace=0)


def crowd_labels(address: str, data: Dataset) -> dict[str, set[str]]:
    """The crowd labels every item it is offered, in turns (each turn in a new order: people come and go), until S
    has nothing left for anyone; returns who labeled each item."""
    rng = random.Random(0)
    who: dict[str, set[str]] = {}
    clients = {name: AnnotationClient(address, name, retry_for=5) for name in ACCURACY}
    try:
        while True:
            labeled = 0
            names = sorted(clients)
            rng.shuffle(names)
            for name in names:
                client = clients[name]
                q = client.lease(wait_seconds=0)
                if q is None:
                    continue
                right = truth(data.x_pool[data.index_of(q.item_id)])
                wrong = rng.choice([c for c in range(CLASSES) if c != right])
                client.submit(q, right if rng.random() < ACCURACY[name] else wrong)
                who.setdefault(q.item_id, set()).add(name)
                labeled += 1
            if not labeled:
                return who
    finally:
        for client in clients.values():
            client.close()


def test_a_crowd_labels_each_item_k_times_and_its_consensus_and_quality_come_out(address, tmp_path):
    data = pool()
    items, gold = data.item_ids[:ITEMS], set(data.item_ids[ITEMS:])
    with CoordinatorClient(address, retry_for=5) as c:
        c.submit_candidates(worker_id="w", strategy="random", model_version=0, candidates=[
            (i, Payload.from_array(data.x_pool[data.index_of(i)]), 0.5) for i in items])
        who = crowd_labels(address, data)
        gold_labels = {i: who.pop(i) for i in gold if i in who}  # each gold item: once by whoever drew it
        assert gold_labels and all(len(names) <= len(ACCURACY) for names in gold_labels.values())
        assert len(who) == ITEMS and all(len(names) == K for names in who.values())  # K different people each
        stats = c.stats()
        assert stats.labeled == ITEMS + GOLD and stats.queued == GOLD  # gold items wait for whoever has not had them
        assert stats.last_seq == ITEMS * K + GOLD + sum(map(len, gold_labels.values()))

        runner = CliRunner()
        out = tmp_path / "consensus.jsonl"
        done = runner.invoke(admin.main, ["--coordinator", address, "export", "--consensus", "--format", "jsonl",
                                          "--out", str(out)])
        assert done.exit_code == 0, done.output
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert len(rows) == ITEMS + GOLD
        assert all(r["label"] == truth(data.x_pool[data.index_of(r["item_id"])]) and r["confidence"] == 1.0
                   for r in rows if r["item_id"] in gold)
        rows = [r for r in rows if r["item_id"] not in gold]
        assert all(set(r["votes"]) == who[r["item_id"]] for r in rows)
        assert all(0.0 <= r["confidence"] <= 1.0 and r["labels"] == K for r in rows)
        right = [r["label"] == truth(data.x_pool[data.index_of(r["item_id"])]) for r in rows]
        assert np.mean(right) >= 0.85, rows

        done = runner.invoke(admin.main, ["--coordinator", address, "annotators", "--json"])
        assert done.exit_code == 0, done.output
        annotators = json.loads(done.output)
        quality = {r["annotator"]: r["quality"] for r in annotators}
        assert set(quality) == set(ACCURACY)
        assert sum(r["gold_labels"] for r in annotators) == sum(map(len, gold_labels.values()))
        assert sorted(quality, key=quality.get)[:2] == ["careless-0", "careless-1"] or sorted(
            quality, key=quality.get)[:2] == ["careless-1", "careless-0"], quality

        # a trainer learns each item's consensus label, not the last one to arrive
        trainer = Trainer(c, TrainerConfig(server_id="s", epochs=1, min_steps=5, min_labels=stats.last_seq),
                          dataset=data)
        trainer.run(max_rounds=1)
        consensus = {r["item_id"]: r["label"] for r in rows}
        consensus.update({i: truth(data.x_pool[data.index_of(i)]) for i in gold})  # gold: the known answer
        assert {i: trainer._ys[row] for i, row in trainer._index.items()} == consensus
