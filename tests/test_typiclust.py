"""TypiClust picks typical and diverse items of an embedding: one per cluster, its densest point, largest clusters
first. A selector holding a pretrained encoder starts cold with them instead of random picks, and the figures
count them as the cold start's, apart from the random ones and from the models' choices."""

import numpy as np
import pytest
import torch

from aal_rpc.cli import admin
from aal_rpc.client import CoordinatorClient
from aal_rpc.measures import cold_start_share, typical_share
from aal_rpc.models import build_model
from aal_rpc.selector import Selector, WorkerConfig
from aal_rpc.serde import weights_to_bytes
from aal_rpc.strategies import STRATEGIES, get_strategy
from aal_rpc.strategies.base import rank_scores
from aal_rpc.strategies.typiclust import TypiClust, mean_neighbour_distance
from aal_rpc.training import predict_proba
from aal_rpc.types import LabeledRecord, ModelInfo, Provenance, is_encoder
from tests.conftest import TASK
from tests.test_loops import DIGITS, Recording, label_all

SIZES = (300, 200, 120, 60)  # largest first


def blobs(seed: int = 0, sizes=SIZES, dim: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Well separated Gaussian blobs, each along its own axis (so they stay apart once scaled to unit length), the
    rows shuffled; and each row's blob."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([10.0 * np.eye(dim)[b] + rng.normal(size=(n, dim)) for b, n in enumerate(sizes)])
    blob = np.repeat(np.arange(len(sizes)), sizes)
    order = rng.permutation(len(x))
    return x[order], blob[order]


def select(x: np.ndarray, k: int, **options):
    return TypiClust(**options).select(np.zeros((len(x), 0), np.float32), k, embeddings=x)


def densest(x: np.ndarray, members: np.ndarray, k: int = 20) -> int:
    """The member whose k nearest fellow members lie closest on average (brute force)."""
    d = np.sqrt(((x[members, None, :] - x[None, members, :]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    return int(members[np.argmin(np.sort(d, axis=1)[:, :k].mean(axis=1))])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_pick_per_blob_its_densest_point_largest_blob_first(seed):
    x, blob = blobs(seed)
    sel = TypiClust(seed=seed, normalize=False).select(np.zeros((len(x), 0)), 4, embeddings=x)
    assert blob[sel.indices].tolist() == [0, 1, 2, 3]  # diverse, largest cluster first
    assert sel.indices.tolist() == [densest(x, np.flatnonzero(blob == b)) for b in range(4)]  # typical
    assert np.array_equal(sel.scores, rank_scores(4, len(x)))  # the scale every strategy shares


def test_typical_in_the_scaled_embedding_by_default():
    x, blob = blobs(3)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    sel = select(x, 4)
    assert blob[sel.indices].tolist() == [0, 1, 2, 3]
    assert sel.indices.tolist() == [densest(unit, np.flatnonzero(blob == b)) for b in range(4)]


def test_more_picks_than_clusters_go_round_the_clusters_again():
    points = np.eye(3)[np.repeat([0, 1, 2], [30, 20, 10])]  # three distinct points, 30, 20 and 10 times
    sel = select(points, 7)
    assert len(set(sel.indices.tolist())) == 7
    assert points[sel.indices].argmax(axis=1).tolist() == [0, 1, 2, 0, 1, 2, 0]


def test_repeatable_by_seed():
    x, _ = blobs(5, sizes=(400, 300, 200, 100))
    a = select(x, 10, seed=7).indices.tolist()
    assert a == select(x, 10, seed=7).indices.tolist()
    assert len(set(a)) == 10


def test_a_large_shard_clusters_a_sample_and_assigns_every_item():
    x, blob = blobs(6, sizes=(3000, 2000, 1000), dim=5)
    sel = select(x, 3, normalize=False, max_points=500)
    assert blob[sel.indices].tolist() == [0, 1, 2]
    # the pick is typical of its blob: closer to its neighbours than nine in ten of the blob's items
    for i, b in zip(sel.indices, range(3)):
        members = np.flatnonzero(blob == b)
        spread = mean_neighbour_distance(x[members], 20)
        assert mean_neighbour_distance(x[[i, *members[members != i]]], 20)[0] <= np.quantile(spread, 0.1)


@pytest.mark.parametrize("n, k", [(1, 1), (3, 5), (7, 7), (12, 4), (19, 19), (19, 25), (40, 39)])
def test_small_shards_and_asking_for_everything(n, k):
    x = np.random.default_rng(n).normal(size=(n, 3))
    sel = select(x, k)
    assert sorted(sel.indices.tolist()) == sorted(set(sel.indices.tolist()))
    assert len(sel.indices) == min(n, k) and set(sel.indices.tolist()) <= set(range(n))
    assert np.array_equal(sel.scores, rank_scores(min(n, k), n))


def test_duplicates_and_degenerate_embeddings():
    same = np.ones((50, 4))
    assert len(set(select(same, 10).indices.tolist())) == 10
    assert len(set(select(np.zeros((30, 4)), 5).indices.tolist())) == 5  # zero vectors: nothing to scale
    two = np.repeat(np.array([[1.0, 0.0], [0.0, 1.0]]), [30, 20], axis=0)
    assert sorted(two[select(two, 2).indices, 0].tolist()) == [0.0, 1.0]  # one of each point
    assert len(select(np.zeros((0, 4)), 3).indices) == 0 and len(select(same, 0).indices) == 0


def test_registered_by_name_and_given_any_models_embeddings():
    assert STRATEGIES["typiclust"] is TypiClust
    s = get_strategy("typiclust", seed=1)
    assert s.needs_model and s.needs_embeddings
    x, blob = blobs(7)
    probs = np.full((len(x), 3), 1 / 3, np.float32)  # the probabilities are not what it reads
    assert blob[s.select(probs, 4, embeddings=x).indices].tolist() == [0, 1, 2, 3]


def test_the_encoder_rule():
    def info(num_labels, **metrics):
        return ModelInfo(version=1, server_id="s", trained_seq=num_labels, num_labels=num_labels, architecture="mlp",
                         metrics=metrics)

    assert is_encoder(info(0, pretrain_steps=10.0))
    assert not is_encoder(info(0))  # no pretraining: a model, however poor
    assert not is_encoder(info(0, pretrain_steps=0.0))
    assert not is_encoder(info(5, pretrain_steps=10.0))  # fine-tuned on labels: a model


def record(strategy: str, version: int) -> LabeledRecord:
    return LabeledRecord(seq=1, item_id="i", label=0, annotator_id="a", payload=None,
                         provenance=Provenance("w", strategy, version), queued_at=0, leased_at=0, labeled_at=0)


def test_typical_picks_count_as_the_cold_start_apart_from_random_ones_and_from_the_models():
    # v1 an encoder, v2 a model trained on labels (typiclust as its plain strategy: a model's choice)
    records = ([record("random", 0)] * 2 + [record("typiclust", 1)] * 3 + [record("audit", 1)] +
               [record("margin", 2)] * 3 + [record("typiclust", 2)])
    origins = admin.label_origins(records, {1})
    assert origins == {"model": 4, "cold_start": 2, "typical": 3, "random_strategy": 0, "audit": 1, "imported": 0, "gold": 0,
                       "model_strategies": {"margin": 3, "typiclust": 1}}
    assert admin.chosen_by_model_share(origins) == 4 / 10
    text = admin.origins_message(origins, versions=2)
    assert "Of 10 labels, 4 (40%) were chosen by a model (margin 3, typiclust 1)." in text
    assert ("3 (30%) were typical items of an encoder's embedding (one pretrained on the pool, or the untrained "
            "network's), picked before any model trained on labels existed (cold start, TypiClust).") in text
    assert "2 chosen at random before any model existed (cold start)" in text
    only = admin.origins_message(admin.label_origins(records[2:5], {1}), versions=1, only_encoders=True)
    assert "No model trained on labels yet" in only

    versions = [r.provenance.model_version for r in records]
    assert cold_start_share(versions, {1}) == 6 / 10  # random, typical, and the audit item drawn meanwhile
    assert cold_start_share(versions) == 2 / 10  # no encoder: only version 0
    assert typical_share([(r.provenance.strategy, r.provenance.model_version) for r in records], {1}) == 3 / 10
    assert typical_share([], {1}) is None


def encoder() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(TASK.architecture, TASK.input_shape, TASK.num_classes)


def test_a_worker_holding_an_encoder_starts_cold_with_typical_items(grpc_coordinator):
    address, srv = grpc_coordinator
    with CoordinatorClient(address) as client:
        client.upload_model(weights_to_bytes(encoder().state_dict()), server_id="s", trained_seq=0, num_labels=0,
                            architecture=TASK.architecture, metrics={"pretrain_steps": 10.0})
        recording = Recording(client)
        w = Selector(recording, WorkerConfig(worker_id="w0", shard_index=0, num_shards=2, strategy="margin",
                                             batch_size=20, poll_seconds=0.01), dataset=DIGITS)
        assert w.step() == 10  # the cold start's size: its shard's share of one batch, not S's room
        assert w.step() == 0
        [sent] = recording.of("submit_candidates")
        assert sent["strategy"] == "typiclust" and sent["model_version"] == 1
        # TypiClust over the encoder's embeddings of the shard
        _, emb = predict_proba(encoder(), DIGITS.x_pool[w.indices], with_embeddings=True)
        expected = TypiClust(seed=0).select(np.zeros((len(emb), 0)), 10, embeddings=emb).indices
        assert [c[0] for c in sent["candidates"]] == w.item_ids[expected].tolist()
        entries = [srv.coordinator.pool.get(i) for i in srv.coordinator.pool.item_ids()]
        assert {(e.candidate.provenance.strategy, e.candidate.provenance.model_version) for e in entries} == \
            {("typiclust", 1)}

        label_all(address, DIGITS, 10)  # then a model trained on labels: the worker's own strategy, as before
        client.upload_model(weights_to_bytes(encoder().state_dict()), server_id="s", trained_seq=10, num_labels=10,
                            architecture=TASK.architecture, metrics={"pretrain_steps": 10.0, "accuracy": 0.5})
        assert w.step() == 20
        last = recording.of("submit_candidates")[-1]
        assert last["strategy"] == "margin" and last["model_version"] == 2
        stats = admin.label_origins(client.export(include_payload=False), {1})
        assert stats["typical"] == 10 and stats["model"] == 0


def test_before_any_model_a_worker_picks_random_items_or_typical_ones_of_its_untrained_network_if_told(
        grpc_coordinator):
    address, _ = grpc_coordinator
    with CoordinatorClient(address) as client:
        recording = Recording(client)
        w = Selector(recording, WorkerConfig(worker_id="w0", shard_index=0, num_shards=2, strategy="margin",
                                             batch_size=20, poll_seconds=0.01, cold_start="typical"), dataset=DIGITS)
        assert w.step() == 10  # sized like the cold start
        [sent] = recording.of("submit_candidates")
        assert sent["strategy"] == "typiclust" and sent["model_version"] == 0
        _, emb = predict_proba(w.untrained_encoder(), DIGITS.x_pool[w.indices], with_embeddings=True)
        expected = TypiClust(seed=0).select(np.zeros((len(emb), 0)), 10, embeddings=emb).indices
        assert [c[0] for c in sent["candidates"]] == w.item_ids[expected].tolist()

        label_all(address, DIGITS, 10)
        stats = admin.label_origins(client.export(include_payload=False))
        assert stats["typical"] == 10 and stats["cold_start"] == 0 and stats["model"] == 0

        other = Recording(client)  # the default
        Selector(other, WorkerConfig(worker_id="w1", shard_index=1, num_shards=2, strategy="margin", batch_size=20,
                                     poll_seconds=0.01), dataset=DIGITS).step()
        assert other.of("submit_candidates")[0]["strategy"] == "random"
