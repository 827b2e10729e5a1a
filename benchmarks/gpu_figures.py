"""Issue 14: what a round costs on the networks a GPU deployment runs, on whatever device is here.

For `resnet18` and `vgg16` on N CIFAR-sized (3x32x32) synthetic images, N = 50,000 on a CUDA GPU and 2,000 on
a CPU: one epoch of `aal_rpc.training.train` with the recipe (mixed precision and pinned memory on CUDA), timed,
and the recipe's round (`RECIPE.epochs` epochs) extrapolated from it; a worker scoring the N items
(`predict_proba` with embeddings, as Cluster-Margin asks); the bytes of each model's weights as the registry
stores them; and a model pull by 8 workers at once: 8 `CoordinatorClient` downloads of the published weights
from an in-process coordinator. Random images: the figures are throughputs, not accuracies.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from aal_rpc.client import CoordinatorClient
from aal_rpc.coordinator.app import create_coordinator_server
from aal_rpc.models import build_model
from aal_rpc.serde import weights_to_bytes
from aal_rpc.training import RECIPE, autocast_dtype, predict_proba, train
from aal_rpc.types import Task

ARCHITECTURES = ("resnet18", "vgg16")
SHAPE = (3, 32, 32)
CLASSES = 10
GPU_ITEMS = 50_000
CPU_ITEMS = 2_000
WORKERS = 8
WARMUP_ITEMS = 64  # one short round first: CUDA context, cuDNN's algorithm search, the allocator's first blocks


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def synthetic_images(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random((n, *SHAPE), dtype=np.float32), rng.integers(0, CLASSES, n)


def time_epoch(arch: str, x: np.ndarray, y: np.ndarray, device: str) -> tuple[float, torch.nn.Module]:
    """Seconds of one epoch of the recipe's training (its batch, schedule and augmentation) on (x, y)."""
    torch.manual_seed(0)
    model = build_model(arch, SHAPE, CLASSES)
    settings = {**RECIPE.kwargs(), "epochs": 1, "min_steps": 0}
    train(model, x[:WARMUP_ITEMS], y[:WARMUP_ITEMS], **settings, device=device)
    _sync(device)
    t0 = time.perf_counter()
    train(model, x, y, **settings, device=device)
    _sync(device)
    return time.perf_counter() - t0, model


def time_scoring(model: torch.nn.Module, x: np.ndarray, device: str) -> float:
    """Seconds for a worker's scoring pass: probabilities and embeddings of every item, back on the host."""
    predict_proba(model, x[:WARMUP_ITEMS], device=device, with_embeddings=True)
    t0 = time.perf_counter()
    probs, emb = predict_proba(model, x, device=device, with_embeddings=True)
    assert probs.shape == (len(x), CLASSES) and emb.shape[0] == len(x)
    return time.perf_counter() - t0


def time_pull(arch: str, data: bytes, workers: int) -> float:
    """Seconds until `workers` clients, starting together, each hold the published weights (an in-process
    coordinator on 127.0.0.1, each client its own channel)."""
    task = Task(dataset="synthetic", num_classes=CLASSES, class_names=tuple(str(i) for i in range(CLASSES)),
                input_shape=SHAPE, architecture=arch)
    with tempfile.TemporaryDirectory() as tmp:
        server = create_coordinator_server("127.0.0.1:0", Path(tmp), task)
        try:
            address = f"127.0.0.1:{server.port}"
            with CoordinatorClient(address) as publisher:
                version = publisher.upload_model(data, server_id="bench", trained_seq=0, num_labels=0,
                                                 architecture=arch, metrics={}).version
            start = threading.Barrier(workers + 1)
            got = [0] * workers

            def pull(i):
                with CoordinatorClient(address) as c:
                    c.task()  # connected before the clock starts
                    start.wait()
                    got[i] = len(c.download_model(version)[1])

            threads = [threading.Thread(target=pull, args=(i,)) for i in range(workers)]
            for t in threads:
                t.start()
            start.wait()
            t0 = time.perf_counter()
            for t in threads:
                t.join(600)
            seconds = time.perf_counter() - t0
        finally:
            server.stop(grace=0)
    if got != [len(data)] * workers:
        raise RuntimeError(f"pulled {got} bytes; expected {len(data)} each")
    return seconds


def run(*, smoke: bool = False, device: str | None = None) -> dict:
    device = device or default_device()
    gpu = torch.device(device).type == "cuda"
    items = 8 if smoke else (GPU_ITEMS if gpu else CPU_ITEMS)
    workers = 2 if smoke else WORKERS
    x, y = synthetic_images(items)
    precision = autocast_dtype(device)
    out = []
    for arch in ARCHITECTURES:
        epoch_s, model = time_epoch(arch, x, y, device)
        score_s = time_scoring(model, x, device)
        data = weights_to_bytes({k: v.cpu() for k, v in model.state_dict().items()})
        pull_s = time_pull(arch, data, workers)
        out.append({"architecture": arch, "items": items, "epoch_seconds": epoch_s,
                    "train_images_per_second": items / epoch_s,
                    "round_seconds": epoch_s * RECIPE.epochs,  # the recipe's round: its epochs (min_steps is less)
                    "score_seconds": score_s, "score_items_per_second": items / score_s,
                    "model_bytes": len(data), "pull_workers": workers, "pull_seconds": pull_s,
                    "pull_mb_per_second": workers * len(data) / pull_s / 1e6})
    name = torch.cuda.get_device_name(device) if gpu else "CPU"
    return {"device": device, "device_name": name, "precision": str(precision or torch.float32).replace("torch.", ""),
            "torch_threads": torch.get_num_threads(), "batch_size": RECIPE.batch_size, "epochs": RECIPE.epochs,
            "rows": out}


def rows(r: dict) -> list[str]:
    """Its rows of the benchmark table (benchmarks/__main__.py)."""
    where = f"{r['device_name']} ({r['device']}, {r['precision']}, {r['torch_threads']} threads)"
    out = []
    for m in r["rows"]:
        out.append(f"| 12 | {m['architecture']} on {m['items']:,} synthetic 3×32×32 images, {where}: one epoch at "
                   f"batch {r['batch_size']} / the recipe's round ({r['epochs']} epochs, extrapolated) | "
                   f"{m['epoch_seconds']:.1f} s ({m['train_images_per_second']:.0f} images/s) / "
                   f"{m['round_seconds']:.0f} s | – | – | – | – |")
        out.append(f"| 12b | {m['architecture']}: a worker scores {m['items']:,} items (probabilities and "
                   f"embeddings) | {m['score_seconds']:.2f} s ({m['score_items_per_second']:.0f} items/s) | "
                   f"– | – | – | – |")
        out.append(f"| 12c | {m['architecture']}: {m['model_bytes'] / 1e6:.1f} MB of weights, pulled by "
                   f"{m['pull_workers']} workers at once from an in-process coordinator | {m['pull_seconds']:.2f} s "
                   f"({m['pull_mb_per_second']:.0f} MB/s in all) | – | – | – | – |")
    return out


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=1))
