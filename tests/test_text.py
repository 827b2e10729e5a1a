"""Text items: jsonl/csv datasets, the hashed n-gram tensor, the `text` model learning, strategies on it."""

import json
import subprocess
import sys
import zlib

import numpy as np
import pytest
import torch

from aal_rpc.data import load_dataset
from aal_rpc.data.text import MAX_TOKENS, NUM_BUCKETS, TEXT_LENGTH, encode_text
from aal_rpc.models import build_model, expected_shapes
from aal_rpc.serde import weights_from_bytes, weights_to_bytes
from aal_rpc.strategies import get_strategy
from aal_rpc.training import evaluate, predict_proba, train

TOPICS = {
    "cooking": "recipe oven flour butter sauce garlic bake onion salt pan dinner taste".split(),
    "finance": "stock market bank interest loan price investor bond profit shares trade tax".split(),
    "space": "rocket orbit planet star galaxy astronaut moon launch telescope comet nasa mars".split(),
    "sports": "goal match team player coach season league score referee stadium ball win".split(),
}
FILLER = "the a of and to in is was it for on with as at by this that from very new some".split()


def topic_sentences(n: int, seed: int = 0) -> list[dict]:
    """n sentences, each mostly filler with some words of its topic: learnable only from the topic words."""
    rng = np.random.default_rng(seed)
    names = sorted(TOPICS)
    rows = []
    for i in range(n):
        topic = names[rng.integers(len(names))]
        words = [rng.choice(TOPICS[topic]) if rng.random() < 0.3 else rng.choice(FILLER)
                 for _ in range(rng.integers(6, 14))]
        rows.append({"id": f"doc-{i}", "text": " ".join(words).capitalize() + ".", "label": topic})
    return rows


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return f"jsonl:{path}"


def bucket(gram: str) -> int:
    return 1 + zlib.crc32(gram.encode()) % (NUM_BUCKETS - 1)


def test_a_text_becomes_its_unigram_and_bigram_buckets_in_reading_order():
    x = encode_text("Hello, World! hello")
    assert x.dtype == np.int64 and x.shape == (TEXT_LENGTH,)
    expected = [bucket("hello"), bucket("world"), bucket("hello world"), bucket("hello"), bucket("world hello")]
    assert x[:5].tolist() == expected
    assert not x[5:].any()  # padded with 0, which no n-gram maps to
    assert np.array_equal(encode_text("HELLO world  hello"), x)
    assert not encode_text("").any() and not encode_text("...").any()


def test_long_texts_are_cut_at_max_tokens():
    words = [f"w{i}" for i in range(3 * MAX_TOKENS)]
    x = encode_text(" ".join(words))
    assert x.shape == (TEXT_LENGTH,)
    assert (x[:2 * MAX_TOKENS - 1] >= 1).all() and x.max() < NUM_BUCKETS and not x[2 * MAX_TOKENS - 1:].any()
    assert np.array_equal(x, encode_text(" ".join(words[:MAX_TOKENS])))


def test_encoding_is_the_same_in_every_process():
    """crc32, not Python's salted hash(): workers and trainers in other processes must agree."""
    code = "from aal_rpc.data.text import encode_text; print(encode_text('Stable across processes, truly').tolist())"
    outs = {subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                           env={"PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")}
    assert len(outs) == 1
    assert json.loads(outs.pop()) == encode_text("Stable across processes, truly").tolist()


def test_jsonl_with_class_names_ids_and_its_own_split(tmp_path):
    rows = [{"id": "a", "text": "good film", "label": "pos", "split": "train"},
            {"id": "b", "text": "bad film", "label": "neg", "split": "train"},
            {"id": "c", "text": "dull plot", "label": "neg", "split": "test"},
            {"id": "d", "text": "great cast", "label": "pos", "split": "train"}]
    ds = load_dataset(write_jsonl(tmp_path / "r.jsonl", rows))
    assert ds.class_names == ("neg", "pos")  # sorted
    assert ds.item_ids == ("a", "b", "d") and ds.texts == ("good film", "bad film", "great cast")
    assert ds.y_pool.tolist() == [1, 0, 1] and ds.y_test.tolist() == [0]
    assert ds.input_shape == (TEXT_LENGTH,) and ds.x_pool.dtype == np.int64
    assert np.array_equal(ds.x_pool[ds.index_of("b")], encode_text("bad film"))
    assert np.array_equal(ds.x_test[0], encode_text("dull plot"))


def test_jsonl_without_ids_or_split_uses_rows_and_the_fixed_split(tmp_path):
    rows = [{"text": f"item {i}", "label": i % 3} for i in range(20)]
    ds = load_dataset(write_jsonl(tmp_path / "r.jsonl", rows))
    assert ds.class_names == ("0", "1", "2")
    assert len(ds.x_pool) == 15 and len(ds.x_test) == 5
    assert ds.item_ids == tuple(str(i) for i in range(15))
    for row, text in enumerate(ds.texts):  # each pool text is its own row's, label included
        assert np.array_equal(ds.x_pool[row], encode_text(text))
        assert ds.y_pool[row] == int(text.split()[1]) % 3


