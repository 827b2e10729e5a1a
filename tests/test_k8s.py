"""The Kubernetes manifests validate offline (strict), and every container's command line is accepted by the
CLI it names."""

import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from aal_rpc.cli import admin, annotate, coordinator, server, worker

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "k8s"
SHARED = K8S / "shared-store"  # overlay: coordinator replicas on PostgreSQL
COMMANDS = {"aal-coordinator": coordinator.main, "aal-server": server.main, "aal-worker": worker.main,
            "aal-annotate": annotate.main, "aal-admin": admin.main}


def documents(folder: Path = K8S):
    """The resources of a kustomization folder (not the kustomization itself, not its delete patches)."""
    for path in sorted(folder.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and "$patch" not in doc:
                yield path.name, doc


@pytest.mark.parametrize("name, doc", [*documents(), *documents(SHARED)],
                         ids=lambda x: x if isinstance(x, str) else x["kind"])
def test_manifest_is_valid(name, doc):
    kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_kustomization_lists_every_manifest():
    k = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert set(k["resources"]) == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    shared = yaml.safe_load((SHARED / "kustomization.yaml").read_text())
    patches = {p["path"] for p in shared["patches"]}
    assert set(shared["resources"]) | patches == {"../"} | {p.name for p in SHARED.glob("*.yaml")} - {
        "kustomization.yaml"}


def _workloads(folder: Path = K8S):
    return [doc for _, doc in documents(folder) if doc["kind"] in ("Deployment", "StatefulSet")]


def test_shared_store_overlay_runs_stateless_coordinator_replicas():
    [deleted] = [yaml.safe_load((SHARED / p["path"]).read_text())
                 for p in yaml.safe_load((SHARED / "kustomization.yaml").read_text())["patches"]]
    assert (deleted["$patch"], deleted["kind"], deleted["metadata"]["name"]) == ("delete", "StatefulSet",
                                                                                 "aal-coordinator")
    [coord] = _workloads(SHARED)
    assert coord["kind"] == "Deployment" and "replicas" not in coord["spec"]  # the autoscaler owns the count
    service = next(doc for _, doc in documents() if doc["kind"] == "Service" and doc["metadata"]["name"] ==
                   "aal-coordinator")
    assert service["spec"]["selector"].items() <= coord["spec"]["template"]["metadata"]["labels"].items()
    c = coord["spec"]["template"]["spec"]["containers"][0]
    assert "--store=$(AAL_STORE)" in c["args"] and not any(a.startswith("--data-dir") for a in c["args"])
    assert {"secretRef": {"name": "aal-store"}} in c["envFrom"]


def test_coordinator_replicas_scale_on_open_sessions_and_cpu():
    """The autoscaler keeps at least two replicas and scales them on the metric the coordinator exports for open
    annotation sessions (through the adapter rule shipped beside it) and on CPU, which the pods request."""
    [hpa] = [doc for _, doc in documents(SHARED) if doc["kind"] == "HorizontalPodAutoscaler"]
    [coord] = _workloads(SHARED)
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == (coord["kind"], coord["metadata"]["name"])
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    by_type = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert by_type["Resource"]["resource"]["name"] == "cpu"
    assert "cpu" in coord["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]
    sessions = by_type["Pods"]["pods"]["metric"]["name"]
    adapter = next(doc for _, doc in documents(SHARED) if doc["kind"] == "ConfigMap" and
                   doc["metadata"]["name"] == "aal-prometheus-adapter-rules")
    [rule] = [r for r in yaml.safe_load(adapter["data"]["config.yaml"])["rules"] if r["name"]["as"] == sessions]
    assert 'method="AnnotationSession"' in rule["seriesQuery"] and 'method="AnnotationSession"' in rule["metricsQuery"]
    series = re.match(r"(\w+)\{", rule["seriesQuery"]).group(1)
    assert re.fullmatch(rule["name"]["matches"], series)
    from aal_rpc.coordinator.metrics import CoordinatorMetrics  # the coordinator exports that series
    assert series in {m.name for m in CoordinatorMetrics().registry.collect()}
    pod = coord["spec"]["template"]["metadata"]["annotations"]
    assert pod["prometheus.io/scrape"] == "true"


def test_workloads_match_the_design():
    kinds = {d["metadata"]["name"]: d for d in _workloads()}
    coord = kinds["aal-coordinator"]
    assert coord["kind"] == "StatefulSet" and coord["spec"]["volumeClaimTemplates"]
    assert kinds["aal-server"]["kind"] == "Deployment"
    assert kinds["aal-worker"]["kind"] == "StatefulSet"
    for d in _workloads():
        assert d["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    config = next(doc for _, doc in documents() if doc["kind"] == "ConfigMap")["data"]
    assert int(config["AAL_NUM_SHARDS"]) == kinds["aal-worker"]["spec"]["replicas"]


def _arg(container: dict, flag: str) -> str | None:
    values = [a.partition("=")[2] for a in container.get("args", []) if a.partition("=")[0] == flag]
    assert len(values) <= 1, f"{flag} given twice"
    return values[0] if values else None


def _secret_behind(pod: dict, container: dict, path: str) -> tuple[str, set[str]]:
    """(Secret name, the keys the volume projects) of the secret volume that `path` lies in."""
    [mount] = [m for m in container.get("volumeMounts", []) if path.startswith(m["mountPath"].rstrip("/") + "/")]
    [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    keys = {i["path"] for i in volume["secret"]["items"]}
    assert path.removeprefix(mount["mountPath"].rstrip("/") + "/") in keys, f"{path} is not projected"
    return volume["secret"]["secretName"], keys


@pytest.mark.parametrize("folder", [K8S, SHARED], ids=["k8s", "shared-store"])
def test_coordinator_serves_tls_and_probes_a_plaintext_health_port(folder):
    """Tokens never cross the network in the clear; kubelet's gRPC probes, which cannot speak TLS, ask the
    coordinator's health-only port, and nothing routes other traffic there."""
    [coord] = [d for d in _workloads(folder) if d["metadata"]["name"] == "aal-coordinator"]
    pod = coord["spec"]["template"]["spec"]
    [c] = pod["containers"]
    assert _arg(c, "--tokens-file")
    assert _secret_behind(pod, c, _arg(c, "--tls-cert"))[0] == "aal-tls"
    assert _secret_behind(pod, c, _arg(c, "--tls-key"))[0] == "aal-tls"
    health = int(_arg(c, "--health-port"))
    assert c["readinessProbe"]["grpc"]["port"] == health and c["livenessProbe"]["grpc"]["port"] == health
    assert {"name": "health", "containerPort": health} in c["ports"]
    service = next(doc for _, doc in documents() if doc["kind"] == "Service")
    assert health not in {p["port"] for p in service["spec"]["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= {"grpc", "metrics"}


def test_clients_verify_the_coordinator_with_the_ca_only():
    tls = next(doc for _, doc in documents() if doc["kind"] == "Secret" and doc["metadata"]["name"] == "aal-tls")
    assert {"tls.crt", "tls.key", "ca.crt"} <= tls["stringData"].keys()
    clients = [d for d in _workloads() if d["metadata"]["name"] != "aal-coordinator"]
    assert {d["metadata"]["name"] for d in clients} == {"aal-server", "aal-worker"}
    for d in clients:
        pod = d["spec"]["template"]["spec"]
        for c in pod["containers"]:
            assert _secret_behind(pod, c, _arg(c, "--tls-ca")) == ("aal-tls", {"ca.crt"}), d["metadata"]["name"]
            assert any(e["name"] == "AAL_TOKEN" for e in c["env"])


def test_container_commands_are_accepted_by_their_cli(tmp_path):
    config = next(doc for _, doc in documents() if doc["kind"] == "ConfigMap")["data"]
    store = next(doc for _, doc in documents(SHARED) if doc["kind"] == "Secret")["stringData"]
    values = {**config, **store, "POD_NAME": "pod-0", "POD_INDEX": "0"}
    for d in [*_workloads(), *_workloads(SHARED)]:
        for c in d["spec"]["template"]["spec"]["containers"]:
            [name] = c["command"]
            args = []
            for arg in c.get("args", []):
                arg = re.sub(r"\$\((\w+)\)", lambda m: values[m.group(1)], arg)
                flag, eq, value = arg.partition("=")
                if eq and value.startswith("/etc/aal/"):  # mounted from the Secret in the cluster
                    local = tmp_path / Path(value).name
                    local.write_text("admin:test-token\n")
                    arg = f"{flag}={local}"
                args.append(arg)
            with COMMANDS[name].make_context(name, args) as ctx:
                assert ctx.params


def test_dockerfile_is_multi_stage_and_non_root():
    text = (ROOT / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) >= 2
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")
