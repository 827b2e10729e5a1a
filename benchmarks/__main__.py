"""Run the benchmark suite: `python -m benchmarks [--smoke] [--out DIR] [--only NAME,...]` (or `make bench`).

Every figure is a ratio against a baseline measured in the same run, since the machines are shared and
noisy. Writes OUT/results.json and OUT/results.md; a full run also rewrites docs/PERFORMANCE.md.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import click

from benchmarks import (annotators, capacity, cluster_margin_scale, cnn_vs_textbook, cold_start, crowd, first_minute,
                        frozen_backbone, growth, held_open, labelstudio_sync, model_distribution, own_data, replicas,
                        scale_sim, semi_supervised, store_backends, web_latency, work_per_label, worker_scoring)

ROOT = Path(__file__).resolve().parent.parent


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024 ** 3
    return f"{os.cpu_count()} cores ({cpu}), {mem_gb:.0f} GiB RAM, {platform.system()} {platform.release()}, " \
           f"Python {platform.python_version()}"


BENCHMARKS = {
    "annotators": lambda smoke: annotators.run(seconds=3 if smoke else 15, smoke=smoke,
                                               items=20_000 if smoke else 200_000),
    "model_distribution": lambda smoke: model_distribution.run(smoke=smoke, repeats=1 if smoke else 5),
    "worker_scoring": lambda smoke: worker_scoring.run(smoke=smoke, repeats=1 if smoke else 5),
    "cluster_margin": lambda smoke: {"rows": cluster_margin_scale.run(
        [2000] if smoke else [10_000, 50_000, 100_000], 32 if smoke else 512, 100 if smoke else 1000)},
    "scale_sim": lambda smoke: scale_sim.run(smoke=smoke),
    "growth": lambda smoke: growth.run(smoke=smoke),
    "store_backends": lambda smoke: store_backends.run(smoke=smoke),
    "cnn_vs_textbook": lambda smoke: cnn_vs_textbook.run(smoke=smoke),
    "web_latency": lambda smoke: web_latency.run(smoke=smoke),
    "labelstudio_sync": lambda smoke: labelstudio_sync.run(smoke=smoke),
    "work_per_label": lambda smoke: work_per_label.run(smoke=smoke),
    "held_open": lambda smoke: held_open.run(smoke=smoke),
    "capacity": lambda smoke: capacity.run(smoke=smoke),
    "own_data": lambda smoke: own_data.run(smoke=smoke),
    "semi_supervised": lambda smoke: semi_supervised.run(smoke=smoke),
    "first_minute": lambda smoke: first_minute.run(smoke=smoke),
    "cold_start": lambda smoke: cold_start.run(smoke=smoke),
    "frozen_backbone": lambda smoke: frozen_backbone.run(smoke=smoke),
    "crowd": lambda smoke: crowd.run(smoke=smoke),
    "replicas": lambda smoke: replicas.run(smoke=smoke),
}

ROW_WRITERS = {"work_per_label": work_per_label, "held_open": held_open, "capacity": capacity, "own_data": own_data,
               "semi_supervised": semi_supervised, "first_minute": first_minute, "cold_start": cold_start,
               "frozen_backbone": frozen_backbone, "crowd": crowd, "replicas": replicas}


def table(results: dict) -> str:
    r = results["benchmarks"]
    rows = ["| # | figure | measured | baseline (same run) | ratio | target | holds |", "|---|---|---|---|---|---|---|"]

    def ok(v):
        return "yes" if v else "**no**"

    if "annotators" in r:
        a = r["annotators"]
        m, b = a["measured"], a["bare"]
        rows.append(f"| 1 | annotator wait p99, {a['annotators']} annotators on AnnotationSession streams, 2 servers "
                    f"+ 4 workers | {m['wait']['p99'] * 1e3:.2f} ms (p50 {m['wait']['p50'] * 1e3:.2f}) | "
                    f"bare stream round trip p99 {b['p99'] * 1e3:.2f} ms (p50 {b['p50'] * 1e3:.2f}) | "
                    f"{a['wait_p99_ratio']:.2f}× | ≤ 3× | {ok(a['wait_pass'])} |")
        w = a["warm_up"]
        rows.append(f"| 2 | durable label cycles/s on the streams, after a warm-up of {w['labels']} labels in "
                    f"{w['seconds']:.0f} s (model v{w['model_version']}, S {w['queued']}"
                    f"{'' if w['steady'] else ': **not steady**'}); CPU: coordinator "
                    f"{m['coordinator_cpu_percent']:.0f}%, load generator {m['load_generator_cpu_percent']:.0f}% | "
                    f"{m['cycles_per_second']:.0f} | bare stream {b['pairs_per_second']:.0f} message pairs/s; CPU: "
                    f"echo server {b['server_cpu_percent']:.0f}%, load generator "
                    f"{b['load_generator_cpu_percent']:.0f}% | {a['throughput_ratio']:.2f} | ≥ 0.5 | "
                    f"{ok(a['throughput_pass'])} |")
        if "unary" in a:
            u = a["unary"]
            rows.append(f"| 1u | the same on unary calls (LeaseQuery + SubmitLabel): wait p99 | "
                        f"{u['measured']['wait']['p99'] * 1e3:.2f} ms | bare unary p99 "
                        f"{u['bare']['p99'] * 1e3:.2f} ms | {u['wait_p99_ratio']:.2f}× | — | — |")
            rows.append(f"| 2u | the same on unary calls: label cycles/s | {u['measured']['cycles_per_second']:.0f} | "
                        f"bare {u['bare']['calls_per_second']:.0f} calls/s → "
                        f"{u['bare']['calls_per_second'] / 2:.0f} cycles/s | {u['throughput_ratio']:.2f} | — | — |")
    if "model_distribution" in r:
        m = r["model_distribution"]
        spread = f" (pairs {m['ratio_range'][0]:.2f}–{m['ratio_range'][1]:.2f})" if "ratio_range" in m else ""
        rows.append(f"| 3 | download of a {m['model_mb']:.1f} MB model | {m['download_mb_per_s']:.0f} MB/s | "
                    f"bare stream {m['bare_mb_per_s']:.0f} MB/s | {m['ratio']:.2f}{spread} | ≥ 0.7 | "
                    f"{ok(m['pass'])} |")
        rows.append(f"| 3b | until {m['workers']} workers hold a new version | "
                    f"{m['all_workers_hold_new_version_seconds']:.2f} s | – | – | – | – |")
    if "worker_scoring" in r:
        w = r["worker_scoring"]
        rows.append(f"| 4 | worker scoring, {w['items']} items ({w['strategy']}) | "
                    f"{w['worker_items_per_second']:.0f} items/s | in-process inference "
                    f"{w['inference_items_per_second']:.0f} items/s | {w['ratio']:.2f} | ≥ 0.9 | {ok(w['pass'])} |")
    if "cluster_margin" in r:
        for c in r["cluster_margin"]["rows"]:
            rows.append(f"| 5 | Cluster-Margin, {c['items']} × {c['dim']} | cluster {c['cluster_seconds']:.1f} s, "
                        f"round {c['select_seconds'] * 1e3:.0f} ms, peak {c['peak_rss_mb']:.0f} MB | – | – | – | – |")
    if "scale_sim" in r:
        s = r["scale_sim"]
        rows.append(f"| 6 | scale: {s['servers']} servers, {s['workers']} workers, {s['annotators']} annotators, "
                    f"{s['labels']} labels | {s['errors']} errors, {s['labels_per_second']:.0f} labels/s, wait p50 "
                    f"{s['wait_p50_ms']:.1f} / p99 {s['wait_p99_ms']:.1f} ms, coordinator CPU "
                    f"{s['coordinator_cpu_percent']:.0f}%, peak {s['coordinator_peak_rss_mb']:.0f} MB | – | – | "
                    f"0 errors | {ok(s['pass'])} |")
    if "growth" in r:
        g = r["growth"]
        for row in g["rows"]:
            rows.append(f"| 7 | L = {row['labels']:,} | lease p50 {row['lease']['p50'] * 1e3:.2f} ms, submit p50 "
                        f"{row['submit']['p50'] * 1e3:.2f} ms, RSS {row['rss_mb']:.0f} MB, start "
                        f"{row['startup_seconds']:.1f} s | – | – | – | – |")
        rows.append(f"| 7 | p50 growth, smallest → largest L | lease {g['p50_growth']['lease']:.2f}×, submit "
                    f"{g['p50_growth']['submit']:.2f}× | – | – | ≤ 1.5× | {ok(g['pass'])} |")
    if "store_backends" in r and "skipped" not in r["store_backends"]:
        s = r["store_backends"]
        p, q = s["postgresql"], s["sqlite"]
        rows.append(f"| 8 | durable label cycles/s, PostgreSQL store, {s['threads']} threads in-process "
                    f"({s['measured_at']}) | {p['cycles_per_second']:.0f} (submit p50 {p['submit_p50_ms']:.2f} / "
                    f"p99 {p['submit_p99_ms']:.2f} ms) | embedded SQLite {q['cycles_per_second']:.0f} (p50 "
                    f"{q['submit_p50_ms']:.2f} / p99 {q['submit_p99_ms']:.2f} ms) | {s['ratio']:.2f} | – | – |")
    if "cnn_vs_textbook" in r:
        for c in r["cnn_vs_textbook"]["rows"]:
            shape = "×".join(map(str, c["input_shape"][1:]))
            rows.append(f"| 9 | `cnn` accuracy, {c['labels']} random labels of {c['dataset']} ({shape}), "
                        f"{c['seeds']} seeds, same labels and recipe | {c['cnn_mean']:.3f} ± {c['cnn_std']:.3f} | "
                        f"textbook CNN {c['textbook_mean']:.3f} ± {c['textbook_std']:.3f} | {c['ratio']:.3f} | "
                        f"≥ 1 | {ok(c['pass'])} |")
    if "web_latency" in r:
        rows.extend(web_latency.rows(r["web_latency"]))
    if "labelstudio_sync" in r and "skipped" not in r["labelstudio_sync"]:
        s = r["labelstudio_sync"]
        ms = lambda d: f"p50 {d['p50'] * 1e3:.0f} / p99 {d['p99'] * 1e3:.0f} ms"  # noqa: E731
        rows.append(f"| 11 | Label Studio save → record in L, webhooks ({s['samples']} saves) | {ms(s['webhooks'])} "
                    f"(polling every 1 s: {ms(s['polling_1s'])}) | Label Studio's save alone "
                    f"p50 {s['label_studio_save']['p50'] * 1e3:.0f} ms; direct submit p50 "
                    f"{s['direct_submit']['p50'] * 1e3:.1f} ms | {s['p50_over_save']:.2f} | – | – |")
        rows.append(f"| 11b | queries the Label Studio bridge keeps in sync as S changes (window {s['window']}) | "
                    f"{s['sync_queries_per_second']:.0f}/s | Label Studio's bulk import "
                    f"{s['import_tasks_per_second']:.0f} tasks/s | {s['sync_over_import']:.2f} | – | – |")
    for name, module in ROW_WRITERS.items():  # benchmarks that write their own table rows
        if name in r:
            rows.extend(module.rows(r[name]))
    return "\n".join(rows)


def write_performance_doc(results: dict, md: str) -> None:
    notes = ROOT / "docs" / "PERFORMANCE_NOTES.md"
    doc = ["# Performance", "", f"Latest full run of `make bench`, {results['started']}, on {results['machine']}.",
           "Every ratio is against a baseline measured in the same run.", "", md, ""]
    if notes.exists():
        doc += [notes.read_text().strip(), ""]
    (ROOT / "docs" / "PERFORMANCE.md").write_text("\n".join(doc))


@click.command()
@click.option("--smoke", is_flag=True, help="Tiny sizes: checks that every benchmark still runs (seconds).")
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/bench"), show_default=True)
@click.option("--only", default="", help="Comma-separated subset of: " + ", ".join(BENCHMARKS))
@click.option("--from-results", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Rewrite docs/PERFORMANCE.md from an earlier full run's results.json instead of running.")
def main(smoke, out, only, from_results):
    if from_results is not None:
        results = json.loads(from_results.read_text())
        write_performance_doc(results, table(results))
        return
    names = [n for n in only.split(",") if n] or list(BENCHMARKS)
    results = {"machine": machine(), "smoke": smoke, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
               "benchmarks": {}}
    for name in names:
        t0 = time.perf_counter()
        click.echo(f"running {name} ...", err=True)
        results["benchmarks"][name] = BENCHMARKS[name](smoke)
        click.echo(f"  {name} done in {time.perf_counter() - t0:.1f}s", err=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    md = table(results)
    (out / "results.md").write_text(md + "\n")
    click.echo(md)
    if not smoke and not only:
        write_performance_doc(results, md)


if __name__ == "__main__":
    main()
