"""Contrastive pretraining (aal_rpc/pretraining.py): the views, the loss, and what a pretraining run changes."""

import numpy as np
import pytest
import torch

from aal_rpc.data import load_dataset
from aal_rpc.data.text import PADDING
from aal_rpc.models import build_model
from aal_rpc.pretraining import nt_xent, pretrain, view

DIGITS = load_dataset("digits")


def test_views_keep_shape_and_dtype_and_differ_at_random():
    gen = torch.Generator().manual_seed(0)
    pictures = torch.rand(8, 1, 8, 8)
    a, b = view(pictures, gen), view(pictures, gen)
    assert a.shape == pictures.shape and a.dtype == pictures.dtype and not torch.equal(a, b)
    text = torch.randint(1, 1000, (8, 30))
    t = view(text, gen)
    assert t.dtype == torch.int64 and t.shape == text.shape
    dropped = t == PADDING
    assert dropped.any() and (t[~dropped] == text[~dropped]).all()  # n-grams are dropped, never changed
    vectors = torch.rand(8, 5)
    assert view(vectors, gen).shape == vectors.shape


def test_the_loss_is_low_when_views_agree_and_high_when_they_do_not():
    z = torch.randn(16, 8)
    assert nt_xent(z, z) < nt_xent(z, torch.randn(16, 8))
    assert nt_xent(z, z).item() == pytest.approx(nt_xent(z * 3, z * 3).item(), rel=0.5)  # scale does not matter much


def test_pretraining_moves_the_features_not_the_head_and_lowers_the_loss():
    torch.manual_seed(0)
    model = build_model("mlp", DIGITS.input_shape, DIGITS.num_classes)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _, first = pretrain(model, DIGITS.x_pool[:256], steps=2, batch_size=64, seed=0)
    steps, later = pretrain(model, DIGITS.x_pool[:256], steps=40, batch_size=64, seed=1)
    assert steps == 40
    after = model.state_dict()
    assert torch.equal(before["head.weight"], after["head.weight"])
    assert not torch.equal(before["features.1.weight"], after["features.1.weight"])
    assert later < first
    assert not model.training


def test_pretraining_stops_when_asked_and_refuses_a_pool_of_one():
    model = build_model("mlp", DIGITS.input_shape, DIGITS.num_classes)
    steps, loss = pretrain(model, DIGITS.x_pool[:10], steps=5, should_stop=lambda: True)
    assert steps == 0 and np.isnan(loss)
    with pytest.raises(ValueError, match="two items"):
        pretrain(model, DIGITS.x_pool[:1], steps=1)


def test_pretraining_a_picture_model_and_a_text_model():
    cnn = build_model("cnn", DIGITS.input_shape, DIGITS.num_classes)
    before = cnn.features[0].weight.detach().clone()
    pretrain(cnn, DIGITS.x_pool[:32], steps=2, batch_size=16)
    assert not torch.equal(before, cnn.features[0].weight)
    model = build_model("text", (20,), 3)
    x = np.random.default_rng(0).integers(1, 5000, (40, 20))
    before = model.features[0].weight.detach().clone()
    pretrain(model, x, steps=3, batch_size=16)
    assert not torch.equal(before, model.features[0].weight)


def test_a_trainer_publishes_its_encoder_first_and_every_trainers_first_model_starts_from_it(grpc_coordinator,
                                                                                            monkeypatch):
    from aal_rpc.client import CoordinatorClient
    from aal_rpc.serde import weights_from_bytes
    from aal_rpc.trainer import Trainer, TrainerConfig
    from aal_rpc.trainer import loop as trainer_module
    from aal_rpc.types import is_encoder
    from tests.test_loops import DIGITS as POOL, label_all, queue_random

    address, _ = grpc_coordinator
    starts = []
    train = trainer_module.train

    def recording_train(model, x, y, **kwargs):
        starts.append({k: v.clone() for k, v in model.state_dict().items()})
        return train(model, x, y, **kwargs)

    monkeypatch.setattr(trainer_module, "train", recording_train)
    with CoordinatorClient(address) as client:
        queue_random(client, 10)
        label_all(address, POOL, 10)
        config = TrainerConfig(server_id="s", pretrain_steps=3, min_labels=10, epochs=1, min_steps=0)
        Trainer(client, config, dataset=POOL).run(max_rounds=1)
        encoder, first = client.models()
        assert is_encoder(encoder) and encoder.metrics["pretrain_steps"] == 3 and encoder.server_id == "s"
        assert first.num_labels == 10 and not is_encoder(first)
        _, data = client.download_model(encoder.version)
        published = weights_from_bytes(data)
        assert all(torch.equal(published[k], starts[0][k]) for k in published)  # the first model began there

        other = Trainer(client, TrainerConfig(server_id="t", epochs=1, min_steps=0), dataset=POOL)
        model = other.new_model()  # a trainer that did not pretrain starts from the published encoder too
        assert all(torch.equal(published[k], model.state_dict()[k]) for k in published)
