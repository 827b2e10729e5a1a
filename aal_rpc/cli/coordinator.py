"""aal-coordinator: the pool coordinator (query pool S, labeled pool L, model registry) as a gRPC service."""

from __future__ import annotations

import gc
import logging
import sys
import threading
from pathlib import Path

import click

from aal_rpc.cli.admin_import import ids_by_source, read_labels
from aal_rpc.cli.common import check_model, log_level_option, model_option, on_termination, run_program
from aal_rpc.client.coordinator import MAX_DOWNLOAD_BYTES
from aal_rpc.coordinator.app import create_coordinator_server, is_database_url
from aal_rpc.coordinator.contract import CoordinatorConfig, ImportedLabel
from aal_rpc.coordinator.layout import DataDir
from aal_rpc.coordinator.metrics import serve as serve_metrics
from aal_rpc.coordinator.query_pool import PICK_ORDERS
from aal_rpc.coordinator.rules import MAX_LABELS_PER_ITEM
from aal_rpc.coordinator.sqlite_store import SqliteStore
from aal_rpc.data import DATASETS, Dataset, load_dataset, load_test_set, read_classes
from aal_rpc.grpc_utils import DEFAULT_MAX_WORKERS, parse_address
from aal_rpc.security import ServerTLS, load_tokens
from aal_rpc.types import GOLD_ANNOTATOR, GOLD_STRATEGY, Candidate, Payload, Provenance, Task

log = logging.getLogger("aal.coordinator")

SHUTDOWN_GRACE_SECONDS = 5.0
DEFAULTS = CoordinatorConfig()  # the options' defaults are the configuration's


def stored_task(store: str, data_dir: Path | None) -> Task | None:
    """The task already recorded in the store, if any."""
    if is_database_url(store):
        from aal_rpc.coordinator.postgres_store import PostgresStore

        pg = PostgresStore(store, pool_size=1)
        try:
            return pg.load_task()
        finally:
            pg.close()
    if data_dir is not None and DataDir(data_dir).holds_store():
        sqlite = SqliteStore(data_dir)
        try:
            return sqlite.load().task
        finally:
            sqlite.close()
    return None


DEFAULT_AUDIT_SHARE = 0.05  # without a labeled test set: the share of labels that estimates accuracy


def parse_input_size(value: str | None) -> tuple[int, ...]:
    """`--input-size`: "32" (32x32) or "WIDTHxHEIGHT" ("64x48") -> (height, width); None -> () (the default)."""
    if not value:
        return ()
    parts = value.lower().split("x")
    try:
        sizes = [int(v) for v in parts]
    except ValueError:
        sizes = []
    if len(sizes) not in (1, 2) or not all(1 <= v <= 4096 for v in sizes):
        raise click.BadParameter(f"expected N or WIDTHxHEIGHT, each 1 to 4096; got {value!r}",
                                 param_hint="--input-size")
    width, height = sizes if len(sizes) == 2 else sizes * 2
    return (height, width)


