"""Figures and the markdown report of an experiment suite, side by side with the paper's published numbers."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from aal_rpc.measures import accuracy_at, curve_average, labels_to_reach, mean_ci  # noqa: E402

# Table 1 of Huang et al. (IJCAI 2021): average accuracy over the curve, by method and number of servers.
PAPER_TABLE1 = {
    "Cifar-10": {"entropy": (0.819, 0.832, 0.841), "least_confidence": (0.817, 0.833, 0.845),
                 "margin": (0.818, 0.834, 0.844), "aal": (0.818, 0.833, 0.843)},
    "Cifar-100": {"entropy": (0.353, 0.362, 0.369), "least_confidence": (0.356, 0.370, 0.383),
                  "margin": (0.349, 0.357, 0.365), "aal": (0.357, 0.365, 0.371)},
    "ImageNet": {"entropy": (0.386, 0.399, 0.408), "least_confidence": (0.388, 0.397, 0.406),
                 "margin": (0.379, 0.389, 0.399), "aal": (0.394, 0.403, 0.410)},
}
SERVERS = (1, 2, 4)
METHODS = ("entropy", "least_confidence", "margin", "aal")


RETRAINED_NOTE = ("*Retrained* accuracy is the chosen labels' worth: the mean held-out accuracy of models trained afresh "
                  "on each run's final labels with the servers' recipe (`--eval-repeats`, the same seeds for a sync run "
                  "and an async run), since one training run's accuracy moves by 2–4 points between initialisations "
                  "on a few hundred labels. *Final model* is the accuracy of the model the system itself published on "
                  "the whole budget: one training run.")


def _seeds(runs: list[dict]) -> int:
    return len({r["seed"] for r in runs})


def _ci(values) -> tuple[float, float]:
    """Mean and the half-width of its 95% t-interval (nan with fewer than two values)."""
    m, h, _ = mean_ci(values)
    return m, h


def _fmt(m: float, h: float, digits: int = 3) -> str:
    if np.isnan(m):
        return "—"
    return f"{m:.{digits}f}" if np.isnan(h) else f"{m:.{digits}f} ± {h:.{digits}f}"


def _sync_vs_async(runs: list[dict]) -> tuple[tuple[float, float], tuple[float, float], float]:
    """Retrained accuracy (mean, CI) of the sync runs and of the async runs, and the final models' async − sync."""
    by_mode = {mode: [r for r in runs if r["mode"] == mode] for mode in ("sync", "async")}
    sync, asyn = (_ci(r.get("retrained_accuracy") for r in by_mode[m]) for m in ("sync", "async"))
    final_sync, final_async = (_ci(r["final_accuracy"] for r in by_mode[m])[0] for m in ("sync", "async"))
    return sync, asyn, final_async - final_sync


def _paired_gap(runs: list[dict], field: str) -> tuple[float, float, int]:
    """Async − sync of `field`, seed by seed (a sync run and an async run of one seed share their first random
    batch and their retraining seeds): mean, 95% t half-width, number of pairs."""
    by_seed: defaultdict[int, dict] = defaultdict(dict)
    for r in runs:
        by_seed[r["seed"]][r["mode"]] = r.get(field)
    return mean_ci(d["async"] - d["sync"] for d in by_seed.values()
                   if d.get("async") is not None and d.get("sync") is not None)


def _to_target(runs: list[dict], target: float | None) -> tuple[str, str]:
    """"k/n" runs whose curve reached `target`, and the labels they needed (mean ± 95% t half-width over those
    runs; "not reached" when none did). A run that never reaches it has no label count, not the budget's."""
    need = [labels_to_reach(r["curve"], target) for r in runs] if target is not None else []
    reached = [n for n in need if n is not None]
    return f"{len(reached)}/{len(runs)}", _fmt(*_ci(reached), 0) if reached else "not reached"


