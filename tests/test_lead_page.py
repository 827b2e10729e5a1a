"""The lead's page in aal-web (/lead) on a running system: an admin token sees the job's figures, and they are the
ones `aal-admin stats --json` prints; any other token is refused, saying the page needs an admin token."""

import json
import os

import numpy as np
import torch
from click.testing import CliRunner

from aal_rpc.chunking import sha256_hex
from aal_rpc.cli import admin
from aal_rpc.client import AnnotationClient
from aal_rpc.coordinator.app import create_coordinator_server
from aal_rpc.coordinator.contract import CoordinatorConfig
from aal_rpc.measures import AUDIT_CORRECT, AUDIT_LABELS, POOL_ITEMS, STOP_SET_AGREEMENT
from aal_rpc.models import build_model
from aal_rpc.security import ClientSecurity, Principal
from aal_rpc.serde import weights_to_bytes
from tests.conftest import TASK
from tests.test_web import browsers, queue_digits, start_web  # noqa: F401 - browsers: the fixture

TOKENS = {"tok-admin": Principal("admin"), "tok-alice": Principal("annotator", "alice"),
          "tok-bob": Principal("annotator", "bob"), "tok-worker": Principal("worker")}
SCREENSHOT_ENV = "AAL_LEAD_SCREENSHOT"  # a path: the test saves the page there (docs/lead.png)


def work(address, srv):
    """A job under way: alice labels 5 and skips one, bob labels 3 and defers one; three models, the accuracy
    estimated on audit labels, the stop set's agreement reported."""
    queue_digits(address, range(40), security=ClientSecurity(token="tok-worker"))
    for who, labels, how in (("alice", 5, "skip"), ("bob", 3, "defer")):
        with AnnotationClient(address, "", security=ClientSecurity(token=f"tok-{who}")) as a:
            for _ in range(labels):
                q = a.lease()
                a.submit(q, int(q.item_id) % 10)
            getattr(a, how)(a.lease())
    torch.manual_seed(0)
    data = weights_to_bytes(build_model(TASK.architecture, TASK.input_shape, TASK.num_classes).state_dict())
    for version, (labels, audit, kappa) in enumerate(((2, 0.60, None), (5, 0.80, 0.90), (8, 0.85, 0.995)), 1):
        metrics = {"accuracy": audit + 0.05, POOL_ITEMS: 1797.0, AUDIT_CORRECT: audit * 40, AUDIT_LABELS: 40.0}
        if kappa is not None:
            metrics[STOP_SET_AGREEMENT] = kappa
        srv.coordinator.publish_model(data=data, server_id=f"s{version % 2}", trained_seq=labels, num_labels=labels,
                                      architecture=TASK.architecture, metrics=metrics, sha256=sha256_hex(data))


def test_the_lead_sees_the_jobs_figures_and_nobody_else_does(tmp_path, procs, browsers):
    srv = create_coordinator_server("127.0.0.1:0", tmp_path / "data", TASK, CoordinatorConfig(lease_seconds=30),
                                    tokens=TOKENS)
    address = f"127.0.0.1:{srv.port}"
    try:
        work(address, srv)
        web = start_web(procs, address)
        page = browsers()
        page.driver.get(f"http://{web}/lead")
        page.wait(lambda: page.el("login").is_displayed(), "the token form")
        page.el("token").send_keys("tok-alice")
        page.el("login").submit()
        page.wait(lambda: "admin token" in page.el("error").text, "an annotator's token refused")
        assert not page.el("job").is_displayed()

        page.el("token").send_keys("tok-admin")
        page.el("login").submit()
        page.wait(lambda: page.el("job").is_displayed() and page.el("labeled").text == "8", "the job's figures")
        result = CliRunner().invoke(admin.main, ["--coordinator", address, "--token", "tok-admin", "stats", "--json"])
        assert result.exit_code == 0, result.output
        d = json.loads(result.output)

        def value(element_id):
            return page.el(element_id).get_attribute("data-value")

        assert (d["labeled"], d["skipped"], d["pool_items"], d["remaining"]) == (8, 1, 1797, 1797 - 8 - 1)
        for element_id, key in (("labeled", "labeled"), ("queued", "queued"), ("leased", "leased"),
                                ("skipped", "skipped"), ("remaining", "remaining"), ("pool", "pool_items")):
            assert value(element_id) == str(d[key]), element_id
        assert float(value("model-share")) == d["chosen_by_model_share"]
        rows = page.driver.find_elements(page.by.CSS_SELECTOR, "#annotators tbody tr")
        shown = {r.get_attribute("data-annotator"): tuple(int(r.get_attribute(f"data-{k}"))
                                                          for k in ("labels", "skips", "defers")) for r in rows}
        assert shown == {a: (c["labels"], c["skips"], c["defers"]) for a, c in d["annotators"].items()}
        assert shown == {"alice": (5, 1, 0), "bob": (3, 0, 1)}
        origins = {r.get_attribute("data-origin"): int(r.get_attribute("data-count"))
                   for r in page.driver.find_elements(page.by.CSS_SELECTOR, "#origins tbody tr")}
        assert origins == {k: v for k, v in d["label_origins"].items() if k != "model_strategies" and v}
        versions = [int(r.get_attribute("data-version"))
                    for r in page.driver.find_elements(page.by.CSS_SELECTOR, "#models tbody tr")]
        assert versions == [m["version"] for m in d["recent_models"]] == [3, 2, 1]
        assert page.el("curve").find_element(page.by.TAG_NAME, "svg").get_attribute("data-points") == str(
            len(d["curve"])) == "3"
        assert page.el("stopping").get_attribute("data-suggested") == "false" and not d["stopping"]["suggested"]
        assert d["stopping"]["reason"] == "keep going: " + page.el("stopping-reason").text
        assert "Keep going" in page.el("stopping-verdict").text
        if os.environ.get(SCREENSHOT_ENV):
            page.driver.set_window_size(1100, 1900)
            page.driver.save_screenshot(os.environ[SCREENSHOT_ENV])
    finally:
        srv.stop(0)