def resolve_task(ctx: click.Context, store: str, data_dir: Path | None, dataset: str, model: str, mode: str,
                 batch_size: int, classes: str | None = None, classes_file: Path | None = None,
                 guidelines: Path | None = None, input_size: str | None = None, test_dataset: str | None = None,
                 audit_share: float | None = None) -> tuple[Task, Dataset]:
    """The task from the options, and its dataset loaded; on a store that has a task, options left at their
    defaults take its values. ValueError (one line) for data the task cannot be built from."""
    stored = stored_task(store, data_dir)
    explicit = lambda name: ctx.get_parameter_source(name) not in (  # noqa: E731
        click.core.ParameterSource.DEFAULT, None)
    names: tuple[str, ...] | None = None
    descriptions: tuple[str, ...] = ()
    text = guidelines.read_text(encoding="utf-8") if guidelines is not None else ""
    size = parse_input_size(input_size)
    if classes is not None or classes_file is not None:
        declared = read_classes(classes, classes_file)
        names, descriptions = declared.names, declared.descriptions
    if stored is not None:
        dataset = dataset if explicit("dataset") else stored.dataset
        model = model if explicit("model") else stored.architecture
        mode = mode if explicit("mode") else stored.mode
        batch_size = batch_size if explicit("batch_size") else stored.batch_size
        if names is None:
            names, descriptions = stored.class_names, stored.class_descriptions
        text = text if guidelines is not None else stored.guidelines
        size = size if input_size else stored.input_size
        test_dataset = test_dataset if test_dataset is not None else stored.test_dataset
        audit_share = audit_share if audit_share is not None else stored.audit_share
    ds = load_dataset(dataset, classes=names, input_size=size or None)
    if test_dataset:
        x_test, y_test = load_test_set(test_dataset, classes=ds.class_names, input_size=size or None)
        if x_test.shape[1:] != ds.x_pool.shape[1:]:
            raise ValueError(f"test set {test_dataset} has inputs of shape {x_test.shape[1:]}, the pool "
                             f"{ds.x_pool.shape[1:]}")
    if audit_share is None:  # an audit only where no labeled test set measures the models
        audit_share = 0.0 if test_dataset or ds.has_test_split else DEFAULT_AUDIT_SHARE
    task = Task(dataset=dataset, num_classes=ds.num_classes, class_names=ds.class_names,
                input_shape=ds.input_shape, architecture=model, mode=mode, batch_size=batch_size,
                class_descriptions=tuple(descriptions), guidelines=text, input_size=tuple(size),
                test_dataset=test_dataset or "", audit_share=float(audit_share))
    return task, ds


def import_pool_labels(coordinator, ds: Dataset) -> None:
    """Import the labels a partly labeled pool brings into L, with provenance 'imported' (items already in L are
    skipped, so a restart imports nothing twice). A fully labeled pool is a simulation: the oracle answers from
    its labels, and none is imported."""
    rows = ds.labeled_rows
    if len(rows) == 0 or ds.is_fully_labeled:
        return
    texts = ds.texts
    items = (ImportedLabel(ds.item_ids[i], int(ds.y_pool[i]), Payload.from_array(
        ds.x_pool[i], image=ds.picture(i), text=texts[i] if texts is not None else "")) for i in rows)
    outcome = coordinator.import_labels(items)
    if outcome.imported:
        log.info("imported %d labels the pool brought (%d already in L)", outcome.imported, outcome.skipped)


def serve_gold(coordinator, ds: Dataset, gold: dict[str, int]) -> None:
    """Put gold items in play: their known answers into L (annotator types.GOLD_ANNOTATOR, provenance GOLD_STRATEGY;
    once: a restart skips them), and the items into S for every annotator to label once (rules.gold_first serves
    them at the gold share). An id the pool does not hold refuses the start, naming it."""
    known = set(ds.item_ids)
    missing = [item_id for item_id in gold if item_id not in known]
    if missing:
        raise click.ClickException(f"--gold names {len(missing)} items the pool does not hold, the first "
                                   f"{missing[0]!r}; nothing started")
    texts = ds.texts

    def payload(item_id: str) -> Payload:
        i = ds.index_of(item_id)
        return Payload.from_array(ds.x_pool[i], image=ds.picture(i), text=texts[i] if texts is not None else "")

    outcome = coordinator.import_labels([ImportedLabel(i, label, payload(i), GOLD_ANNOTATOR)
                                         for i, label in gold.items()])
    offered = coordinator.submit_candidates(worker_id=GOLD_ANNOTATOR, strategy=GOLD_STRATEGY, model_version=0,
                                            candidates=[Candidate(i, payload(i), Provenance(GOLD_ANNOTATOR,
                                                                                            GOLD_STRATEGY, 0, 0.0))
                                                        for i in gold])
    log.info("%d gold items: %d answers imported, %d put in S", len(gold), outcome.imported, offered.accepted)


@click.command()
@click.option("--listen", default="0.0.0.0:50051", show_default=True, metavar="HOST:PORT",
              help="Address to bind; port 0 picks a free one. The first line printed is 'listening on HOST:PORT'.")
