"""Figures and the markdown report of an experiment suite, side by side with the paper's published numbers."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from aal_rpc.experiment.suite import accuracy_at, curve_average, labels_per_model, labels_to_reach  # noqa: E402

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


RETRAINED_NOTE = ("*Accuracy* here is the chosen labels' worth: the mean held-out accuracy of models trained afresh "
                  "on each run's final labels (`--eval-repeats`, the same seeds for a sync run and an async run), "
                  "since one training run's accuracy moves by 2–4 points between initialisations on a few hundred "
                  "labels. The final model's own accuracy is in summary.json, and its async − sync gap in the "
                  "last column.")


def _seeds(runs: list[dict]) -> int:
    return len({r["seed"] for r in runs})


def _mean_std(values) -> tuple[float, float]:
    v = np.asarray([x for x in values if x is not None], dtype=float)
    return (float(v.mean()), float(v.std())) if len(v) else (float("nan"), float("nan"))


def _sync_vs_async(runs: list[dict]) -> tuple[tuple[float, float], tuple[float, float], float]:
    """Retrained accuracy (mean, std) of the sync runs and of the async runs, and the final models' async − sync."""
    by_mode = {mode: [r for r in runs if r["mode"] == mode] for mode in ("sync", "async")}
    sync, asyn = (_mean_std(r.get("retrained_accuracy") for r in by_mode[m]) for m in ("sync", "async"))
    final_sync, final_async = (_mean_std(r["final_accuracy"] for r in by_mode[m])[0] for m in ("sync", "async"))
    return sync, asyn, final_async - final_sync


def _fmt(m: float, s: float, digits: int = 3) -> str:
    return f"{m:.{digits}f} ± {s:.{digits}f}"


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


def _slow_training_section(res: list[dict], sc: dict) -> list[str]:
    """(f): the same comparison where every training round takes seconds (a fixed number of optimizer steps)."""
    f = [r for r in res if r["study"] == "f"]
    if not f:
        return []
    seeds = _seeds(f)
    lines = ["## (f) When training takes seconds", "",
             f"Entropy, one server, every training round at least {sc['slow_min_steps']} optimizer steps "
             "(`--min-steps`), so a round costs seconds however few labels there are, as on a real pool; "
             f"annotators as slow as people ({sc['slow_annotator_delay']} s a label), budget {sc['slow_budget']}; "
             f"{seeds} seeds (this comparison is the noisiest, and the one the system is for). *Labels per model*: "
             "how many labels arrived between one published model and the next — the batch in sync mode; in "
             "async mode how many labels each model chose, i.e. how stale the choosing model was.",
             "",
             "", RETRAINED_NOTE, "",
             "| batch | sync mean wait (ms) | async mean wait (ms) | sync / async | labels per model, sync / async "
             "| sync accuracy | async accuracy | async − sync | final model: async − sync |",
             "|---|---|---|---|---|---|---|---|---|"]
    for b in sc["slow_batch_sizes"]:
        runs = [r for r in f if r["batch"] == b]
        sw, aw = (_mean_std(r["wait_mean"] for r in runs if r["mode"] == mode) for mode in ("sync", "async"))
        sl, al = (np.mean([labels_per_model(r["curve"]) for r in runs if r["mode"] == mode])
                  for mode in ("sync", "async"))
        sa, aa, final_gap = _sync_vs_async(runs)
        lines.append(f"| {b} | {_fmt(sw[0] * 1000, sw[1] * 1000, 1)} | {_fmt(aw[0] * 1000, aw[1] * 1000, 2)} | "
                     f"{sw[0] / aw[0]:.0f}× | {sl:.1f} / {al:.1f} | {_fmt(*sa)} | {_fmt(*aa)} | "
                     f"{aa[0] - sa[0]:+.3f} | {final_gap:+.3f} |")
    return lines + [""]