def _mean_curve(runs: list[dict], grid: np.ndarray) -> np.ndarray:
    """Mean over runs of the best-informed accuracy at each label count of `grid`."""
    return np.mean([[accuracy_at(r["curve"], g) for g in grid] for r in runs], axis=0)


def _label_curve_axes(ax, title: str) -> None:
    ax.set_xlabel("labels")
    ax.set_ylabel("accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title)


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _sync_async_sections(res: list[dict], sc: dict, figures_dir: Path, rel) -> list[str]:
    """(a) and (b): accuracy and annotator wait, sync vs async, by strategy and batch size."""
    lines: list[str] = []
    a = [r for r in res if r["study"] == "a"]
    if not a:
        return []
    fig, axes = plt.subplots(1, 3, figsize=(12, 4), dpi=110)
    rows_a = []
    for ax, strategy in zip(axes, ("entropy", "least_confidence", "margin")):
        for b in sc["batch_sizes"]:
            sync, asyn, final_gap = _sync_vs_async([r for r in a if r["strategy"] == strategy and r["batch"] == b])
            rows_a.append((strategy, b, sync, asyn, final_gap))
            ax.errorbar(sync[0], asyn[0], xerr=sync[1], yerr=asyn[1], fmt="o", label=f"batch {b}", capsize=3)
        lo = min(min(x[2][0], x[3][0]) for x in rows_a if x[0] == strategy) - 0.02
        ax.plot([lo, 1], [lo, 1], "k--", lw=0.8)
        ax.set_xlim(lo, 1)
        ax.set_ylim(lo, 1)
        ax.set_title(strategy)
        ax.set_xlabel("sync accuracy")
        ax.set_ylabel("async accuracy")
        ax.legend(fontsize=8)
    fig.suptitle("(a) accuracy of the chosen labels, synchronous vs asynchronous (cf. paper Figure 3)")
    _save(fig, figures_dir / "a_sync_vs_async.png")
    lines += ["## (a) Synchronous vs asynchronous accuracy (paper Figure 3)", "",
              f"![sync vs async]({rel(figures_dir / 'a_sync_vs_async.png')})", "",
              RETRAINED_NOTE, "",
              "| strategy | batch | sync accuracy | async accuracy | async − sync | final model: async − sync |",
              "|---|---|---|---|---|---|"]
    for strategy, b, sync, asyn, final_gap in rows_a:
        lines.append(f"| {strategy} | {b} | {_fmt(*sync)} | {_fmt(*asyn)} | {asyn[0] - sync[0]:+.3f} | "
                     f"{final_gap:+.3f} |")
    gap = np.mean([x[3][0] - x[2][0] for x in rows_a])
    final = np.mean([x[4] for x in rows_a])
    lines += ["", f"Mean async − sync accuracy over all {len(rows_a)} settings: **{gap:+.4f}** "
              f"(final models: {final:+.4f}).", ""]

    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    width = 0.38
    xs = np.arange(len(sc["batch_sizes"]))
    rows_b = []
    for k, mode in enumerate(("sync", "async")):
        stats = [_ci(r["wait_mean"] for r in a if r["batch"] == b and r["mode"] == mode)
                 for b in sc["batch_sizes"]]
        rows_b.append(stats)
        ax.bar(xs + (k - 0.5) * width, [s[0] * 1000 for s in stats], width, yerr=[s[1] * 1000 for s in stats],
               label=mode, capsize=3)
    ax.set_yscale("log")
    ax.set_xticks(xs, [str(b) for b in sc["batch_sizes"]])
    ax.set_xlabel("batch size")
    ax.set_ylabel("mean annotator wait (ms, log)")
    ax.set_title("(b) annotator wait (cf. paper Figure 4)")
    ax.legend()
    _save(fig, figures_dir / "b_wait.png")
    lines += ["## (b) Annotator wait, synchronous vs asynchronous (paper Figure 4)", "",
              f"![wait]({rel(figures_dir / 'b_wait.png')})", "",
              "Wait = time from submitting a label (or first asking) to holding the next query, averaged over "
              "every label; mean over the three strategies and the seeds.", "",
              "| batch | sync mean wait (ms) | async mean wait (ms) | sync / async |", "|---|---|---|---|"]
    for i, b in enumerate(sc["batch_sizes"]):
        s, y = rows_b[0][i], rows_b[1][i]
        lines.append(f"| {b} | {_fmt(s[0] * 1000, s[1] * 1000, 1)} | {_fmt(y[0] * 1000, y[1] * 1000, 2)} | "
                     f"{s[0] / y[0]:.0f}× |")
    lines.append("")
    return lines


def _servers_section(res: list[dict], sc: dict, figures_dir: Path, rel) -> list[str]:
    """(c): average accuracy over the curve with 1, 2 and 4 servers, beside the paper's Table 1."""
    lines: list[str] = []
    c = [r for r in res if r["study"] == "c"]
    if not c:
        return []
    lines += ["## (c) More servers (paper Table 1)", "",
              "Average accuracy over the curve (the accuracy of the best-informed model at 10 evenly spaced "
              "label counts, averaged), async mode.", "",
              "| method | 1 server | 2 servers | 4 servers | paper CIFAR-10 (1 / 2 / 4) |", "|---|---|---|---|---|"]
    table_c = {}
    for method in METHODS:
        cells = []
        for n in SERVERS:
            m = _ci(curve_average(r["curve"], sc["budget"]) for r in c
                          if r["method"] == method and r["servers"] == n)
            table_c[(method, n)] = m
            cells.append(_fmt(*m))
        paper = " / ".join(f"{v:.3f}" for v in PAPER_TABLE1["Cifar-10"][method])
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {paper} |")
    mono = sum(table_c[(m, 4)][0] >= table_c[(m, 1)][0] for m in METHODS)
    lines += ["", f"4 servers ≥ 1 server for {mono} of {len(METHODS)} methods (the paper: 4 of 4 on every dataset).",
              ""]
    return lines


def _cluster_margin_section(res: list[dict], sc: dict, figures_dir: Path, rel) -> list[str]:
    """(d): Cluster-Margin, margin and random in sync batch mode at growing batch sizes."""
    lines: list[str] = []
    d = [r for r in res if r["study"] == "d"]
    if not d:
        return []
    fig, axes = plt.subplots(1, len(sc["cm_batch_sizes"]), figsize=(4 * len(sc["cm_batch_sizes"]), 3.6), dpi=110)
    lines += ["## (d) Cluster-Margin at growing batch sizes (second seed)", "",
              f"Synchronous batch mode, budget {sc['cm_budget']}. Labels needed to first reach "
              f"{sc['target_accuracy']:.2f} held-out accuracy (over the runs that reached it; *reached* counts them), "
              "the final model's accuracy and the chosen labels' (retrained) accuracy.", "",
              "| batch | method | reached | labels to target | final model accuracy | retrained accuracy |",
              "|---|---|---|---|---|---|"]
    for ax, b in zip(np.atleast_1d(axes), sc["cm_batch_sizes"]):
        grid = np.linspace(b, sc["cm_budget"], 12).round().astype(int)
        for method in ("cluster_margin", "margin", "random"):
            runs = [r for r in d if r["method"] == method and r["batch"] == b]
            reached, need = _to_target(runs, sc["target_accuracy"])
            fin = _ci(r["final_accuracy"] for r in runs)
            ret = _ci(r.get("retrained_accuracy") for r in runs)
            lines.append(f"| {b} | {method} | {reached} | {need} | {_fmt(*fin)} | {_fmt(*ret)} |")
            if runs:
                ax.plot(grid, _mean_curve(runs, grid), marker="o", ms=3, label=method)
        _label_curve_axes(ax, f"batch {b}")
    fig.suptitle("(d) Cluster-Margin vs margin vs random")
    _save(fig, figures_dir / "d_cluster_margin.png")
    lines += ["", f"![cluster margin]({rel(figures_dir / 'd_cluster_margin.png')})", ""]
    return lines


def _curves_section(res: list[dict], sc: dict, figures_dir: Path, rel) -> list[str]:
    """(e): accuracy curves of every method with one server."""
    lines: list[str] = []
    e = [r for r in res if (r["study"] == "c" and r["servers"] == 1) or r["study"] == "e"]
    if not e:
        return []
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    grid = np.linspace(sc["budget"] / 10, sc["budget"], 10).round().astype(int)
    by_method = defaultdict(list)
    for r in e:
        by_method[r["method"]].append(r)
    for method, runs in sorted(by_method.items()):
        ax.plot(grid, _mean_curve(runs, grid), marker="o", ms=3, label=method)
    _label_curve_axes(ax, "(e) accuracy curves, one server (cf. paper Figure 2)")
    _save(fig, figures_dir / "e_curves.png")
    lines += ["## (e) Accuracy curves with one server (paper Figure 2)", "",
              f"![curves]({rel(figures_dir / 'e_curves.png')})", ""]
    return lines


REGIME_MEANING = {
    "slower": "annotators slower than training (people's pace): each model chooses fewer labels than a sync batch",
    "equal": "annotators about as fast as training: about one batch of labels arrives per training round",
    "faster": "annotators much faster than training: the budget is spent before the first model exists",
}


def _regimes_section(res: list[dict], sc: dict, figures_dir: Path, rel) -> list[str]:
    """(f): sync vs async in the three regimes of annotator pace against training time."""
    f = [r for r in res if r["study"] == "f"]
    if not f:
        return []
    regimes = [name for name, _ in sc["regimes"] if any(r["regime"] == name for r in f)]
    delay = dict((name, d) for name, d in sc["regimes"])
    lines = ["## (f) Three regimes: annotators slower than, as fast as, and faster than training", "",
             f"One server, {sc['workers']} workers, `{sc['regime_strategy']}`, batch {sc['regime_batch']}, "
             f"{sc['regime_annotators']} simulated annotators, budget {sc['regime_budget']} labels; the regime is "
             "the annotators' mean labeling time against this machine's training round (what each regime means "
             "is measured, not assumed: the *labels per model* column). Columns: *labels per model*, labels "
             "acknowledged per model version published (in sync mode the batch; in async mode how many labels "
             "each model chose, i.e. its staleness in labels); *chosen before any model*, the share of labels "
             "whose query was picked before the first model trained on labels existed (provenance model_version 0: "
             "at random; or a pretrained encoder's version: typical items of its embedding, shown apart as "
             "*typical*); "
             "*to spend the budget*, seconds from the first lease to the last label; *wait*, mean seconds from "
             "submitting a label to holding the next query.", "",
             RETRAINED_NOTE, "",
             "| regime | s / label | mode | seeds | labels per model | chosen before any model | to spend the budget "
             "(s) | wait (ms) | final model | retrained |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    gaps = []
    for regime in regimes:
        runs = [r for r in f if r["regime"] == regime]
        for mode in ("sync", "async"):
            m = [r for r in runs if r["mode"] == mode]
            lpm, cold, spend = (_ci(r.get(k) for r in m) for k in ("labels_per_model", "cold_start_share",
                                                                    "annotation_seconds"))
            wait = _ci(r["wait_mean"] * 1000 for r in m)
            typical = _ci(r.get("typical_share") for r in m)
            typical_cell = f" ({_fmt(typical[0] * 100, typical[1] * 100, 0)} % typical)" if typical[0] > 0 else ""
            lines.append(f"| {regime} | {delay[regime]:g} | {mode} | {_seeds(m)} | {_fmt(*lpm, 1)} | "
                         f"{_fmt(cold[0] * 100, cold[1] * 100, 0)} %{typical_cell} | {_fmt(*spend, 1)} | "
                         f"{_fmt(*wait, 1)} | "
                         f"{_fmt(*_ci(r['final_accuracy'] for r in m))} | "
                         f"{_fmt(*_ci(r.get('retrained_accuracy') for r in m))} |")
        gaps.append((regime, _paired_gap(runs, "retrained_accuracy"), _paired_gap(runs, "final_accuracy")))
    lines += ["", "Async − sync, seed by seed (mean ± 95% t-interval over the paired seeds; an interval that "
              "contains 0 is no difference this experiment can detect):", "",
              "| regime | what it is | pairs | retrained: async − sync | final model: async − sync |",
              "|---|---|---|---|---|"]
    for regime, ret, fin in gaps:
        lines.append(f"| {regime} | {REGIME_MEANING.get(regime, '')} | {ret[2]} | {_fmt(ret[0], ret[1])} | "
                     f"{_fmt(fin[0], fin[1])} |")

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), dpi=110)
    xs = np.arange(len(regimes))
    width = 0.38
    for k, mode in enumerate(("sync", "async")):
        acc = [_ci(r.get("retrained_accuracy") for r in f if r["regime"] == g and r["mode"] == mode)
               for g in regimes]
        lpms = [_ci(r.get("labels_per_model") for r in f if r["regime"] == g and r["mode"] == mode) for g in regimes]
        axes[0].bar(xs + (k - 0.5) * width, [a[0] for a in acc], width, yerr=[a[1] for a in acc], capsize=3,
                    label=mode)
        axes[1].bar(xs + (k - 0.5) * width, [x[0] for x in lpms], width, yerr=[x[1] for x in lpms], capsize=3,
                    label=mode)
    lo = min(r.get("retrained_accuracy") or 1.0 for r in f) - 0.03
    axes[0].set_ylim(max(0.0, lo), 1.0)
    axes[0].set_ylabel("retrained accuracy (95% CI)")
    axes[1].set_yscale("log")
    axes[1].yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    axes[1].yaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    axes[1].set_ylabel("labels per model version (log)")
    for ax in axes:
        ax.set_xticks(xs, regimes)
        ax.set_xlabel("annotators vs training")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle("(f) sync vs async in three regimes of annotator pace")
    _save(fig, figures_dir / "f_regimes.png")
    return lines + ["", f"![regimes]({rel(figures_dir / 'f_regimes.png')})", ""]


