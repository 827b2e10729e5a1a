"""Prometheus metrics of a coordinator: pool sizes, label and lease rates, annotator wait and RPC latency
histograms, the latest model's version and age, candidates per worker and strategy, training rounds per
server. Each coordinator has its own registry, served over HTTP by `serve`.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
import time
from collections import OrderedDict
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily

from aal_rpc.coordinator.lead_metrics import LeadCollector
from aal_rpc.handlers import Memo, around, replace_behavior
from aal_rpc.measures import estimated_accuracy, labels_per_model

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


MAX_LABEL_VALUES = 256  # distinct values of a client-chosen label (worker, server, strategy); the rest are "other"
MAX_WAITING_ANNOTATORS = 10_000  # annotators whose last label time is kept for the wait histogram


class _Names:
    """The values a client-chosen label may take: the first MAX_LABEL_VALUES seen, then "other", so clients
    sending ever new names cannot grow the registry without bound."""

    def __init__(self):
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) >= MAX_LABEL_VALUES:
            return "other"
        self._seen.add(value)
        return value


class CoordinatorMetrics:
    """The observer the coordinator core reports to; also a gRPC interceptor source for RPC latency."""

    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.labels = Counter("aal_labels", "Labels recorded in L", ["strategy"], registry=r)
        self.leases = Counter("aal_leases", "Queries leased to annotators", registry=r)
        self.wait = Histogram("aal_annotator_wait_seconds", "From an annotator's label to its next lease",
                              buckets=LATENCY_BUCKETS, registry=r)
        self.rpc = Histogram("aal_rpc_latency_seconds", "Server-side RPC latency", ["method", "code"],
                             buckets=LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge("aal_rpc_in_flight", "aal.v1 calls being served (long polls and streams included)",
                               ["method"], registry=r)
        self.request_bytes = Counter("aal_rpc_request_bytes", "Bytes of aal.v1 request messages received",
                                     ["method"], registry=r)
        self.response_bytes = Counter("aal_rpc_response_bytes", "Bytes of aal.v1 response messages sent",
                                      ["method"], registry=r)
        self.candidates = Counter("aal_candidates", "Candidates submitted", ["worker", "strategy"], registry=r)
        self.rounds = Counter("aal_training_rounds", "Models published", ["server"], registry=r)
        self._workers, self._servers, self._strategies = _Names(), _Names(), _Names()
        self._last_label: OrderedDict[str, float] = OrderedDict()  # oldest first, at most MAX_WAITING_ANNOTATORS

    def bind(self, coordinator) -> None:
        """Pool sizes and model gauges are read from the coordinator at scrape time."""
        self.registry.register(_StateCollector(coordinator))

    # -- the observer interface the core calls --------------------------------------------------------

    def leased(self, annotator_id: str) -> None:
        self.leases.inc()
        last = self._last_label.pop(annotator_id, None)
        if last is not None:
            self.wait.observe(time.monotonic() - last)

    def labeled(self, annotator_id: str, strategy: str) -> None:
        self.labels.labels(self._strategies(strategy or "unknown")).inc()
        self._last_label.pop(annotator_id, None)
        self._last_label[annotator_id] = time.monotonic()
        if len(self._last_label) > MAX_WAITING_ANNOTATORS:
            self._last_label.popitem(last=False)

    def candidates_submitted(self, worker_id: str, strategy: str, n: int) -> None:
        self.candidates.labels(self._workers(worker_id), self._strategies(strategy)).inc(n)

    def model_published(self, server_id: str) -> None:
        self.rounds.labels(self._servers(server_id)).inc()

    def session_command(self, kind: str, code: str, seconds: float) -> None:
        """One AnnotationSession command's latency (label, release, renew), as method "AnnotationSession.KIND"."""
        self.rpc.labels(f"AnnotationSession.{kind}", code).observe(seconds)

    def interceptor(self) -> grpc.aio.ServerInterceptor:
        return _RpcInterceptor(self)


