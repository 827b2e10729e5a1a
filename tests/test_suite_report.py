"""The suite's plan, measures and report, on synthetic results (no processes): every study is planned with the
servers' recipe, every interval is a 95% t-interval, every figure and table is written."""

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from scipy import stats

from aal_rpc.cli import experiment, server
from aal_rpc.measures import (accuracy_at, cold_start_share, curve_average, labels_per_model,
                                         labels_to_reach, mean_ci, t_quantile)
from aal_rpc.experiment.report import target_accuracy, write_report
from aal_rpc.experiment.suite import ARMS, SCALES, STRATEGY_METHODS, plan


def fake_curve(budget, top):
    return [{"labels": n, "accuracy": top * n / budget, "seconds": float(n), "version": i + 1, "server_id": "s"}
            for i, n in enumerate(range(10, budget + 1, 10))]


def test_curve_metrics():
    curve = fake_curve(100, 0.9)
    assert accuracy_at(curve, 5) == 0.0
    assert accuracy_at(curve, 55) == np.float64(0.9 * 50 / 100)
    assert labels_to_reach(curve, 0.45) == 50 and labels_to_reach(curve, 0.95) is None
    assert abs(curve_average(curve, 100) - np.mean([0.9 * k / 10 for k in range(1, 11)])) < 1e-9
    assert labels_per_model(100, 10) == 10.0 and labels_per_model(7, 0) is None
    assert cold_start_share([0, 0, 3, 5]) == 0.5 and cold_start_share([]) is None


@pytest.mark.parametrize("df", [1, 2, 4, 9, 30])
def test_t_quantile_matches_scipy(df):
    assert t_quantile(0.975, df) == pytest.approx(stats.t.ppf(0.975, df), rel=1e-6)


def test_mean_ci_is_the_95_percent_t_interval():
    v = [0.91, 0.93, 0.90, 0.95, 0.92]
    m, h, n = mean_ci([*v, None])  # a run without the figure is left out
    lo, hi = stats.t.interval(0.95, len(v) - 1, loc=np.mean(v), scale=stats.sem(v))
    assert n == 5 and m == pytest.approx(np.mean(v)) and h == pytest.approx((hi - lo) / 2, rel=1e-6)
    assert mean_ci([0.9])[0] == 0.9 and np.isnan(mean_ci([0.9])[1])
    assert mean_ci([])[2] == 0


def test_suite_trains_with_the_servers_default_recipe(tmp_path):
    defaults = {p.name: p.default for p in server.main.params}
    for r in plan(SCALES["small"], seeds=1, out=tmp_path):
        assert (r.config.epochs, r.config.min_steps) == (defaults["epochs"], defaults["min_steps"]), r.run_id
        assert r.config.warm_start == defaults["warm_start"]