def target_accuracy(res: list[dict]) -> float | None:
    """Study (g)'s target: the accuracy random sampling's final models reach on average with the whole budget,
    rounded down to 0.01. "Labels to reach it" is then the labels a strategy needs to match what random gets
    from all of them (Cluster-Margin's measure, with random as the baseline); None without random runs."""
    finals = [r["final_accuracy"] for r in res if r["method"] == "random" and r["final_accuracy"] is not None]
    return float(np.floor(np.mean(finals) * 100) / 100) if finals else None


def _labels_to_target_section(res: list[dict], sc: dict, figures_dir: Path, rel) -> list[str]:
    """(g): labels each strategy needs to reach a target accuracy, async, at one pace of study (f)."""
    g = [r for r in res if r["study"] == "g"]
    if not g:
        return []
    target = target_accuracy(g)
    methods = [m for m in ("random", "entropy", "least_confidence", "margin", "aal", "cluster_margin")
               if any(r["method"] == m for r in g)] + sorted({r["method"] for r in g} - {
                   "random", "entropy", "least_confidence", "margin", "aal", "cluster_margin"})
    budget = sc["regime_budget"]
    lines = ["## (g) Labels to reach a target accuracy, by strategy", "",
             f"Async, one server, {sc['workers']} workers (the AAL mix: one each of entropy, least confidence and "
             f"margin), the `{sc['strategy_regime']}` pace of study (f) "
             f"({dict(sc['regimes'])[sc['strategy_regime']]:g} s a label, {sc['regime_annotators']} annotators), "
             f"batch {sc['regime_batch']}, budget {budget}. "
             + (f"**Target: {target:.2f}**, the mean accuracy random sampling's final models reach with all "
                f"{budget} labels (rounded down), so *labels to target* is what each strategy needs to match "
                "what random gets from the whole budget — the Cluster-Margin paper's headline measure with "
                "random as the baseline. " if target is not None else "No random runs, so no target. ")
             + "For each run, the first label count at which a published model reached the target on the held-out "
             "split; the mean ± 95% t-interval is over the runs that reached it, and *reached* says how many "
             "did (a run that never reaches it within the budget is \"not reached\", not the budget).", "",
             "| strategy | reached | labels to target | final model | retrained |",
             "|---|---|---|---|---|"]
    fig, ax = plt.subplots(figsize=(6.5, 4), dpi=110)
    grid = np.linspace(budget / 8, budget, 8).round().astype(int)
    for method in methods:
        runs = [r for r in g if r["method"] == method]
        reached, need = _to_target(runs, target)
        lines.append(f"| {method} | {reached} | {need} | "
                     f"{_fmt(*_ci(r['final_accuracy'] for r in runs))} | "
                     f"{_fmt(*_ci(r.get('retrained_accuracy') for r in runs))} |")
        ax.plot(grid, _mean_curve(runs, grid), marker="o", ms=3, label=method)
    if target is not None:
        ax.axhline(target, color="k", ls=":", lw=1, label=f"target {target:.2f}")
    _label_curve_axes(ax, "(g) accuracy against labels (mean over seeds)")
    _save(fig, figures_dir / "g_labels_to_target.png")
    return lines + ["", f"![labels to target]({rel(figures_dir / 'g_labels_to_target.png')})", ""]