def test_csv_with_names_and_with_integer_labels(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text('id,text,label,split\nx1,"a, quoted text",spam,train\nx2,plain text,ham,test\n'
                    'x3,more,spam,train\nx4,yet more,ham,train\n')
    ds = load_dataset(f"csv:{path}")
    assert ds.class_names == ("ham", "spam")
    assert ds.item_ids == ("x1", "x3", "x4") and ds.texts == ("a, quoted text", "more", "yet more")
    assert ds.y_pool.tolist() == [1, 1, 0] and ds.y_test.tolist() == [0]
    path.write_text("text,label,split\nfirst,2,train\nsecond,0,train\nthird,1,test\n")
    ds = load_dataset(f"csv:{path}")
    assert ds.class_names == ("0", "1", "2") and ds.y_pool.tolist() == [2, 0] and ds.y_test.tolist() == [1]
    assert ds.item_ids == ("0", "1")


@pytest.mark.parametrize("rows, match", [
    ([{"id": "a", "text": "x", "label": "p"}, {"id": "a", "text": "y", "label": "q"}], "duplicate id 'a'"),
    ([{"id": "a", "text": "x", "label": "p"}, {"text": "y", "label": "q"}], "no id"),
    ([{"text": "x", "label": "p"}, {"text": "y", "label": 1}], "not a mix"),
    ([{"text": "x", "label": True}], "class name or an integer"),
    ([{"text": "x", "label": "p", "split": "dev"}], "split must be one of"),
    ([{"text": 3, "label": "p"}], "text must be a string"),
    ([{"id": "a" * 257, "text": "x", "label": "p", "split": "train"}], "longer than 256"),
    ([{"id": "a\x00b", "text": "x", "label": "p", "split": "train"}], "NUL"),
])
def test_bad_text_files_are_clear_errors(tmp_path, rows, match):
    with pytest.raises(ValueError, match=match):
        load_dataset(write_jsonl(tmp_path / "r.jsonl", rows))


def test_csv_without_a_text_column_is_a_clear_error(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("body,label\nx,1\n")
    with pytest.raises(ValueError, match="name a text column"):
        load_dataset(f"csv:{path}")


@pytest.fixture(scope="module")
def topics(tmp_path_factory):
    return load_dataset(write_jsonl(tmp_path_factory.mktemp("text") / "topics.jsonl", topic_sentences(400)))


def test_text_model_learns_topics_and_its_weights_round_trip(topics):
    assert set(expected_shapes("text", topics.input_shape, 4)) == set(build_model("text", topics.input_shape, 4)
                                                                      .state_dict())
    torch.manual_seed(0)
    model = build_model("text", topics.input_shape, topics.num_classes)
    before = evaluate(model, topics.x_test, topics.y_test)["accuracy"]
    train(model, topics.x_pool, topics.y_pool, epochs=20, batch_size=32)
    after = evaluate(model, topics.x_test, topics.y_test)["accuracy"]
    assert after >= 0.8 > before + 0.3  # chance is 0.25
    # as a trainer publishes it and a worker loads it, bucket ids that travelled as float32 included
    loaded = build_model("text", topics.input_shape, topics.num_classes)
    loaded.load_state_dict(weights_from_bytes(weights_to_bytes(model.state_dict())))
    p1, _ = predict_proba(model, topics.x_test)
    p2, _ = predict_proba(loaded, topics.x_test.astype(np.float32))
    np.testing.assert_allclose(p1, p2, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["entropy", "least_confidence", "margin", "cluster_margin", "random"])
def test_strategies_run_unchanged_on_text(topics, name):
    torch.manual_seed(0)
    model = build_model("text", topics.input_shape, topics.num_classes)
    train(model, topics.x_pool[:100], topics.y_pool[:100], epochs=5, batch_size=32)
    strategy = get_strategy(name, seed=0)
    rest = np.arange(100, len(topics.x_pool))
    probs, emb = predict_proba(model, topics.x_pool[rest], with_embeddings=strategy.needs_embeddings)
    ids = np.array(topics.item_ids)[rest]
    if strategy.needs_embeddings:
        assert emb.shape == (len(rest), model.embedding_dim)
        strategy.prepare(embeddings=emb, item_ids=ids, model_version=1)
    sel = strategy.select(probs, 10, embeddings=emb, item_ids=ids)
    assert len(sel.indices) == 10 == len(set(sel.indices.tolist()))
    assert all(0 <= i < len(rest) for i in sel.indices)
    if name == "entropy":  # the most uncertain texts under the text model
        h = -(probs * np.log(np.clip(probs, 1e-12, 1))).sum(1)
        assert h[sel.indices].min() >= np.delete(h, sel.indices).max() - 1e-6


@pytest.mark.e2e
def test_a_text_dataset_runs_end_to_end(tmp_path):
    """aal-experiment on a jsonl file: workers propose texts by their ids, annotators label them, trainers learn the
    text model from L, and the texts reach the annotators."""
    from aal_rpc.experiment import ExperimentConfig, run_experiment

    name = write_jsonl(tmp_path / "reviews.jsonl", topic_sentences(400))
    cfg = ExperimentConfig(dataset=name, model="text", servers=1, workers=2, strategies=["entropy", "margin"],
                           annotators=3, budget=60, batch_size=10, annotator_delay=0.02, epochs=20, min_steps=200,
                           out=str(tmp_path / "run"))
    summary = run_experiment(cfg, progress=False)
    assert summary["labels"] == summary["acknowledged"] == 60
    assert summary["model_versions"] >= 1 and summary["final_accuracy"] > 0.4  # four topics: chance is 0.25
    logs = list((tmp_path / "run" / "logs").glob("*.log"))
    assert logs and not [p for p in logs if "Traceback" in p.read_text()]
