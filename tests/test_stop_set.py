"""Each trainer measures a new model's agreement with the version published before it on the stop set (the same
seeded sample of the pool for every trainer), and reports the pool's size: what the stopping signal and the
lead's "remaining" read."""

import threading

from aal_rpc.client import CoordinatorClient
from aal_rpc.measures import POOL_ITEMS, STOP_SET_AGREEMENT, STOP_SET_PREVIOUS, STOP_SET_SIZE, cohens_kappa
from aal_rpc.models import build_model
from aal_rpc.serde import weights_from_bytes
from aal_rpc.trainer import Trainer, TrainerConfig
from aal_rpc.trainer.stopset import stop_set_rows
from aal_rpc.training import predict_proba
from tests.conftest import wait_until
from tests.test_loops import DIGITS, label_all, queue_random


def test_the_stop_set_is_one_seeded_sample_of_the_pool():
    rows = stop_set_rows(1797)
    assert len(rows) == STOP_SET_SIZE == len(set(rows)) and (rows == stop_set_rows(1797)).all()
    assert (rows == sorted(rows)).all() and list(stop_set_rows(7)) == list(range(7))


def run_one_round(trainer):
    t = threading.Thread(target=trainer.run, kwargs={"max_rounds": 1})
    t.start()
    t.join(120)
    assert not t.is_alive()


def test_each_model_carries_its_kappa_with_the_version_before_it_on_the_stop_set(grpc_coordinator):
    address, _ = grpc_coordinator
    with CoordinatorClient(address) as client:
        queue_random(client, 40)
        label_all(address, DIGITS, 10)
        config = TrainerConfig(server_id="a", epochs=2, min_labels=10, min_growth=0, settle_seconds=0.1)
        run_one_round(Trainer(client, config, dataset=DIGITS))
        label_all(address, DIGITS, 10)
        other = Trainer(client, TrainerConfig(**{**config.__dict__, "server_id": "b"}), dataset=DIGITS)
        rounds = threading.Thread(target=other.run, kwargs={"max_rounds": 2})
        rounds.start()  # its first predecessor is another trainer's: downloaded and run on the stop set
        assert wait_until(lambda: len(client.models()) == 2, timeout=120)
        first, second = client.models()
        assert first.metrics[POOL_ITEMS] == len(DIGITS.x_pool) == second.metrics[POOL_ITEMS]
        assert STOP_SET_AGREEMENT not in first.metrics
        assert second.metrics[STOP_SET_PREVIOUS] == first.version

        def predictions(version):
            task = client.task()
            model = build_model(task.architecture, task.input_shape, task.num_classes)
            model.load_state_dict(weights_from_bytes(client.download_model(version)[1]))
            return predict_proba(model, DIGITS.x_pool[stop_set_rows(len(DIGITS.x_pool))])[0].argmax(axis=1)

        expected = cohens_kappa(predictions(second.version), predictions(first.version))
        assert abs(second.metrics[STOP_SET_AGREEMENT] - expected) < 1e-9
        label_all(address, DIGITS, 10)
        rounds.join(120)  # its second predecessor is its own: the predictions it kept
        assert not rounds.is_alive()
        third = client.models()[-1]
        assert third.metrics[STOP_SET_PREVIOUS] == second.version and -1 <= third.metrics[STOP_SET_AGREEMENT] <= 1