ARM_TITLES = {"with": "With items 1–3: paced rounds, typical cold start, semi-supervised rounds",
              "without": "Without them: full rounds, random cold start, supervised rounds",
              "paced": "Paced rounds alone (item 1)", "typical": "The typical cold start alone, untrained network",
              "pretrained": "Pretraining on the pool and the typical cold start of its encoder (item 2)",
              "semi": "Semi-supervised rounds alone (item 3)"}
ARM_STUDIES = {"a": ("strategy", "batch"), "c": ("method", "servers"), "d": ("method", "batch"), "e": ("method",),
               "f": ("regime",), "g": ("method",)}


def _first_model_seconds(curve: list[dict]) -> float | None:
    """Seconds from the run's start to its first model trained on labels."""
    times = [p["seconds"] for p in curve if p.get("labels") and p.get("seconds") is not None]
    return min(times) if times else None


def _arms_section(res: list[dict], arms: dict) -> list[str]:
    """What items 1–3 change, study by study: each arm − "without" on the same experiment and seed (paired), the
    share of labels a model chose, the time to the first model, and the chosen labels' worth."""
    lines = ["## What items 1–3 change (each arm − without, paired by experiment and seed)", "",
             "Each study ran in every arm on the same seeds: " + "; ".join(
                 f"*{arm}*: " + ", ".join(f"`{k}={v}`" for k, v in settings.items())
                 for arm, settings in arms.items()) + ". *Chosen by a model*: the share of labels whose query a "
             "model trained on labels picked (not random, not typical cold-start picks). *First model*: seconds "
             "from the run's start to the first model trained on labels. *Curve*: Table 1's mean accuracy over "
             "the curve. Δ is the arm − without, mean ± 95% t-interval over the pairs.", "",
             "| study | arm | pairs | chosen by a model (arm / without) | first model, s (arm / without) | "
             "Δ curve | Δ retrained |", "|---|---|---|---|---|---|---|"]
    for study in ("a", "c", "d", "e", "f", "g"):
        runs = [r for r in res if r["study"] == study]
        if not runs:
            continue
        by_key: defaultdict[tuple, dict] = defaultdict(dict)
        for r in runs:
            key = tuple(r.get(k) for k in (*ARM_STUDIES[study], "mode", "seed"))
            by_key[key][r.get("arm", "with")] = r
        for arm in [a for a in arms if a != "without"]:
            pairs = [d for d in by_key.values() if arm in d and "without" in d]
            if not pairs:
                continue
            chosen = {a: _ci(1 - (d[a].get("cold_start_share") or 0.0) for d in pairs) for a in (arm, "without")}
            first = {a: _ci(_first_model_seconds(d[a]["curve"]) for d in pairs) for a in (arm, "without")}
            d_curve = _ci(curve_average(d[arm]["curve"], d[arm]["labels"])
                          - curve_average(d["without"]["curve"], d["without"]["labels"]) for d in pairs)
            d_ret = _ci(d[arm]["retrained_accuracy"] - d["without"]["retrained_accuracy"] for d in pairs
                        if d[arm].get("retrained_accuracy") is not None
                        and d["without"].get("retrained_accuracy") is not None)
            lines.append(f"| ({study}) | {arm} | {len(pairs)} | {chosen[arm][0] * 100:.0f}% / "
                         f"{chosen['without'][0] * 100:.0f}% | {_fmt(*first[arm], 1)} / "
                         f"{_fmt(*first['without'], 1)} | {_fmt(*d_curve)} | {_fmt(*d_ret)} |")
    return lines + [""]


