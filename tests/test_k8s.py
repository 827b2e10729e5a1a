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
COMMANDS = {"aal-coordinator": coordinator.main, "aal-server": server.main, "aal-worker": worker.main,
            "aal-annotate": annotate.main, "aal-admin": admin.main}


def documents():
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                yield path.name, doc


@pytest.mark.parametrize("name, doc", list(documents()), ids=lambda x: x if isinstance(x, str) else x["kind"])
def test_manifest_is_valid(name, doc):
    kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_kustomization_lists_every_manifest():
    k = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert set(k["resources"]) == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}


def _workloads():
    return [doc for _, doc in documents() if doc["kind"] in ("Deployment", "StatefulSet")]


def test_workloads_match_the_design():
    kinds = {d["metadata"]["name"]: d for d in _workloads()}
    coord = kinds["aal-coordinator"]
    assert coord["kind"] == "StatefulSet" and coord["spec"]["volumeClaimTemplates"]
    c = coord["spec"]["template"]["spec"]["containers"][0]
    assert c["readinessProbe"]["grpc"]["port"] == 50051 and c["livenessProbe"]["grpc"]["port"] == 50051
    assert kinds["aal-server"]["kind"] == "Deployment"
    assert kinds["aal-worker"]["kind"] == "StatefulSet"
    for d in _workloads():
        assert d["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    config = next(doc for _, doc in documents() if doc["kind"] == "ConfigMap")["data"]
    assert int(config["AAL_NUM_SHARDS"]) == kinds["aal-worker"]["spec"]["replicas"]


def test_container_commands_are_accepted_by_their_cli(tmp_path):
    config = next(doc for _, doc in documents() if doc["kind"] == "ConfigMap")["data"]
    values = {**config, "POD_NAME": "pod-0", "POD_INDEX": "0"}
    for d in _workloads():
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