@click.option("--store", default="sqlite", show_default=True, envvar="AAL_STORE", metavar="sqlite|postgresql://...",
              help="sqlite: embedded, under --data-dir (one coordinator). A postgresql:// URL: all state in that "
                   "database, so several coordinator replicas can serve it at once (async mode). Also $AAL_STORE.")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None,
              help="Where the embedded store keeps all state (required with --store sqlite).")
@click.option("--dataset", default="digits", show_default=True,
              help=f"{DATASETS}. Labels are optional: a pool without them is labeled by people; the labels a pool "
                   "has are imported into L (provenance 'imported') when the coordinator first starts.")
@click.option("--classes", default=None, metavar="A,B,C",
              help="The classes, in the team's order (label index = position). Default: the data's own labels.")
@click.option("--classes-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="One class a line, in order, optionally a TAB and a line of guidance annotators see.")
@click.option("--guidelines", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="A Markdown file of labeling guidelines, shown in aal-web and sent to Label Studio.")
@click.option("--input-size", default=None, metavar="N|WxH",
              help="Size pictures are resized to for the model (32, or 64x48 for width x height); channels come "
                   "from the data. Annotators see the original files. Default: 32 for folders and Parquet.")
@click.option("--test-dataset", default=None, metavar="SPEC",
              help="A labeled dataset (same classes) the trainers evaluate every model on.")
@click.option("--audit-share", type=click.FloatRange(min=0.0, max=0.5), default=None,
              help=f"Share of labels spent on items drawn uniformly at random from the pool, kept out of training: "
                   f"an unbiased accuracy estimate with a 95% interval. Default: {DEFAULT_AUDIT_SHARE} without a "
                   f"labeled test set, else 0.")
@model_option
@click.option("--mode", type=click.Choice(["async", "sync"]), default=Task.mode, show_default=True,
              help="sync: release --batch-size queries, then wait for a model trained on all labels and rescored "
                   "candidates before the next batch (the classic loop, for comparison).")
@click.option("--batch-size", type=click.IntRange(min=0), default=Task.batch_size, show_default=True,
              help="Labels per round (required in sync mode; recorded in async mode).")
@click.option("--pick", type=click.Choice(PICK_ORDERS), default=DEFAULTS.pick, show_default=True,
              help="Order in which annotators get queries.")
@click.option("--pool-capacity", type=click.IntRange(min=1), default=DEFAULTS.pool_capacity, show_default=True,
              help="Most candidates S holds; when full, the stalest make room for fresher ones.")
@click.option("--lease-seconds", type=click.FloatRange(min=0.1), default=DEFAULTS.lease_seconds, show_default=True)
@click.option("--max-labels-per-model", type=click.IntRange(min=0), default=DEFAULTS.max_labels_per_model,
              show_default=True, help="Stop leasing while L is this many labels ahead of the latest model (0: never); "
                                      "about one training batch keeps annotators from outrunning training with "
                                      "stale or random picks. Embedded store only.")
@click.option("--max-leases-per-annotator", type=click.IntRange(min=0), default=DEFAULTS.max_leases_per_annotator,
              show_default=True,
              help="Most live leases one annotator may hold (0: no cap); one more is refused with RESOURCE_EXHAUSTED "
                   "until the annotator labels, releases or lets one expire. Renewing leases keeps them, so without "
                   "a cap one client could hold all of S. An aal-labelstudio bridge holds its --window leases as one "
                   "annotator: the window must fit the cap.")
@click.option("--labels-per-item", type=click.IntRange(min=1, max=MAX_LABELS_PER_ITEM),
              default=DEFAULTS.labels_per_item, show_default=True,
              help="Labels each item gets, each from a different annotator (a crowd): an item goes back to S until "
                   "it has them, served before new items. Trainers learn each item's consensus label; "
                   "'aal-admin export --consensus' and 'aal-admin annotators' show it and each annotator's quality.")
@click.option("--max-labels-per-item", type=click.IntRange(min=0, max=MAX_LABELS_PER_ITEM),
              default=DEFAULTS.max_labels_per_item, show_default=True,
              help="Adaptive re-labeling: workers with --strategy activelab may ask for one more label of a labeled "
                   "item whose consensus is uncertain, while it has fewer than this many (0: never). Those items "
                   "compete with new ones by their scores.")
@click.option("--gold", "gold_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Gold items: a jsonl or csv of pool items with known labels (item_id, or source: a file's path "
                   "in the dataset; and label or label_name, as 'aal-admin export' writes). Each is served to every "
                   "annotator once, at --gold-share of leases, and their answers sharpen each annotator's estimated "
                   "quality ('aal-admin annotators'). The known labels go into L (annotator 'gold') and are trained "
                   "on.")
@click.option("--gold-share", type=click.FloatRange(min=0, max=1), default=0.05, show_default=True,
              help="With --gold: the share of leases that serve a gold item the annotator has not labeled yet.")
@click.option("--max-weight-bytes", type=click.IntRange(min=1, max=MAX_DOWNLOAD_BYTES),
              default=DEFAULTS.max_weight_bytes, show_default=True,
              help="The largest model's weights the registry takes (at most what servers and workers download); a "
                   "task whose model is larger is refused at start, an upload past it RESOURCE_EXHAUSTED.")
@click.option("--keep-models", type=click.IntRange(min=1), default=DEFAULTS.keep_models, show_default=True,
              help="How many weight blobs to keep.")
@click.option("--max-workers", type=click.IntRange(min=4), default=DEFAULT_MAX_WORKERS, show_default=True,
              help="Threads that run store work (SQLite writes, PostgreSQL transactions). Calls that wait "
                   "(long polls, label streams, downloads) hold none.")
@click.option("--seed", type=int, default=DEFAULTS.seed, show_default=True)
@click.option("--tokens-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), envvar="AAL_TOKENS_FILE",
              default=None, help="One 'role:token' or 'role identity token' line per token (roles: annotator, "
                                 "worker, server, admin; '#' starts a comment line); also $AAL_TOKENS, same "
                                 "format. Without tokens, authentication is off.")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Server certificate (PEM): serve TLS.")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Server private key (PEM).")