def write_report(doc: dict, *, out_md: Path, figures_dir: Path, notes: Path | None = None) -> None:
    figures_dir.mkdir(parents=True, exist_ok=True)
    sc = doc["scale_config"]
    res = doc["results"]
    rel = lambda p: Path(p).relative_to(out_md.parent).as_posix()  # noqa: E731
    studies = doc.get("studies") or sorted({r["study"] for r in res})
    recipe = doc.get("training", {})
    seeds_by_study = ", ".join(f"{s}: {_seeds([r for r in res if r['study'] == s])}"
                               for s in sorted({r["study"] for r in res}))
    lines = [
        "# Results: asynchronous vs synchronous active learning, annotator pace, strategies",
        "",
        f"Generated by `aal-experiment suite --scale {doc['scale']} --seeds {doc['seeds']} --studies "
        f"{','.join(studies)}" + (f" --arms {','.join(doc['arms'])}" if doc.get("arms") else "")
        + f"` (its {len(res)} runs take {doc['seconds'] / 60:.1f} minutes in all). Dataset "
        f"`{sc['dataset']}`, model `{sc['model']}`; every server trains with the servers' recipe "
        + (f"({recipe['epochs']} epochs and at least {recipe['min_steps']} optimizer steps a round, "
           f"{'warm start' if recipe['warm_start'] else 'from scratch'}; docs/RECIPE.md)"
           if recipe else "(docs/RECIPE.md)")
        + ". Every run is the full system: coordinator, servers, workers and simulated annotators as separate "
        "processes over gRPC. **Every ± is the half-width of a 95% t-interval over seeds** (mean ± t·s/√n; "
        f"a single seed shows no ±). Seeds by study: {seeds_by_study}.",
        "",
    ]
    sections = (_regimes_section, _labels_to_target_section, _sync_async_sections, _servers_section,
                _cluster_margin_section, _curves_section)
    arms = list(dict.fromkeys(r.get("arm", "with") for r in res))
    if len(arms) == 1:
        for section in sections:
            lines += section(res, sc, figures_dir, rel)
    else:
        lines += _arms_section(res, doc.get("arms", {}))
        for arm in arms:
            lines += [f"# {ARM_TITLES.get(arm, arm)}", ""]
            arm_dir = figures_dir / arm
            arm_dir.mkdir(parents=True, exist_ok=True)
            for section in sections:
                lines += section([r for r in res if r.get("arm", "with") == arm], sc, arm_dir, rel)
    if notes is not None and Path(notes).exists():
        lines += ["## Reading", "", Path(notes).read_text().strip(), ""]
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_md.write_text("\n".join(lines) + "\n")