def test_plan_covers_every_study_and_repeats_seeds(tmp_path):
    sc = SCALES["small"]
    runs = plan(sc, seeds=2, out=tmp_path)
    assert {r.study for r in runs} == {"a", "c", "d", "e", "f", "g"}
    assert len({r.run_id for r in runs}) == len(runs)
    a = [r for r in runs if r.study == "a"]
    assert len(a) == 2 * 3 * 3 * 2 and {r.config.mode for r in a} == {"sync", "async"}
    c = [r for r in runs if r.study == "c" and r.key["method"] == "aal"]
    assert {r.config.servers for r in c} == {1, 2, 4} and c[0].config.assign == "random"
    assert c[0].config.strategies == ["entropy", "least_confidence", "margin"]
    assert {r.config.strategies[0] for r in runs if r.study == "d"} == {"cluster_margin", "margin", "random"}
    # (f): every regime in both modes, with at least regime_seeds seeds whatever --seeds says
    f = [r for r in runs if r.study == "f"]
    delays = dict(sc.regimes)
    assert {(r.key["regime"], r.config.annotator_delay) for r in f} == set(delays.items())
    assert {r.config.mode for r in f} == {"sync", "async"} and {r.config.servers for r in f} == {1}
    assert len(f) == len(delays) * 2 * sc.regime_seeds == len({r.run_id for r in f})
    assert {r.key["seed"] for r in f} == set(range(max(2, sc.regime_seeds)))
    # (g): every strategy at one pace of (f), async, the AAL mix one worker each
    g = [r for r in runs if r.study == "g"]
    assert {r.key["method"] for r in g} == set(STRATEGY_METHODS) and {r.key["seed"] for r in g} == {0, 1}
    assert {(r.config.mode, r.config.annotator_delay, r.config.budget) for r in g} == {
        ("async", delays[sc.strategy_regime], sc.regime_budget)}
    assert [r for r in g if r.key["method"] == "aal"][0].config.worker_strategies() == [
        "entropy", "least_confidence", "margin"]
    assert {r.key["seed"] for r in runs if r.study not in "fg"} == {0, 1}
    # a chosen subset plans that subset only
    assert {r.study for r in plan(sc, seeds=2, out=tmp_path, studies=("f",))} == {"f"}
    assert not [r for r in plan(SCALES["paper"], seeds=1, out=tmp_path) if r.study in "fg"]


def fake_result(r, *, seed_bonus=0.01):
    budget = r.config.budget
    top = 0.9 + seed_bonus * r.key["seed"] + (0.02 if r.config.mode == "sync" else 0.0)
    if r.key.get("method") == "random":
        top = 0.9
    if r.key.get("method") == "entropy":
        top = 0.5  # never reaches the target
    return {"study": r.study, **r.key, "final_accuracy": top, "retrained_accuracy": top - 0.005,
            "curve": fake_curve(budget, top), "wait_mean": 0.5 if r.config.mode == "sync" else 0.002,
            "wait_p99": 1.0, "labels": budget, "labels_by_strategy": {},
            "labels_per_model": float(r.config.batch_size) if r.config.mode == "sync" else 40.0,
            "cold_start_share": 1.0 if r.key.get("regime") == "faster" and r.config.mode == "async" else 0.125,
            "annotation_seconds": 10.0, "seconds": 1.0}


def test_report_writes_tables_and_figures(tmp_path):
    sc = SCALES["small"]
    results = [fake_result(r) for r in plan(sc, seeds=2, out=tmp_path)]
    doc = {"scale": "small", "scale_config": {**sc.__dict__, "batch_sizes": list(sc.batch_sizes),
                                              "cm_batch_sizes": list(sc.cm_batch_sizes),
                                              "regimes": [list(x) for x in sc.regimes]},
           "seeds": 2, "results": results, "seconds": 60.0, "training": {"epochs": 40, "min_steps": 600,
                                                                         "warm_start": False}}
    notes = tmp_path / "notes.md"
    notes.write_text("Our reading.")
    md = tmp_path / "docs" / "RESULTS.md"
    write_report(doc, out_md=md, figures_dir=tmp_path / "docs" / "figures", notes=notes)
    text = md.read_text()
    for heading in ("(a)", "(b)", "(c)", "(d)", "(e)", "(f)", "(g)", "Reading"):
        assert f"## {heading}" in text
    assert "40 epochs and at least 600 optimizer steps a round, from scratch" in text
    assert "250×" in text  # 0.5 s / 2 ms
    # (f): 5 seeds; sync = 0.92 + 0.01 seed, async = 0.90 + 0.01 seed: a paired gap of -0.02 with no spread, so
    # the interval is 0 wide
    assert "| slower | 6 | sync | 5 | 10.0 ± 0.0 | 12 ± 0 % | 10.0 ± 0.0 | 500.0 ± 0.0 |" in text
    assert "| faster | 0.02 | async | 5 | 40.0 ± 0.0 | 100 ± 0 % |" in text
    assert "| 5 | -0.020 ± 0.000 | -0.020 ± 0.000 |" in text
    # (g): the target is random's mean final accuracy, rounded down; entropy never reaches it
    assert target_accuracy(results[:0] + [x for x in results if x["study"] == "g"]) == 0.9
    assert "**Target: 0.90**" in text
    assert "| entropy | 0/2 | not reached |" in text
    assert "| random | 2/2 | 80 ± 0 |" in text
    assert "| 25 | margin | 2/2 | 200 ± 0 |" in text  # (d): the same rule as (g)
    assert "0.819 / 0.832 / 0.841" in text  # the paper's Table 1 beside ours
    for png in ("a_sync_vs_async", "b_wait", "d_cluster_margin", "e_curves", "f_regimes", "g_labels_to_target"):
        assert f"figures/{png}.png" in text
        assert Image.open(tmp_path / "docs" / "figures" / f"{png}.png").size[0] > 300


