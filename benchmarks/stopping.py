"""Issue 23, item 2: when does the stopping signal fire, against when accuracy stopped improving?

Reads finished `aal-experiment` runs (their coordinator's data dir, `OUT/data`): every published model, in version
order, with its held-out accuracy and the kappa of its stop-set predictions with the version before it (what the
trainers report). For each run it replays measures.stopping_signal over the versions as they were published and
reports the first version at which it suggested stopping (its labels and accuracy then), and where accuracy
stopped improving: the fewest labels of a model within PLATEAU of the run's best accuracy. The runs have no audit
labels (aal-experiment sets no audit share), so the flat-curve half of the rule reads held-out accuracy.

    python -m benchmarks.stopping runs/digits-s0 runs/digits-s1 ...
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from aal_rpc.coordinator.sqlite_store import SqliteStore
from aal_rpc.measures import STOP_SET_AGREEMENT, stopping_signal

PLATEAU = 0.01  # accuracy within this of the run's best counts as having stopped improving


def published_models(run: Path):
    store = SqliteStore(run / "data")
    try:
        return sorted(store.load().models, key=lambda m: m.version)
    finally:
        store.close()


def measure(run: Path) -> dict:
    models = [m for m in published_models(run) if m.num_labels > 0]
    # in the order they were published: what the lead would have seen as the run went
    fired = next((m for i, m in enumerate(models) if stopping_signal(models[:i + 1])["suggested"]), None)
    best = max(m.metrics["accuracy"] for m in models)
    plateau = min((m for m in models if m.metrics["accuracy"] >= best - PLATEAU), key=lambda m: m.num_labels)
    kappas = [round(m.metrics[STOP_SET_AGREEMENT], 4) for m in models if STOP_SET_AGREEMENT in m.metrics]
    return {
        "run": str(run), "models": len(models), "budget": models[-1].num_labels,
        "final_accuracy": models[-1].metrics["accuracy"], "best_accuracy": best,
        "plateau_labels": plateau.num_labels, "plateau_accuracy": plateau.metrics["accuracy"],
        "fired_labels": fired.num_labels if fired else None,
        "fired_accuracy": fired.metrics["accuracy"] if fired else None,
        "fired_reason": stopping_signal(models[:models.index(fired) + 1])["reason"] if fired else
        stopping_signal(models)["reason"],
        "kappas": kappas,
        "curve": sorted((m.num_labels, round(m.metrics["accuracy"], 4)) for m in models),
    }


def main(runs: list[str]) -> None:
    for run in runs:
        r = measure(Path(run))
        print(json.dumps(r))
        fired = (f"fired at {r['fired_labels']} labels (accuracy {r['fired_accuracy']:.4f})" if r["fired_labels"]
                 else "never fired")
        print(f"# {run}: {fired}; accuracy within {PLATEAU} of its best ({r['best_accuracy']:.4f}) from "
              f"{r['plateau_labels']} labels; {r['final_accuracy']:.4f} at {r['budget']}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
