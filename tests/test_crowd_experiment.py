"""A simulated crowd with careless members: each simulated annotator's answers are true at their accuracy (and a wrong
answer is never the truth), and aal-experiment runs such a crowd end to end with several labels per item, leaving an L
where every finished item has its labels from as many different annotators and the careless disagree with the truth
more often than the careful."""

import json
import random
import subprocess
import sys
from collections import defaultdict

import pytest
from click.testing import CliRunner

from aal_rpc.annotators.oracle import accuracy_of, answer, parse_accuracies
from aal_rpc.cli import annotate, experiment
from aal_rpc.data import load_dataset

CAREFUL, CARELESS = ("oracle-0", "oracle-1", "oracle-2", "oracle-3"), ("oracle-4", "oracle-5")


def test_a_careless_annotator_is_wrong_at_their_rate_and_never_wrong_with_the_truth():
    rng, draws, classes = random.Random(3), 2000, 10
    wrong = 0
    for k in range(draws):
        truth = k % classes
        label = answer(rng, truth, classes, 0.3)
        assert 0 <= label < classes
        wrong += label != truth
    # 70% wrong; the binomial's standard deviation over 2000 draws is 1 point, so 5 points either side never fails
    assert 0.65 <= wrong / draws <= 0.75
    # a wrong answer is drawn from the other classes, each as likely: accuracy 0 is never the truth and hits them all
    answers = [answer(rng, 4, classes, 0.0) for _ in range(500)]
    assert 4 not in answers and set(answers) == set(range(classes)) - {4}
    # a careful annotator draws nothing: their thinking times are those of an oracle without accuracies
    before = rng.getstate()
    assert answer(rng, 2, classes, 1.0) == 2 and rng.getstate() == before


def test_accuracies_are_probabilities_and_cycle_over_the_annotators():
    assert parse_accuracies("0.9, 0.3") == (0.9, 0.3) and parse_accuracies("") == ()
    assert [accuracy_of((0.9, 0.3), i) for i in range(4)] == [0.9, 0.3, 0.9, 0.3] and accuracy_of((), 5) == 1.0
    for bad in ("1.5", "-0.1", "nan", "0.9,often"):
        with pytest.raises(ValueError):
            parse_accuracies(bad)
    # the commands say so in one usage error, before starting anything
    r = CliRunner().invoke(annotate.main, ["--oracle", "--accuracy", "0.9,1.2"])
    assert r.exit_code == 2 and "[0, 1]" in r.output
    for args, says in ((["--annotator-accuracy", "2"], "[0, 1]"),
                       (["--annotators", "2", "--annotator-accuracy", "0.9,0.9,0.3"], "3 annotator accuracies"),
                       (["--annotators", "2", "--labels-per-item", "3"], "3 labels per item"),
                       (["--mode", "sync", "--labels-per-item", "2"], "async")):
        r = CliRunner().invoke(experiment.main, args)
        assert r.exit_code == 2 and says in r.output, (args, r.output)


@pytest.mark.e2e
def test_aal_experiment_runs_a_crowd_with_careless_members(tmp_path):
    out = tmp_path / "run"
    r = subprocess.run(
        [sys.executable, "-m", "aal_rpc.cli.experiment", "--dataset", "digits", "--model", "mlp", "--servers", "1",
         "--workers", "1", "--strategies", "entropy", "--annotators", "6",
         "--annotator-accuracy", "0.9,0.9,0.9,0.9,0.3,0.3", "--labels-per-item", "3", "--budget", "60",
         "--batch-size", "6", "--annotator-delay", "0", "--epochs", "2", "--min-steps", "0", "--eval-repeats", "0",
         "--quiet", "--out", str(out)], capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]

    labels = [json.loads(line) for line in (out / "labels.jsonl").read_text().splitlines()]
    assert len(labels) == 60
    by_item = defaultdict(list)
    for record in labels:
        by_item[record["item_id"]].append(record["annotator_id"])
    # an item is labeled by three different annotators, never one of them twice; only the last few may be unfinished
    assert all(len(set(who)) == len(who) <= 3 for who in by_item.values())
    finished = [item for item, who in by_item.items() if len(who) == 3]
    assert len(finished) >= 10

    truth = load_dataset("digits")
    wrong, given = defaultdict(int), defaultdict(int)
    for record in labels:
        given[record["annotator_id"]] += 1
        wrong[record["annotator_id"]] += record["label"] != truth.y_pool[truth.index_of(record["item_id"])]
    careful = sum(wrong[a] for a in CAREFUL) / sum(given[a] for a in CAREFUL)
    careless = sum(wrong[a] for a in CARELESS) / sum(given[a] for a in CARELESS)
    assert careless > careful, (careless, careful, dict(given))

    summary = json.loads((out / "summary.json").read_text())
    crowd = summary["crowd"]
    assert crowd["labels_per_item"] == 3 and crowd["annotator_accuracy"] == [0.9, 0.9, 0.9, 0.9, 0.3, 0.3]
    assert summary["config"]["labels_per_item"] == 3 and crowd["items_fully_labeled"] == len(finished)
    assert {a: (s["labels"], s["accuracy"]) for a, s in crowd["annotators"].items()} == {
        a: (n, 0.9 if a in CAREFUL else 0.3) for a, n in given.items()}
    assert summary["labels"] == summary["acknowledged"] == 60 and summary["final_model_version"] is not None