def test_report_of_a_subset_has_only_its_sections(tmp_path):
    sc = SCALES["small"]
    results = [fake_result(r) for r in plan(sc, seeds=2, out=tmp_path, studies=("g",))]
    doc = {"scale": "small", "scale_config": {**sc.__dict__, "regimes": [list(x) for x in sc.regimes]},
           "seeds": 2, "studies": ["g"], "results": results, "seconds": 1.0}
    md = tmp_path / "RESULTS.md"
    write_report(doc, out_md=md, figures_dir=tmp_path / "figures")
    text = md.read_text()
    assert "## (g)" in text and "--studies g`" in text
    assert not [h for h in ("(a)", "(c)", "(d)", "(e)", "(f)") if f"## {h}" in text]


def test_suite_runs_each_distinct_experiment_once(tmp_path, monkeypatch):
    import aal_rpc.experiment.suite as suite

    ran = []

    def fake_run(config, progress=False):
        ran.append(config)
        top = 0.9 if config.mode == "sync" else 0.89
        return {"final_accuracy": top, "retrained_accuracy": top,
                "wait_seconds": {"mean": 0.5 if config.mode == "sync" else 0.002, "p99": 1.0},
                "curve": fake_curve(config.budget, top), "labels": config.budget, "labels_by_strategy": {},
                "labels_per_model": 10.0, "cold_start_share": 0.1, "annotation_seconds": 5.0, "seconds": 2.0}

    monkeypatch.setattr(suite, "run_experiment", fake_run)
    runs = plan(SCALES["small"], seeds=2, out=tmp_path)
    doc = suite.run_suite("small", seeds=2, out=tmp_path, progress=lambda line: None)
    # study c's single-server runs of one strategy are study a's async runs at the first batch size, and study
    # g's margin runs are study f's async runs at g's pace
    assert len(ran) == len(runs) - 2 * 3 - 2 and len(doc["results"]) == len(runs)
    assert doc["seconds"] == 2.0 * len(ran)
    assert (tmp_path / "RESULTS.md").exists()


def test_suite_refuses_unknown_studies():
    r = CliRunner().invoke(experiment.main, ["suite", "--studies", "f,z"])
    assert r.exit_code != 0 and "unknown studies ['z']" in r.output


def armed_report(tmp_path, sc, results, *, seeds: int, studies: list[str], arms: tuple[str, ...]) -> str:
    """The report of `results` run in `arms` (as suite.json holds them), written under tmp_path; its text."""
    doc = {"scale": "small", "scale_config": {**sc.__dict__, "batch_sizes": list(sc.batch_sizes),
                                              "cm_batch_sizes": list(sc.cm_batch_sizes),
                                              "regimes": [list(x) for x in sc.regimes]},
           "seeds": seeds, "studies": studies, "arms": {a: ARMS[a] for a in arms}, "results": results,
           "seconds": 60.0}
    md = tmp_path / "RESULTS.md"
    write_report(doc, out_md=md, figures_dir=tmp_path / "figures")
    return md.read_text()