def write_report(doc: dict, *, out_md: Path, figures_dir: Path, notes: Path | None = None) -> None:
    figures_dir.mkdir(parents=True, exist_ok=True)
    sc = doc["scale_config"]
    res = doc["results"]
    rel = lambda p: Path(p).relative_to(out_md.parent).as_posix()  # noqa: E731
    lines = [
        "# Results: asynchronous vs synchronous active learning, strategy mix, Cluster-Margin",
        "",
        f"Generated by `aal-experiment suite --scale {doc['scale']} --seeds {doc['seeds']}` "
        f"(its {len(res)} runs take {doc['seconds'] / 60:.1f} minutes in all). Dataset `{sc['dataset']}`, "
        f"model `{sc['model']}`, "
        f"{sc['workers']} workers, {sc['annotators']} simulated annotators (mean labeling time "
        f"{sc['annotator_delay']} s), {sc['epochs']} epochs per training round (study f: at least "
        f"{sc.get('slow_min_steps', 0)} optimizer steps), budget {sc['budget']} labels "
        f"({sc['cm_budget']} in study d). Every number is the mean ± standard deviation over "
        f"{doc['seeds']} seeds ({_seeds([r for r in res if r['study'] == 'f'])} in study f); every run is the "
        "full system (coordinator, servers, workers, annotators as separate processes over gRPC).",
        "",
    ]

    # (a) sync vs async scatter -------------------------------------------------------------------------
    a = [r for r in res if r["study"] == "a"]
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

    # (b) waits ------------------------------------------------------------------------------------------
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    width = 0.38
    xs = np.arange(len(sc["batch_sizes"]))
    rows_b = []
    for k, mode in enumerate(("sync", "async")):
        stats = [_mean_std(r["wait_mean"] for r in a if r["batch"] == b and r["mode"] == mode)
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
    lines += _slow_training_section(res, sc)

    # (c) servers table ----------------------------------------------------------------------------------
    c = [r for r in res if r["study"] == "c"]
    lines += ["## (c) More servers (paper Table 1)", "",
              "Average accuracy over the curve (the accuracy of the best-informed model at 10 evenly spaced "
              "label counts, averaged), async mode.", "",
              "| method | 1 server | 2 servers | 4 servers | paper CIFAR-10 (1 / 2 / 4) |", "|---|---|---|---|---|"]
    table_c = {}
    for method in METHODS:
        cells = []
        for n in SERVERS:
            m = _mean_std(curve_average(r["curve"], sc["budget"]) for r in c
                          if r["method"] == method and r["servers"] == n)
            table_c[(method, n)] = m
            cells.append(_fmt(*m))
        paper = " / ".join(f"{v:.3f}" for v in PAPER_TABLE1["Cifar-10"][method])
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {paper} |")
    mono = sum(table_c[(m, 4)][0] >= table_c[(m, 1)][0] for m in METHODS)
    lines += ["", f"4 servers ≥ 1 server for {mono} of {len(METHODS)} methods (the paper: 4 of 4 on every dataset).",
              ""]

    # (d) cluster margin ---------------------------------------------------------------------------------
    d = [r for r in res if r["study"] == "d"]
    fig, axes = plt.subplots(1, len(sc["cm_batch_sizes"]), figsize=(4 * len(sc["cm_batch_sizes"]), 3.6), dpi=110)
    lines += ["## (d) Cluster-Margin at growing batch sizes (second seed)", "",
              f"Synchronous batch mode, budget {sc['cm_budget']}. Labels needed to first reach "
              f"{sc['target_accuracy']:.2f} held-out accuracy (runs that never reach it count as the budget), "
              "the final model's accuracy and the chosen labels' (retrained) accuracy.", "",
              "| batch | method | labels to target | final model accuracy | retrained accuracy |",
              "|---|---|---|---|---|"]
    for ax, b in zip(np.atleast_1d(axes), sc["cm_batch_sizes"]):
        grid = np.linspace(b, sc["cm_budget"], 12).round().astype(int)
        for method in ("cluster_margin", "margin", "random"):
            runs = [r for r in d if r["method"] == method and r["batch"] == b]
            need = _mean_std((labels_to_reach(r["curve"], sc["target_accuracy"]) or sc["cm_budget"]) for r in runs)
            fin = _mean_std(r["final_accuracy"] for r in runs)
            ret = _mean_std(r.get("retrained_accuracy") for r in runs)
            lines.append(f"| {b} | {method} | {_fmt(*need, 0)} | {_fmt(*fin)} | {_fmt(*ret)} |")
            if runs:
                ax.plot(grid, _mean_curve(runs, grid), marker="o", ms=3, label=method)
        _label_curve_axes(ax, f"batch {b}")
    fig.suptitle("(d) Cluster-Margin vs margin vs random")
    _save(fig, figures_dir / "d_cluster_margin.png")
    lines += ["", f"![cluster margin]({rel(figures_dir / 'd_cluster_margin.png')})", ""]

    # (e) curves, one server -----------------------------------------------------------------------------
    e = [r for r in res if (r["study"] == "c" and r["servers"] == 1) or r["study"] == "e"]
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

    if notes is not None and Path(notes).exists():
        lines += ["## Reading", "", Path(notes).read_text().strip(), ""]
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_md.write_text("\n".join(lines) + "\n")
