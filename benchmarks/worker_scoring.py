"""Target 4: worker scoring. Items scored per second by a worker's full step (learn of the model, download
it, pull the shard's state, score every free item, select, submit) against pure in-process torch
inference of the same model on the same shard, measured in the same run.

The machines are shared, so each side's figure is its least disturbed repeat (the minimum time, as timeit
reports). The medians' ratio, and the ratio of the CPU time this thread spent (what the worker's own code adds,
whatever else runs), are reported beside it.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from aal_rpc.client import CoordinatorClient
from aal_rpc.data import load_dataset
from aal_rpc.experiment.processes import ProcessGroup
from aal_rpc.models import build_model
from aal_rpc.serde import weights_to_bytes
from aal_rpc.training import predict_proba
from aal_rpc.selector import Selector, WorkerConfig
from benchmarks.common import synthetic_npz


def run(*, items: int = 200_000, repeats: int = 5, strategy: str = "entropy", smoke: bool = False) -> dict:
    items = 5_000 if smoke else items
    torch.set_num_threads(1)  # as the worker processes run
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        name = synthetic_npz(tmp / "data.npz", items, dim=64)
        dataset = load_dataset(name)
        procs = ProcessGroup(tmp / "logs")
        try:
            _, address = procs.start_coordinator("coordinator", ["--data-dir", tmp / "coord", "--dataset", name,
                                                                 "--model", "mlp", "--pool-capacity", "100000"])
            model = build_model("mlp", dataset.input_shape, dataset.num_classes)
            with CoordinatorClient(address) as client:
                step_s, infer_s, step_cpu, infer_cpu = [], [], [], []
                for r in range(repeats):
                    client.upload_model(weights_to_bytes(model.state_dict()), server_id="bench", trained_seq=0,
                                        num_labels=0, architecture="mlp",
                                        metrics={"repeat": float(r)})  # a version each (not a retry); newest wins a tie
                    w = Selector(client, WorkerConfig(worker_id=f"w{r}", strategy=strategy, batch_size=256,
                                                      poll_seconds=0.05), dataset=dataset)
                    x = dataset.x_pool[w.indices]
                    t0, c0 = time.perf_counter(), time.thread_time()
                    predict_proba(model, x)
                    infer_s.append(time.perf_counter() - t0)
                    infer_cpu.append(time.thread_time() - c0)
                    t0, c0 = time.perf_counter(), time.thread_time()
                    w.step()
                    step_s.append(time.perf_counter() - t0)
                    step_cpu.append(time.thread_time() - c0)
        finally:
            procs.stop_all()
    worker_rate = items / min(step_s)
    pure_rate = items / min(infer_s)
    ratio = worker_rate / pure_rate
    return {"items": items, "strategy": strategy, "repeats": repeats, "worker_items_per_second": worker_rate,
            "inference_items_per_second": pure_rate, "ratio": ratio,
            "median_ratio": float(np.median(infer_s) / np.median(step_s)),
            "thread_cpu_ratio": min(infer_cpu) / min(step_cpu), "target": ">= 0.9", "pass": ratio >= 0.9}


if __name__ == "__main__":
    import json
    print(json.dumps(run(), indent=1))
