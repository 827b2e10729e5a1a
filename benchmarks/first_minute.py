"""Issue 21, item 1 and 2: active from the first minute. The same run at people's pace, before and after.

`aal-experiment` on `digits28` (28x28 digits, cnn) with the demo's cluster (2 servers, 3 workers, 8 simulated
annotators) at a person's pace (1 s a label on average) to 400 labels, in three set-ups, each over the same seeds:

- `full rounds, random cold start`: every round the full recipe (600 steps), random picks before the first model
  (how the system ran before issue 21);
- `paced rounds, random cold start`: rounds as long as the pace of labeling allows (trainer/pacing.py): the
  defaults;
- `paced rounds, typical cold start`: and TypiClust picks on the untrained network's embedding before the first
  model (`aal-worker --cold-start typical`).

Reported for each: seconds from the run's start to the first model (processes start, one batch is labeled, the
first round trains), the share of labels a model chose (not random or typical cold-start picks, not the audit),
the share of typical picks, and the accuracy of models retrained on the run's labels against as many random
labels (`retrained_accuracy`, `random_accuracy`: the labels' worth, the run's luck mostly taken out), with 95%
intervals over the seeds (`measures.mean_ci`).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace

from aal_rpc.experiment import ExperimentConfig, run_experiment
from benchmarks.common import seeds_stat, stat_pm

SETUPS = {
    "full rounds, random cold start": dict(paced=False, cold_start="random"),
    "paced rounds, random cold start": dict(paced=True, cold_start="random"),
    "paced rounds, typical cold start": dict(paced=True, cold_start="typical"),
}


@dataclass(frozen=True)
class Size:
    base: ExperimentConfig
    seeds: tuple[int, ...]
    setups: tuple[str, ...]


FULL = Size(ExperimentConfig(dataset="digits28", model="cnn", annotator_delay=1.0, budget=400, eval_repeats=1),
            seeds=(3, 4, 5), setups=tuple(SETUPS))
SMOKE = Size(ExperimentConfig(dataset="digits", model="mlp", servers=1, workers=1, annotators=2, budget=12,
                              batch_size=4, annotator_delay=0.05, epochs=2, min_steps=20, eval_repeats=0),
             seeds=(0,), setups=("paced rounds, typical cold start",))


def one_run(cfg: ExperimentConfig) -> dict:
    summary = run_experiment(cfg, progress=False)
    curve = summary["curve"]
    cold, typical = summary["cold_start_share"] or 0.0, summary.get("typical_share") or 0.0
    audit = summary["labels_by_strategy"].get("audit", 0) / max(1, summary["labels"])
    return {
        "first_model_seconds": curve[0]["seconds"] if curve else None,
        "chosen_by_model_share": max(0.0, 1.0 - cold - audit),
        "typical_share": typical,
        "retrained_accuracy": summary.get("retrained_accuracy"),
        "random_accuracy": summary.get("random_accuracy"),
        "model_versions": summary["model_versions"],
    }


def run(*, smoke: bool = False) -> dict:
    s = SMOKE if smoke else FULL
    rows = []
    with tempfile.TemporaryDirectory(prefix="aal-first-minute-") as tmp:
        for name in s.setups:
            runs = [one_run(replace(s.base, seed=seed, out=f"{tmp}/{name.replace(' ', '_')}-{seed}", **SETUPS[name]))
                    for seed in s.seeds]
            row = {"setup": name, "seeds": list(s.seeds), "runs": runs}
            for key in ("first_model_seconds", "chosen_by_model_share", "typical_share", "retrained_accuracy",
                        "random_accuracy"):
                values = [r[key] for r in runs if r[key] is not None]
                row[key] = seeds_stat(values)
            rows.append(row)
    return {"dataset": s.base.dataset, "model": s.base.model, "budget": s.base.budget,
            "annotator_delay": s.base.annotator_delay, "rows": rows}


def rows(r: dict) -> list[str]:
    """The lines of the benchmark table."""
    return [f"| 17 | {r['dataset']} ({r['model']}) at {r['annotator_delay']:g} s a label to {r['budget']} labels, "
            f"{len(row['seeds'])} seed{'s' if len(row['seeds']) != 1 else ''}: {row['setup']} | "
            f"first model at {stat_pm(row['first_model_seconds'], digits=1)} s, "
            f"{stat_pm(row['chosen_by_model_share'], 100, 0)}% chosen by a model "
            f"({stat_pm(row['typical_share'], 100, 0)}% typical) | retrained {stat_pm(row['retrained_accuracy'])} | "
            f"random labels {stat_pm(row['random_accuracy'])} | – | – |" for row in r["rows"]]


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=1))