@click.option("--tls-ca", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="CA of client certificates: require mutual TLS.")
@click.option("--metrics-port", type=click.IntRange(min=0, max=65535), default=None,
              help="Serve Prometheus metrics on this port (0 picks one; printed as 'metrics on HOST:PORT').")
@click.option("--health-port", type=click.IntRange(min=0, max=65535), default=None,
              help="Also answer grpc.health.v1 Check, and nothing else, in plaintext on this port, for probes "
                   "that cannot speak TLS (Kubernetes' gRPC probes). 0 picks one; printed as 'health on HOST:PORT'.")
@log_level_option
@click.pass_context
def main(ctx, listen, store, data_dir, dataset, classes, classes_file, guidelines, input_size, test_dataset,
         audit_share, model, mode, batch_size, pick, pool_capacity, lease_seconds, max_labels_per_model,
         max_leases_per_annotator, labels_per_item, max_labels_per_item, gold_file, gold_share, max_weight_bytes,
         keep_models, max_workers, seed, tokens_file, tls_cert, tls_key, tls_ca, metrics_port,
         health_port):
    """Run the pool coordinator."""
    host, _ = parse_address(listen)
    if store != "sqlite" and not is_database_url(store):
        raise click.BadParameter("use sqlite or a postgresql:// URL", param_hint="--store")
    if store == "sqlite" and data_dir is None:
        raise click.UsageError("--data-dir is required with the embedded store (--store sqlite)")
    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    if tls_ca is not None and tls_cert is None:
        raise click.UsageError("--tls-ca (mutual TLS) needs --tls-cert and --tls-key")
    try:
        tokens = load_tokens(tokens_file)
    except ValueError as exc:  # the message never holds any part of a token (see parse_tokens)
        raise click.ClickException(f"refusing to start: {exc}") from exc
    if classes is not None and classes_file is not None:
        raise click.UsageError("give --classes or --classes-file, not both")
    try:
        task, ds = resolve_task(ctx, store, data_dir, dataset, model, mode, batch_size, classes, classes_file,
                                guidelines, input_size, test_dataset, audit_share)
    except (RuntimeError, ConnectionError, ValueError, OSError) as exc:  # bad data, psycopg missing, no database
        raise click.ClickException(str(exc)) from exc
    # before the store records a task whose model cannot be built, or would be refused at every upload
    check_model(task, max_weight_bytes=max_weight_bytes)
    if not tokens:
        log.warning("no tokens configured: authentication is off (see --tokens-file)")
    elif tls_cert is None:
        log.warning("tokens travel in the clear without TLS: anyone on the network path can read and replay "
                    "them (serve TLS with --tls-cert/--tls-key)")
    config = CoordinatorConfig(pool_capacity=pool_capacity, pick=pick, lease_seconds=lease_seconds,
                               keep_models=keep_models, max_weight_bytes=max_weight_bytes, seed=seed,
                               max_labels_per_model=max_labels_per_model,
                               max_leases_per_annotator=max_leases_per_annotator, labels_per_item=labels_per_item,
                               max_labels_per_item=max_labels_per_item,
                               gold_share=gold_share if gold_file is not None else 0.0)
    tls = ServerTLS(tls_cert, tls_key, tls_ca) if tls_cert else None
    health_address = None if health_port is None else f"{listen.rpartition(':')[0]}:{health_port}"  # host as given
    try:
        srv = create_coordinator_server(listen, data_dir, task, config, max_workers=max_workers, tokens=tokens,
                                        tls=tls, store=None if store == "sqlite" else store,
                                        health_address=health_address)
    except (ValueError, ConnectionError) as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        import_pool_labels(srv.coordinator, ds)
        if gold_file is not None:
            serve_gold(srv.coordinator, ds, read_labels(gold_file, task.class_names, by_source=ids_by_source(ds)))
    except click.ClickException:
        srv.stop(0)
        raise
    except Exception as exc:  # noqa: BLE001 - the import is refused whole (a picture gone, a store down)
        srv.stop(0)
        raise click.ClickException(f"importing the pool's labels: {exc}") from exc
    done = threading.Event()  # the stop signal is handled before anyone can learn the port and send it
    on_termination(lambda: threading.Thread(target=lambda: (srv.stop(SHUTDOWN_GRACE_SECONDS), done.set())).start())
    click.echo(f"listening on {host}:{srv.port}")
    if metrics_port is not None:
        _, bound = serve_metrics(srv.metrics, host, metrics_port)
        click.echo(f"metrics on {host}:{bound}")
    if srv.health_port is not None:
        click.echo(f"health on {host}:{srv.health_port}")
    sys.stdout.flush()  # launchers read the bound port from this first line
    log.info("task: %s", task)
    # what loading made (the task's items, L and S as stored) lives as long as the process: the collector's full
    # passes, which stop the event loop, need not walk it again (under load a full pass took up to 220 ms, 70 with
    # these frozen: docs/PERFORMANCE.md)
    gc.collect()  # what is garbage already goes first: a frozen object is never collected
    gc.freeze()
    # in slices: a stop signal that the kernel hands to one of grpcio's threads does not wake a wait without a
    # timeout, and Python runs signal handlers only on the main thread, between its bytecodes (a coordinator
    # under load sometimes never saw its SIGTERM)
    while not done.wait(SIGNAL_CHECK_SECONDS):
        pass
    log.info("stopped")


SIGNAL_CHECK_SECONDS = 0.5  # how long the main thread may sleep before it looks for a stop signal again


# The event loop serves every annotator; the store's writer and the pool's threads share the GIL with it. Python
# makes a thread that wants the GIL wait up to this long for a thread running Python to let go (5 ms by default):
# shorter, the loop gets it back sooner (benchmarks.annotators: about +13% labels/s over two alternated pairs).
GIL_SWITCH_SECONDS = 0.0005


def run() -> None:
    """The aal-coordinator program (see run_program: no slow interpreter teardown after a clean stop)."""
    sys.setswitchinterval(GIL_SWITCH_SECONDS)
    run_program(main)


if __name__ == "__main__":
    run()