class _StateCollector:
    """Pool sizes and the latest model's version and age, from one snapshot of the coordinator per scrape (on
    the shared store a snapshot is a database round trip, so not one per gauge)."""

    def __init__(self, coordinator):
        self._coordinator = coordinator
        self._lead = LeadCollector(coordinator, max_annotators=MAX_LABEL_VALUES)

    def collect(self):
        stats = self._coordinator.stats()
        latest = self._coordinator.registry.latest()
        pool = GaugeMetricFamily("aal_pool_items", "Items in each pool", labels=["pool"])
        for name in ("labeled", "queued", "leased", "skipped"):
            pool.add_metric([name], getattr(stats, name))
        yield pool
        yield GaugeMetricFamily("aal_latest_model_version", "Version of the latest model",
                                value=stats.latest_model_version)
        per_model = labels_per_model(stats.labeled, stats.latest_model_version)  # versions count every model
        yield GaugeMetricFamily("aal_labels_per_model", "Labels in L per model version published (NaN before the "
                                "first model: every label so far was chosen without one, at random)",
                                value=float("nan") if per_model is None else per_model)
        yield GaugeMetricFamily("aal_latest_model_age_seconds", "Seconds since the latest model was uploaded",
                                value=time.time() - latest.created_at if latest else float("nan"))
        estimate = estimated_accuracy(latest.metrics) if latest else None
        accuracy = GaugeMetricFamily("aal_estimated_accuracy", "The latest model's accuracy estimated on the audit "
                                     "labels, with its 95% interval (NaN before any audit label)", labels=["bound"])
        for bound in ("value", "low", "high"):
            accuracy.add_metric([bound], estimate[bound] if estimate else float("nan"))
        yield accuracy
        yield GaugeMetricFamily("aal_audit_labels", "Audit labels the latest model was evaluated on",
                                value=estimate["labels"] if estimate else 0)
        yield from self._lead.collect(stats)


class _MetricsHTTPServer(socketserver.ThreadingMixIn, WSGIServer):
    """A WSGI server that binds without looking anything up.

    http.server's server_bind asks socket.getfqdn for a server name (a reverse DNS query), which against a
    resolver that does not answer stalls the coordinator's start for seconds; the name is only used in the
    WSGI environment, where the bound address does as well.
    """

    daemon_threads = True  # a scrape in flight never holds up the process's exit

    def server_bind(self):
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]
        self.setup_environ()


class _MetricsHTTPServer6(_MetricsHTTPServer):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    timeout = 10  # seconds a connection may sit idle: an idle one would otherwise hold its thread for good

    def log_message(self, format, *args):  # noqa: A002 - one line per scrape on stderr is noise
        pass


def serve(metrics: CoordinatorMetrics, address: str, port: int):
    """Serve /metrics on address:port (port 0 picks one) from a daemon thread; returns (http server, bound
    port). Stop it with `shutdown()`. Binding is the only network operation before it serves."""
    server_class = _MetricsHTTPServer6 if ":" in address else _MetricsHTTPServer  # an IPv6 literal, e.g. "::"
    server = server_class((address, port), _QuietHandler)
    server.set_app(make_wsgi_app(metrics.registry))
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return server, server.server_port


def _code_name(context: grpc.aio.ServicerContext) -> str:
    code = context.code()
    return (code or grpc.StatusCode.UNKNOWN).name


def _counting(func, counter):
    """A (de)serializer that also counts the bytes it reads or writes."""
    def run(value):
        result = func(value)
        counter.inc(len(value) if isinstance(value, (bytes, bytearray, memoryview)) else len(result))
        return result
    return run


class _RpcInterceptor(grpc.aio.ServerInterceptor):
    """Each aal.v1 call's latency and status, and the bytes its requests and responses carry."""

    def __init__(self, metrics: CoordinatorMetrics):
        self._m = metrics
        self._wrap = Memo(self._measured)

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None or details.method.startswith("/grpc."):
            return handler
        return self._wrap(handler, details.method.rsplit("/", 1)[-1])

    def _measured(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        latency, m = self._m.rpc, self._m
        in_flight = m.in_flight.labels(method)

        @contextlib.asynccontextmanager
        async def timed(request, context):
            t0 = time.perf_counter()
            code = "OK"
            in_flight.inc()
            try:
                yield
            except BaseException:
                code = _code_name(context) if context.code() is not None else "CANCELLED"
                raise
            finally:
                in_flight.dec()
                latency.labels(method, code).observe(time.perf_counter() - t0)

        if handler.request_deserializer is not None:
            handler = handler._replace(request_deserializer=_counting(handler.request_deserializer,
                                                                      m.request_bytes.labels(method)))
        if handler.response_serializer is not None:
            handler = handler._replace(response_serializer=_counting(handler.response_serializer,
                                                                     m.response_bytes.labels(method)))
        return replace_behavior(handler, lambda behavior: around(behavior, timed))
