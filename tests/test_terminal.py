"""The terminal annotator (aal-annotate without --oracle) as a person uses it, against a real gRPC coordinator."""

import numpy as np

from aal_rpc.annotators.terminal import run_terminal
from aal_rpc.client import AnnotationClient, CoordinatorClient
from aal_rpc.coordinator.app import create_coordinator_server
from aal_rpc.types import Payload, Task

TASK = Task(dataset="digits", num_classes=3, class_names=("cat", "dog", "two"), input_shape=(1, 8, 8),
            architecture="mlp", class_descriptions=("a small feline", "", "the digit 2"),
            guidelines="# How to label\n\nPick the **animal**.\n")


def test_the_person_reads_guidelines_and_descriptions_and_never_an_item_id(tmp_path):
    srv = create_coordinator_server("127.0.0.1:0", tmp_path / "data", TASK)
    address = f"127.0.0.1:{srv.port}"
    try:
        with CoordinatorClient(address, retry_for=5) as c:
            c.submit_candidates(worker_id="w", strategy="margin", model_version=0, candidates=[
                ("img-secret-class-two", Payload.from_array(np.zeros((1, 8, 8), np.float32)), 0.5)])
        answers = iter(["?", "2", "n"])  # the guide again, a label, and no more waiting
        prompts, said = [], []

        def ask(prompt):
            prompts.append(prompt)
            return next(answers)

        with AnnotationClient(address, "pat", retry_for=5) as client:
            assert run_terminal(client, ask=ask, say=said.append, wait_seconds=0) == 1
        shown = "\n".join(said + prompts)
        assert "secret" not in shown
        assert said[0] == ("# How to label\n\nPick the **animal**.\n\nclasses:\n  0  cat - a small feline\n"
                           "  1  dog\n  2  two - the digit 2")
        assert said.count(said[0]) == 2  # and again on "?"
        assert "\u2580" in shown and "proposed by margin with model v0" in shown
        with CoordinatorClient(address, retry_for=5) as c:
            assert [(r.item_id, r.label) for r in c.export(include_payload=False)] == [("img-secret-class-two", 2)]
    finally:
        srv.stop(0)
