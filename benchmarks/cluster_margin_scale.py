"""Cluster-Margin at scale: clustering time, per-round selection time and peak memory for synthetic shards.

Each size runs in a fresh subprocess so its peak resident memory (ru_maxrss) is its own.
    python -m benchmarks.cluster_margin_scale --sizes 10000,50000,100000 --dim 512
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time

import click
import numpy as np

CENTERS = 200  # synthetic embeddings: a mixture of this many Gaussian clusters


def measure(n: int, dim: int, batch: int, seed: int = 0) -> dict:
    from aal_rpc.strategies.cluster_margin import ClusterMarginStrategy

    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=4.0, size=(CENTERS, dim)).astype(np.float32)
    emb = centers[rng.integers(0, CENTERS, n)] + rng.normal(size=(n, dim)).astype(np.float32)
    logits = rng.normal(size=(n, 10))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    ids = np.arange(n).astype(str)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    s = ClusterMarginStrategy(seed=seed)
    t0 = time.perf_counter()
    s.prepare(embeddings=emb, item_ids=ids, model_version=1)
    cluster_s = time.perf_counter() - t0
    rounds = []
    for _ in range(3):
        t0 = time.perf_counter()
        s.select(probs, batch, embeddings=emb, item_ids=ids)
        rounds.append(time.perf_counter() - t0)
    return {"items": n, "dim": dim, "batch": batch, "clusters": len(set(s.clusters.values())),
            "cluster_seconds": round(cluster_s, 3), "select_seconds": round(float(np.median(rounds)), 4),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "baseline_rss_mb": round(base_rss / 1024, 1)}


def run(sizes: list[int], dim: int, batch: int) -> list[dict]:
    out = []
    for n in sizes:
        proc = subprocess.run([sys.executable, "-m", "benchmarks.cluster_margin_scale", "--one", str(n), "--dim",
                               str(dim), "--batch", str(batch)], check=True, capture_output=True, text=True)
        out.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return out


@click.command()
@click.option("--sizes", default="10000,50000,100000", show_default=True)
@click.option("--dim", type=int, default=512, show_default=True)
@click.option("--batch", type=int, default=1000, show_default=True)
@click.option("--one", type=int, default=None, hidden=True)
def main(sizes, dim, batch, one):
    if one is not None:
        click.echo(json.dumps(measure(one, dim, batch)))
        return
    for row in run([int(s) for s in sizes.split(",")], dim, batch):
        click.echo(json.dumps(row))


if __name__ == "__main__":
    main()
