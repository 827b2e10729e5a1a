"""Figures of an experiment, drawn with matplotlib's file-only Agg backend."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_accuracy(curve: list[dict], path: Path, *, title: str, baseline: list[dict] | None = None) -> None:
    """Each server's models' accuracy against labels; `baseline` ({labels, accuracy} points) drawn dashed as
    "random sampling"."""
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    servers = sorted({p["server_id"] for p in curve})
    for s in servers:
        pts = sorted((p["labels"], p["accuracy"]) for p in curve if p["server_id"] == s and p["accuracy"] is not None)
        if pts:
            ax.plot(*zip(*pts), marker="o", ms=3, lw=1, label=s)
    if baseline:
        ax.plot([p["labels"] for p in baseline], [p["accuracy"] for p in baseline], ls="--", marker="s", ms=3,
                lw=1, color="gray", label="random sampling (retrained)")
    ax.set_xlabel("labels")
    ax.set_ylabel("held-out accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    if servers or baseline:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_waits(waits: list[float], path: Path, *, title: str) -> None:
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    w = np.asarray(waits, dtype=float) * 1000.0
    if len(w):
        bins = np.logspace(np.log10(max(w.min(), 1e-2)), np.log10(max(w.max(), 1e-1)) + 1e-9, 40)
        ax.hist(np.clip(w, bins[0], None), bins=bins.tolist(), color="tab:blue", alpha=0.8)
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        for q, style in ((50, "--"), (99, ":")):
            ax.axvline(float(np.percentile(w, q)), color="k", ls=style, lw=1,
                       label=f"p{q} {np.percentile(w, q):.2f} ms")
        ax.legend(fontsize=8)
    ax.set_xlabel("wait from submitting a label to holding the next query (ms)")
    ax.set_ylabel("count")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
