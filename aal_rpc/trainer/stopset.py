"""The stop set (Bloodgood & Vijay-Shanker 2009): a fixed sample of the pool's items that every trainer draws alike
(seeded), and on which each new model's predictions are compared with those of the latest model published before
it (types.ModelInfo.freshness: trained on the most labels). The kappa goes into the model's metrics (measures.STOP_SET_AGREEMENT), where measures.stopping_signal reads
it. The predecessor's predictions are this trainer's own when it published that version, else its weights are
downloaded once and run on the stop set.
"""

from __future__ import annotations

import logging
from collections import OrderedDict

import grpc
import numpy as np

from aal_rpc.client import CoordinatorClient
from aal_rpc.data import Dataset
from aal_rpc.measures import POOL_ITEMS, STOP_SET_AGREEMENT, STOP_SET_PREVIOUS, STOP_SET_SIZE, cohens_kappa
from aal_rpc.models import Classifier, build_model
from aal_rpc.serde import weights_from_bytes
from aal_rpc.training import predict_proba
from aal_rpc.types import Task

log = logging.getLogger(__name__)

STOP_SET_SEED = 20090601  # the same sample for every trainer of a task
KEPT = 4  # versions whose predictions are kept


def stop_set_rows(pool_size: int, size: int = STOP_SET_SIZE, seed: int = STOP_SET_SEED) -> np.ndarray:
    """The pool rows of the stop set, in pool order: `size` of them drawn with `seed` (all rows of a smaller pool)."""
    if pool_size <= size:
        return np.arange(pool_size)
    return np.sort(np.random.default_rng(seed).choice(pool_size, size, replace=False))


class StopSet:
    def __init__(self, client: CoordinatorClient, task: Task, dataset: Dataset, *, device: str = "cpu"):
        self._client = client
        self._task = task
        self._device = device
        self._pool_items = len(dataset.x_pool)
        self._x = dataset.x_pool[stop_set_rows(self._pool_items)]
        self._predictions: OrderedDict[int, np.ndarray] = OrderedDict()  # version -> its predictions
        self._last: np.ndarray | None = None  # the predictions of the model measured last, till it is published

    def predict(self, model: Classifier) -> np.ndarray:
        probs, _ = predict_proba(model, self._x, device=self._device)
        return probs.argmax(axis=1)

    def measure(self, model: Classifier) -> dict[str, float]:
        """The metrics a new model carries: the pool's size (measures.POOL_ITEMS) and, once a model trained on labels
        is published, the kappa of its stop-set predictions with the latest one's (STOP_SET_AGREEMENT, with its
        version as STOP_SET_PREVIOUS)."""
        metrics = {POOL_ITEMS: float(self._pool_items)}
        if not len(self._x):
            return metrics
        self._last = self.predict(model)
        previous = max((m for m in self._client.models() if m.num_labels > 0), key=lambda m: m.freshness(),
                       default=None)
        if previous is None:
            return metrics
        theirs = self._predictions_of(previous.version)
        if theirs is not None:
            metrics[STOP_SET_AGREEMENT] = cohens_kappa(self._last, theirs)
            metrics[STOP_SET_PREVIOUS] = float(previous.version)
        return metrics

    def published(self, version: int) -> None:
        """The model measured last was published as `version`: keep its predictions for the next one."""
        if self._last is not None:
            self._keep(version, self._last)
            self._last = None

    def _keep(self, version: int, predictions: np.ndarray) -> None:
        self._predictions[version] = predictions
        while len(self._predictions) > KEPT:
            self._predictions.popitem(last=False)

    def _predictions_of(self, version: int) -> np.ndarray | None:
        if version in self._predictions:
            return self._predictions[version]
        try:
            _, data = self._client.download_model(version)
        except grpc.RpcError as exc:  # pruned meanwhile, say: this model goes without an agreement
            log.info("no stop-set agreement: version %d could not be downloaded (%s)", version, exc.code())
            return None
        model = build_model(self._task.architecture, self._task.input_shape, self._task.num_classes)
        model.load_state_dict(weights_from_bytes(data))
        predictions = self.predict(model)
        self._keep(version, predictions)
        return predictions