def test_arms_run_every_study_twice_and_report_what_they_change(tmp_path):
    """--arms with,without: each experiment runs with items 1-3 (paced rounds, typical cold start, semi-supervised
    rounds) and without them on the same seeds; the report pairs them and keeps each arm's sections and figures."""
    sc = SCALES["small"]
    runs = plan(sc, seeds=3, out=tmp_path, studies=("c", "e"), arms=("with", "without"))
    assert len(runs) == 2 * len(plan(sc, seeds=3, out=tmp_path, studies=("c", "e")))
    assert len({r.run_id for r in runs}) == len(runs)
    for r in runs:
        assert (r.config.paced, r.config.cold_start, r.config.semi_supervised) == (
            (True, "typical", True) if r.key["arm"] == "with" else (False, "random", False)), r.run_id
    results = []
    for r in runs:
        res = fake_result(r)
        if r.key["arm"] == "with":  # a model sooner, more of the labels chosen by it, 0.01 better
            res.update(retrained_accuracy=res["retrained_accuracy"] + 0.01, cold_start_share=0.1,
                       curve=[{**p, "seconds": 5.0} for p in res["curve"]])
        else:
            res.update(cold_start_share=0.5, curve=[{**p, "seconds": 20.0} for p in res["curve"]])
        results.append(res)
    text = armed_report(tmp_path, sc, results, seeds=3, studies=["c", "e"], arms=("with", "without"))
    assert "## What items 1–3 change" in text and "`semi_supervised=True`" in text
    # (c): 4 methods x 3 servers x 3 seeds pairs; 90% against 50% chosen by a model, first model 5 s against 20 s
    assert "| (c) | with | 36 | 90% / 50% | 5.0 ± 0.0 / 20.0 ± 0.0 | 0.000 ± 0.000 | 0.010 ± 0.000 |" in text
    assert text.count("## (c) More servers") == 2
    for arm in ("with", "without"):
        assert f"figures/{arm}/e_curves.png" in text and (tmp_path / "figures" / arm / "e_curves.png").exists()


def test_the_ablation_arms_each_add_one_item_to_without_and_where_keeps_the_runs_asked_for(tmp_path):
    """--arms without,paced,typical,semi: each of items 1-3 alone on top of "without"; --where method=aal,servers=1
    keeps only those runs of study (c); the report compares each arm with "without"."""
    from aal_rpc.experiment.suite import matching

    sc = SCALES["small"]
    runs = plan(sc, seeds=2, out=tmp_path, studies=("c",), arms=("without", "paced", "typical", "pretrained", "semi"))
    items = {r.key["arm"]: (r.config.paced, r.config.cold_start, r.config.pretrain_steps > 0, r.config.semi_supervised)
             for r in runs}
    assert items == {"without": (False, "random", False, False), "paced": (True, "random", False, False),
                     "typical": (False, "typical", False, False), "pretrained": (False, "typical", True, False),
                     "semi": (False, "random", False, True)}
    planned = matching(plan(sc, seeds=2, out=tmp_path, studies=("c",), arms=("without", "paced")),
                       {"method": "aal", "servers": "1"})
    assert sorted((r.key["arm"], r.key["seed"]) for r in planned) == [
        ("paced", 0), ("paced", 1), ("without", 0), ("without", 1)]
    assert all(r.key["method"] == "aal" and r.key["servers"] == 1 for r in planned)
    results = []
    for r in planned:
        res = fake_result(r)
        if r.key["arm"] == "paced":
            res.update(retrained_accuracy=res["retrained_accuracy"] - 0.02)
        results.append(res)
    text = armed_report(tmp_path, sc, results, seeds=2, studies=["c"], arms=("without", "paced"))
    assert "| (c) | paced | 2 |" in text and "| -0.020 ± 0.000 |" in text
    assert "Paced rounds alone (item 1)" in text
