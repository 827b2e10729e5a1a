"""A frozen backbone (aal-server --freeze-backbone): trainers train the head alone, trainers and workers embed each item
once per backbone (keyed by a fingerprint of the backbone's weights), a worker scores a later version with its head
alone, and the published weights stay the whole model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file
from torch import nn

from aal_rpc.cli import server as server_cli
from aal_rpc.client import AnnotationClient, CoordinatorClient
from aal_rpc.data import load_dataset
from aal_rpc.frozen import (FROZEN_BACKBONE, EmbeddingCache, backbone_fingerprint, embed_rows, head_names,
                            head_probabilities)
from aal_rpc.models import PlainClassifier, build_model
from aal_rpc.serde import weights_from_bytes, weights_to_bytes
from aal_rpc.selector import Selector, WorkerConfig
from aal_rpc.trainer import Trainer, TrainerConfig
from aal_rpc.training import predict_proba
from tests.conftest import TASK

DIGITS = load_dataset("digits")


def model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(TASK.architecture, TASK.input_shape, TASK.num_classes).eval()


def test_the_fingerprint_is_the_backbones_whatever_the_head_and_survives_the_wire():
    a, b = model(0), model(0)
    with torch.no_grad():
        b.head.weight.add_(1.0)
    assert head_names(a) == {"head.weight", "head.bias"}
    assert backbone_fingerprint(a) == backbone_fingerprint(b)
    wired = model(1)
    wired.load_state_dict(weights_from_bytes(weights_to_bytes(b.state_dict())))
    assert backbone_fingerprint(wired) == backbone_fingerprint(a)
    with torch.no_grad():
        b.features[1].bias[0] += 1e-6  # one value of the backbone
    assert backbone_fingerprint(b) != backbone_fingerprint(a)


def test_a_plain_modules_head_is_its_last_linear_under_its_own_names():
    plain = PlainClassifier(nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.BatchNorm1d(16), nn.ReLU(),
                                          nn.Linear(16, 3)))
    assert head_names(plain) == {"4.weight", "4.bias"}
    before = backbone_fingerprint(plain)
    with torch.no_grad():
        plain.head.bias.add_(1.0)
    assert backbone_fingerprint(plain) == before
    plain.net[2].running_mean.add_(1.0)  # batchnorm's statistics are the backbone's
    assert backbone_fingerprint(plain) != before


def test_the_head_on_cached_embeddings_gives_the_full_passs_probabilities():
    m = model()
    probs, _ = predict_proba(m, DIGITS.x_pool[:200])
    emb = embed_rows(m, DIGITS.x_pool[:200])
    assert emb.shape == (200, m.head.in_features)
    assert np.allclose(head_probabilities(m.head, emb), probs, atol=1e-6)
    assert embed_rows(m, DIGITS.x_pool[:0]).shape == (0, m.head.in_features)


def test_the_cache_embeds_each_row_once_per_backbone_and_keeps_the_latest_backbones():
    calls = []

    def embed(x):
        calls.append(len(x))
        return x.reshape(len(x), -1)[:, :4].copy()

    cache = EmbeddingCache(keep=2)
    x = DIGITS.x_pool[:30]
    assert np.array_equal(cache.rows("a", "L", x[:10], embed), x[:10].reshape(10, -1)[:, :4])
    assert np.array_equal(cache.rows("a", "L", x[:25], embed), x[:25].reshape(25, -1)[:, :4])  # only 15 new rows
    cache.rows("a", "L", x[:25], embed)
    assert calls == [10, 15]
    cache.rows("b", "L", x[:25], embed)  # another backbone: embedded anew
    cache.rows("a", "test", x[:5], embed)  # another array under a name of its own
    assert calls == [10, 15, 25, 5]
    cache.rows("c", "L", x[:1], embed)  # a third backbone: the least recently used ("b") goes
    cache.rows("a", "L", x[:25], embed)
    cache.rows("b", "L", x[:1], embed)
    assert calls == [10, 15, 25, 5, 1, 1] and cache.embedded == 57


def label(address, n):
    with AnnotationClient(address, "oracle") as annot:
        for _ in range(n):
            q = annot.lease(wait_seconds=5)
            annot.submit(q, int(DIGITS.y_pool[int(q.item_id)]))


def test_a_frozen_trainer_trains_the_head_and_a_worker_scores_later_versions_with_the_head(grpc_coordinator,
                                                                                          tmp_path, monkeypatch):
    init = model(7).state_dict()
    save_file(init, tmp_path / "init.safetensors")
    address, _ = grpc_coordinator
    with CoordinatorClient(address) as client:
        worker = Selector(client, WorkerConfig(worker_id="w", strategy="margin", batch_size=20, poll_seconds=0.05,
                                               cold_start="random"), dataset=DIGITS)
        assert worker.step() == 20
        label(address, 20)
        trainer = Trainer(client, TrainerConfig(server_id="s", epochs=2, min_steps=20, paced=False,
                                                init_weights=str(tmp_path / "init.safetensors"),
                                                freeze_backbone=True), dataset=DIGITS)
        x, y = DIGITS.x_pool[:20], DIGITS.y_pool[:20].astype(np.int64)
        trainer.train_round(x[:12], y[:12], 12)
        trainer.train_round(x, y, 20)
        # each labeled item, and each test item, embedded once: the second round embedded its 8 new labels only
        assert trainer._cache.embedded == 20 + len(DIGITS.x_test)
        v1, v2 = client.models()
        assert v1.metrics[FROZEN_BACKBONE] == v2.metrics[FROZEN_BACKBONE] == 1.0
        _, data = client.download_model(v2.version)
        published = weights_from_bytes(data)
        assert set(published) == set(init)  # the whole model, backbone and head
        assert all(torch.equal(published[k], v) for k, v in init.items() if not k.startswith("head."))
        assert not torch.equal(published["head.weight"], init["head.weight"])
        full = model(3)
        full.load_state_dict(published)
        assert v2.metrics["accuracy"] == pytest.approx(float(
            (predict_proba(full, DIGITS.x_test)[0].argmax(1) == DIGITS.y_test).mean()))

        passes = []
        monkeypatch.setattr("aal_rpc.frozen.predict_proba",
                            lambda m, x, **kw: passes.append(len(x)) or predict_proba(m, x, **kw))
        worker.set_model(model(5), 0, frozen=True)  # another backbone: a pass over the shard
        worker._scores()
        for info in (v1, v2):
            _, data = client.download_model(info.version)
            held = model(3)
            held.load_state_dict(weights_from_bytes(data))
            worker.set_model(held, info.version, frozen=True)
            probs, _ = worker._scores()
            assert np.allclose(probs, predict_proba(held, worker._x)[0], atol=1e-5)
        assert passes == [len(worker._x), len(worker._x)]  # model(5)'s backbone, then v1's, which v2 shares
        worker.version = 0
        worker._follow_latest()  # as a worker's step downloads it: the model's metrics say its backbone was frozen
        assert worker.version == v2.version and worker._backbone == backbone_fingerprint(full)
        worker._scores()
        assert len(passes) == 2


def test_freeze_backbone_is_a_server_option_and_refuses_semi_supervised(monkeypatch):
    seen = []

    class Stop(Exception):
        pass

    def config(**kw):
        seen.append(TrainerConfig(**kw))
        raise Stop

    monkeypatch.setattr(server_cli, "TrainerConfig", config)
    result = CliRunner().invoke(server_cli.main, ["--coordinator", "127.0.0.1:1", "--freeze-backbone"])
    assert isinstance(result.exception, Stop) and seen[-1].freeze_backbone
    result = CliRunner().invoke(server_cli.main, ["--coordinator", "127.0.0.1:1", "--freeze-backbone", "--semi-supervised"])
    assert result.exit_code == 2 and "drop --semi-supervised" in result.output
    with pytest.raises(ValueError, match="unlabeled"):
        TrainerConfig(server_id="s", freeze_backbone=True, semi_supervised=True)


# -- backbones from packages: timm:NAME and hf:PATH (neither package is installed here: their absence is tested as it
# is, and the wiring with stand-in modules of the same interface on sys.path)

TIMM_STANDIN = '''
from torch import nn


def is_model(name):
    return name == "tiny"


def create_model(name, pretrained, num_classes, in_chans):
    assert not pretrained and num_classes == 0
    net = nn.Sequential(nn.Conv2d(in_chans, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    net.num_features = 4
    net.pretrained_cfg = {"mean": (0.5, 0.4, 0.3), "std": (0.2, 0.2, 0.2)}
    return net
'''

TRANSFORMERS_STANDIN = '''
from types import SimpleNamespace

import torch
from torch import nn


class AutoModel:
    @staticmethod
    def from_pretrained(path, local_files_only):
        assert local_files_only
        net = nn.Sequential(nn.Conv2d(3, 6, 3), nn.AdaptiveAvgPool2d(1))
        torch.manual_seed(0)  # the directory's weights: the same in every process
        for p in net.parameters():
            nn.init.normal_(p)

        class Wrapped(nn.Module):
            def __init__(self):
                super().__init__()
                self.net = net

            def forward(self, pixel_values):
                return SimpleNamespace(pooler_output=self.net(pixel_values))
        return Wrapped()
'''


def packages_missing(monkeypatch, *names):
    for name in names:
        monkeypatch.setitem(__import__("sys").modules, name, None)  # import fails as for a package not installed


@pytest.mark.parametrize("name, phrase", [
    ("timm:resnet18", "model 'timm:resnet18' needs the package timm, which is not installed (pip install timm"),
    ("hf:{tmp}/absent", "is no local Hugging Face model directory (no config.json there)"),
    ("hf:{tmp}/model", "model 'hf:{tmp}/model' needs the package transformers, which is not installed"),
])
def test_a_backbone_whose_package_or_directory_is_missing_is_named_in_one_line(name, phrase, tmp_path, monkeypatch):
    packages_missing(monkeypatch, "timm", "transformers")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    with pytest.raises(ValueError) as caught:
        build_model(name.format(tmp=tmp_path), (3, 8, 8), 2)
    assert phrase.format(tmp=tmp_path) in str(caught.value) and "\n" not in str(caught.value)


def test_timm_and_hf_backbones_build_classifiers_with_their_normalization(tmp_path, monkeypatch):
    (tmp_path / "timm.py").write_text(TIMM_STANDIN)
    (tmp_path / "transformers.py").write_text(TRANSFORMERS_STANDIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    net = build_model("timm:tiny", (3, 8, 8), 5)
    assert net.embedding_dim == 4 and torch.equal(net.input_mean, torch.tensor([0.5, 0.4, 0.3]))
    assert net(torch.rand(2, 3, 8, 8)).shape == (2, 5)
    with pytest.raises(ValueError, match="timm has no model 'huge'"):
        build_model("timm:huge", (3, 8, 8), 5)

    directory = tmp_path / "vit"
    directory.mkdir()
    (directory / "config.json").write_text("{}")
    (directory / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5] * 3, "image_std": [0.25] * 3}))
    net = build_model(f"hf:{directory}", (3, 8, 8), 5)
    assert net.embedding_dim == 6 and torch.equal(net.input_std, torch.full((3,), 0.25))
    again = build_model(f"hf:{directory}", (3, 8, 8), 5)
    assert backbone_fingerprint(net) == backbone_fingerprint(again)  # every process holds the directory's backbone
    with pytest.raises(ValueError, match="needs image input"):
        build_model(f"hf:{directory}", (256,), 5)
