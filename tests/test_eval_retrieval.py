"""`hpd eval retrieval` and mteb's SciFact on local BEIR files: metrics by hand, faiss indexes against brute force,
the document-vector cache, bad input as one line, offline."""

import json
import math
import random

import numpy as np
import pytest

from conftest import WORDS, tiny_model
from hpd_models import save_hpd_folder
from hpd_inference import weights_sha256

faiss = pytest.importorskip("faiss", reason="faiss-cpu is not installed: pip install -e '.[retrieval]'")


def _text(rng, low=3, high=12):
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))


def write_beir(folder, documents=40, queries=12, seed=0):
    """A tiny BEIR folder; each judged query borrows words from its one or two relevant documents (grades 1 and 2),
    three queries have no judgement (another split's, as in BEIR) and two documents have no title."""
    rng = random.Random(seed)
    (folder / "qrels").mkdir(parents=True)
    # a number in each text keeps the documents distinct (equal texts would tie)
    docs = [{"_id": f"d{i}", "title": "" if i in (3, 7) else _text(rng, 1, 3), "text": f"{i} {_text(rng)}",
             "metadata": {}} for i in range(documents)]
    (folder / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    lines, rows = ["query-id\tcorpus-id\tscore"], []
    for q in range(queries + 3):
        relevant = rng.sample(range(documents), rng.randint(1, 2))
        words = " ".join(docs[relevant[0]]["text"].split()[:4]) + " " + _text(rng, 1, 3)
        rows.append({"_id": f"q{q}", "text": words, "metadata": {}})
        if q < queries:  # the last three stay unjudged
            lines += [f"q{q}\td{i}\t{grade}" for i, grade in zip(relevant, (1, 2))]
    (folder / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (folder / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


@pytest.fixture
def tiny_hpd(tmp_path, tokenizer):
    folder = tmp_path / "tiny-hpd"
    save_hpd_folder(tiny_model(seed=5, pooling="mean", max_seq_length=32), tokenizer, folder)
    return folder


# --- metrics ---------------------------------------------------------------------------------------------------


def test_ndcg_and_recall_by_hand_with_graded_relevance():
    from hpd_toolkit.eval.retrieval import retrieval_scores

    qrels = {
        "q1": {"d1": 2, "d2": 1, "d3": 0},  # graded; d3 judged not relevant
        "q2": {"d4": 1, "d5": 1},  # d5 is ranked 101st: outside Recall@100
        "q3": {"d6": 1},  # no results at all: scores 0
    }
    run = {
        "q1": {"x": 0.9, "d2": 0.8, "d1": 0.7, "d3": 0.6},
        "q2": {"d4": 0.99, **{f"y{i}": 0.5 - i / 1000 for i in range(99)}, "d5": 0.1},
    }
    scores = retrieval_scores(run, qrels)

    # trec_eval's nDCG: linear gain (the grade itself), discount log2(rank + 1)
    q1_dcg = 0 / math.log2(2) + 1 / math.log2(3) + 2 / math.log2(4) + 0 / math.log2(5)
    q1_ideal = 2 / math.log2(2) + 1 / math.log2(3)
    q2_dcg, q2_ideal = 1 / math.log2(2), 1 / math.log2(2) + 1 / math.log2(3)
    assert q1_dcg / q1_ideal == pytest.approx(0.619906, abs=1e-6)  # the hand value, not only the formula
    assert scores["ndcg_at_10"] == pytest.approx((q1_dcg / q1_ideal + q2_dcg / q2_ideal + 0) / 3, abs=1e-9)
    # Recall@100: q1 finds both relevant (d3 is grade 0), q2 one of two in its top 100, q3 none
    assert scores["recall_at_100"] == pytest.approx((1 + 0.5 + 0) / 3, abs=1e-9)

    # exponential gain (2^grade - 1) would give another value: the grade-2 document must count exactly twice
    exponential = (1 / math.log2(3) + 3 / math.log2(4)) / (3 + 1 / math.log2(3))
    assert retrieval_scores({"q1": run["q1"]}, {"q1": qrels["q1"]})["ndcg_at_10"] != pytest.approx(exponential)


def test_ndcg_cuts_at_ten():
    from hpd_toolkit.eval.retrieval import retrieval_scores

    run = {"q": {**{f"x{i}": 1 - i / 100 for i in range(10)}, "d": 0.5}}  # the relevant one is 11th
    assert retrieval_scores(run, {"q": {"d": 1}}) == {"ndcg_at_10": 0.0, "recall_at_100": 1.0}


# --- indexes ---------------------------------------------------------------------------------------------------


def _unit(rng, rows, dim):
    vectors = rng.standard_normal((rows, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_flat_index_returns_exactly_the_brute_force_top_k():
    from hpd_toolkit.eval.retrieval import VectorIndex

    rng = np.random.default_rng(0)
    corpus, queries = _unit(rng, 600, 64), _unit(rng, 25, 64)
    exact = queries @ corpus.T
    expected = np.argsort(-exact, axis=1, kind="stable")[:, :50]

    scores, ids = VectorIndex(corpus, "flat", "float32").search(queries, 50)
    assert (ids == expected).all()
    np.testing.assert_allclose(scores, np.take_along_axis(exact, expected, 1), atol=1e-5)

    # binary flat: the brute-force top-k by Hamming distance (ties may come in any order, so compare the distances)
    bits = lambda x: np.where(x > 0, 1, -1)  # noqa: E731
    signs = bits(queries) @ bits(corpus).T
    scores, ids = VectorIndex(corpus, "flat", "binary").search(queries, 50)
    np.testing.assert_array_equal(scores, -np.sort(-signs, axis=1)[:, :50])
    np.testing.assert_array_equal(np.take_along_axis(signs, ids, 1), scores)

    # int8 flat: the brute-force top-k over the decoded codes (float query against each stored 8-bit vector)
    index = VectorIndex(corpus, "flat", "int8")
    decoded = index.index.sa_decode(index.index.sa_encode(corpus))
    approx = queries @ decoded.T
    scores, ids = index.search(queries, 50)
    np.testing.assert_allclose(scores, -np.sort(-approx, axis=1)[:, :50], atol=1e-4)
    np.testing.assert_allclose(np.take_along_axis(approx, ids, 1), scores, atol=1e-4)


def test_binary_and_int8_round_trip():
    from hpd_toolkit.eval.retrieval import VectorIndex

    rng = np.random.default_rng(1)
    corpus = _unit(rng, 300, 32)
    # binary: one bit per dimension, the sign; every stored vector finds itself at Hamming distance 0
    binary = VectorIndex(corpus, "flat", "binary")
    codes = binary._codes(corpus)
    assert codes.dtype == np.uint8 and codes.shape == (300, 4)
    np.testing.assert_array_equal(np.unpackbits(codes, axis=1).astype(bool), corpus > 0)
    scores, ids = binary.search(corpus, 1)
    assert (scores[:, 0] == 32).all() and (ids[:, 0] == np.arange(300)).all()
    # int8: each dimension decodes to within one step of its corpus range
    int8 = VectorIndex(corpus, "flat", "int8")
    decoded = int8.index.sa_decode(int8.index.sa_encode(corpus))
    step = (corpus.max(0) - corpus.min(0)) / 255
    assert (np.abs(decoded - corpus) <= step + 1e-6).all()
    assert (int8.search(corpus, 1)[1][:, 0] == np.arange(300)).all()
    # hnsw on either precision keeps the same codes
    assert (VectorIndex(corpus, "hnsw", "binary").search(corpus, 1)[1][:, 0] == np.arange(300)).all()


def test_rescoring_reranks_candidates_by_exact_cosine():
    from hpd_toolkit.eval.retrieval import VectorIndex

    rng = np.random.default_rng(2)
    corpus = _unit(rng, 500, 64)
    queries = corpus[:20] + 0.3 * _unit(rng, 20, 64)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    for precision in ("binary", "int8"):
        plain = VectorIndex(corpus, "flat", precision).search(queries, 200)[1]
        scores, ids = VectorIndex(corpus, "flat", precision, rescore=200).search(queries, 100)
        np.testing.assert_allclose(scores, np.einsum("qkd,qd->qk", corpus[ids], queries), atol=1e-6)
        assert (np.diff(scores, axis=1) <= 0).all()
        assert all(set(row) <= set(candidates) for row, candidates in zip(ids, plain))  # only re-ranked, no new ones
        assert (ids[:, 0] == np.arange(20)).all()


@pytest.mark.parametrize("index_type", ["flat", "hnsw"])
@pytest.mark.parametrize("precision", ["float32", "int8", "binary"])
def test_index_bytes_agree_with_the_serialised_index(index_type, precision):
    from hpd_toolkit.eval.retrieval import VectorIndex

    index = VectorIndex(_unit(np.random.default_rng(3), 2000, 64), index_type, precision)
    serialise = faiss.serialize_index_binary if precision == "binary" else faiss.serialize_index
    assert abs(index.bytes() - serialise(index.index).size) <= 200  # the file header
    assert index.vector_bytes == {"float32": 256, "int8": 64, "binary": 8}[precision]
    if index_type == "flat":
        assert index.bytes() - index.vector_bytes * 2000 == (64 * 2 * 4 if precision == "int8" else 0)


# --- the command ----------------------------------------------------------------------------------------------


def _count_encodings(monkeypatch):
    """Patches the encoder helper used for the corpus and the batched queries; returns the list of text lists."""
    from hpd_toolkit.eval import retrieval

    calls, original = [], retrieval.encode_by_length
    monkeypatch.setattr(retrieval, "encode_by_length",
                        lambda encoder, texts, *a, **k: (calls.append(list(texts)), original(encoder, texts, *a, **k))[1])
    return calls


def test_command_scores_writes_json_and_reuses_the_document_cache(tmp_path, tiny_hpd, monkeypatch, capsys):
    import hpd_cli
    from hpd_toolkit.eval.retrieval import document_texts, load_beir

    data = write_beir(tmp_path / "scifact-mini")
    documents = document_texts(load_beir(data))
    calls = _count_encodings(monkeypatch)
    base = ["eval", "retrieval", "--model", str(tiny_hpd), "--data", str(data), "--cache-dir", str(tmp_path / "cache")]

    assert hpd_cli.main([*base, "--output", str(tmp_path / "flat.json")]) == 0
    out = capsys.readouterr().out
    assert "nDCG@10" in out and "Recall@100" in out and f"Wrote {tmp_path / 'flat.json'}" in out
    flat = json.loads((tmp_path / "flat.json").read_text())
    assert [c == documents for c in calls] == [True, False]  # the corpus, then the batched queries
    judgements = len((data / "qrels" / "test.tsv").read_text().splitlines()) - 1
    assert (flat["documents"], flat["queries"], flat["judgements"]) == (40, 12, judgements)
    assert flat["model_sha256"] == weights_sha256(tiny_hpd)
    assert flat["corpus_encoding"]["cached"] is False and flat["corpus_encoding"]["sentences_per_s"] > 0
    assert 0 <= flat["scores"]["ndcg_at_10"] <= 100 and flat["scores"]["recall_at_100"] == 100.0  # 40 documents
    assert flat["index_bytes"] == 40 * 16 * 4 and flat["vector_bytes"] == 64 and flat["embedding_dim"] == 16
    assert flat["query_latency_ms"]["p50"] <= flat["query_latency_ms"]["p95"] and flat["queries_per_s"] > 0
    assert flat["search_latency_ms"]["p50"] <= flat["query_latency_ms"]["p50"]

    # another index and precision: the corpus comes from the cache, only the queries are encoded
    calls.clear()
    assert hpd_cli.main([*base, "--index", "hnsw", "--precision", "binary", "--rescore", "100", "--output",
                         str(tmp_path / "hnsw.json")]) == 0
    hnsw = json.loads((tmp_path / "hnsw.json").read_text())
    assert not any(c == documents for c in calls) and len(calls) == 1
    assert hnsw["corpus_encoding"]["cached"] is True
    assert hnsw["corpus_encoding"]["sentences_per_s"] == flat["corpus_encoding"]["sentences_per_s"]
    assert hnsw["model_fingerprint"] == flat["model_fingerprint"] and hnsw["ef_search"] == 256
    assert hnsw["rescore_bytes_on_disk"] == 40 * 16 * 4
    # re-ranking 100 of 40 documents by float cosine is exact search: the same ranking as flat float32
    assert hnsw["scores"] == flat["scores"]


def test_document_cache_is_invalidated_by_another_model_or_another_text(tmp_path, tiny_hpd, tokenizer, monkeypatch):
    from hpd_toolkit.eval.retrieval import evaluate_retrieval

    data = write_beir(tmp_path / "beir")
    cache = tmp_path / "cache"
    run = lambda model: evaluate_retrieval(str(model), data, cache_dir=cache, show_progress_bar=False)  # noqa: E731

    first = run(tiny_hpd)
    assert first["corpus_encoding"]["cached"] is False and run(tiny_hpd)["corpus_encoding"]["cached"] is True
    # the same architecture with other weights
    save_hpd_folder(tiny_model(seed=6, pooling="mean", max_seq_length=32), tokenizer, tmp_path / "other")
    other = run(tmp_path / "other")
    assert other["corpus_encoding"]["cached"] is False and other["model_fingerprint"] != first["model_fingerprint"]
    # the same weights with another setting that changes the vectors (pooling)
    save_hpd_folder(tiny_model(seed=5, pooling="max", max_seq_length=32), tokenizer, tmp_path / "max-pooling")
    assert run(tmp_path / "max-pooling")["corpus_encoding"]["cached"] is False
    # one document's text changed
    corpus = data / "corpus.jsonl"
    rows = [json.loads(line) for line in corpus.read_text().splitlines()]
    rows[5]["text"] += " dog"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    calls = _count_encodings(monkeypatch)
    assert run(tiny_hpd)["corpus_encoding"]["cached"] is False and len(calls[0]) == 40
    assert len([p for p in cache.iterdir() if not p.name.startswith(".")]) == 4


def test_cached_vectors_equal_fresh_ones_and_a_damaged_entry_is_replaced(tmp_path, tiny_hpd):
    from hpd_toolkit.eval.retrieval import cached_document_vectors, encoder_fingerprint, normalize
    from hpd_models import encode_by_length, load_encoder

    encoder = load_encoder(str(tiny_hpd))
    texts = [_text(random.Random(i)) for i in range(30)]
    unused = encoder_fingerprint(encoder)
    fresh = normalize(encode_by_length(encoder, texts, show_progress_bar=False))
    assert encoder_fingerprint(encoder) == unused  # encoding sets the tokenizer's truncation: not part of the key
    cache = tmp_path / "cache"
    first, info = cached_document_vectors(encoder, texts, cache, show_progress_bar=False)
    again, info_again = cached_document_vectors(encoder, texts, cache, show_progress_bar=False)
    np.testing.assert_array_equal(first, fresh)
    np.testing.assert_array_equal(again, fresh)
    assert (info["cached"], info_again["cached"]) == (False, True)
    (entry,) = cache.iterdir()
    (entry / "vectors.npy").write_bytes(b"damaged")
    repaired, info_repaired = cached_document_vectors(encoder, texts, cache, show_progress_bar=False)
    assert info_repaired["cached"] is False
    np.testing.assert_array_equal(repaired, fresh)


def test_queries_that_copy_a_document_find_it_first(tmp_path, tiny_hpd):
    from hpd_toolkit.eval.retrieval import document_texts, evaluate_retrieval, load_beir

    folder = write_beir(tmp_path / "beir")
    data = load_beir(folder)
    texts = document_texts(data)
    # one query per document, its exact text (title + " " + text): cosine 1 with its own document
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": f"c{i}", "text": t}) + "\n"
                                                  for i, t in enumerate(texts)))
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"c{i}\t{doc}\t1\n" for i, doc in enumerate(data.doc_ids)))
    for index_type in ("flat", "hnsw"):
        for precision, rescore in (("float32", 0), ("int8", 100)):
            results = evaluate_retrieval(str(tiny_hpd), folder, index_type, precision, rescore,
                                         cache_dir=tmp_path / "cache", show_progress_bar=False)
            assert results["scores"] == {"ndcg_at_10": 100.0, "recall_at_100": 100.0}, (index_type, precision)


def test_a_sentence_transformers_folder_works_too(tmp_path, tiny_hpd):
    from hpd_toolkit.eval.retrieval import evaluate_retrieval
    from hpd_toolkit.training.convert import convert

    st_folder = convert(str(tiny_hpd), tmp_path / "st", to="sentence-transformers")
    data = write_beir(tmp_path / "beir")
    ours = evaluate_retrieval(str(tiny_hpd), data, cache_dir=tmp_path / "cache", show_progress_bar=False)
    theirs = evaluate_retrieval(str(st_folder), data, cache_dir=tmp_path / "cache", show_progress_bar=False)
    assert theirs["scores"] == ours["scores"] and theirs["embedding_dim"] == 16


def test_an_exported_onnx_graph_scores_as_pytorch_and_has_a_cache_entry_of_its_own(tmp_path, tiny_hpd, capsys):
    pytest.importorskip("onnxruntime", reason="the ONNX runtime is an extra: pip install -e '.[onnx]'")
    import hpd_cli
    from hpd_toolkit.eval.retrieval import evaluate_retrieval

    assert hpd_cli.main(["export", str(tiny_hpd), "--quantize", "int8-dynamic"]) == 0
    data, cache = write_beir(tmp_path / "beir"), tmp_path / "cache"
    torch_run = evaluate_retrieval(str(tiny_hpd), data, cache_dir=cache, show_progress_bar=False)
    onnx_run = evaluate_retrieval(str(tiny_hpd), data, cache_dir=cache, show_progress_bar=False, backend="onnx")
    # the float32 graph equals PyTorch to 1e-4, so the rankings and scores agree; the graph is encoded anew
    assert onnx_run["scores"] == torch_run["scores"] and onnx_run["corpus_encoding"]["cached"] is False
    assert onnx_run["model_fingerprint"] != torch_run["model_fingerprint"]
    assert (onnx_run["backend"], onnx_run["file_name"]) == ("onnx", "onnx/model.onnx")
    assert evaluate_retrieval(str(tiny_hpd), data, cache_dir=cache, show_progress_bar=False,
                              backend="onnx")["corpus_encoding"]["cached"] is True
    int8_file = "onnx/model_qint8_avx512_vnni.onnx"
    assert hpd_cli.main(["eval", "retrieval", "--model", str(tiny_hpd), "--data", str(data), "--cache-dir", str(cache),
                         "--backend", "onnx", "--file-name", int8_file, "--output", str(tmp_path / "int8.json")]) == 0
    int8 = json.loads((tmp_path / "int8.json").read_text())
    assert int8["file_name"] == int8_file and int8["model_fingerprint"] != onnx_run["model_fingerprint"]
    capsys.readouterr()
    assert hpd_cli.main(["eval", "retrieval", "--model", str(tiny_hpd), "--data", str(data), "--backend", "openvino",
                         "--file-name", "openvino/missing.xml"]) != 0
    assert "export the model first" in capsys.readouterr().err


@pytest.mark.parametrize("damage, message", [
    ("no-qrels", "qrels/test.tsv: missing, so there are no relevance judgements for the test split"),
    ("unknown-document", "qrels/test.tsv:3: corpus-id 'd999' is not in corpus.jsonl"),
    ("unknown-query", "qrels/test.tsv:2: query-id 'q999' is not in queries.jsonl"),
    ("empty-corpus", "corpus.jsonl holds no documents: the corpus is empty"),
    ("no-judgements", "qrels/test.tsv holds no judgements, so no query of the test split can be scored"),
    ("all-grades-zero", "every judgement has relevance 0"),
    ("bad-json", "corpus.jsonl:2: not JSON"),
    ("duplicate-query", "queries.jsonl: the _id 'q0' occurs twice"),
    ("no-folder", "no such data folder"),
    ("rescore-too-small", "--rescore 50 is below 100"),
    ("rescore-float32", "--rescore re-ranks int8 or binary candidates"),
])
def test_bad_input_is_one_clear_line(tmp_path, capsys, damage, message):
    import hpd_cli

    data = write_beir(tmp_path / "beir")
    qrels, corpus = data / "qrels" / "test.tsv", data / "corpus.jsonl"
    lines = qrels.read_text().splitlines()
    extra = []
    if damage == "no-qrels":
        qrels.unlink()
    elif damage == "unknown-document":
        qrels.write_text("\n".join([lines[0], lines[1], lines[1].split("\t")[0] + "\td999\t1", *lines[2:]]) + "\n")
    elif damage == "unknown-query":
        qrels.write_text("\n".join([lines[0], "q999\td1\t1", *lines[1:]]) + "\n")
    elif damage == "empty-corpus":
        corpus.write_text("")
    elif damage == "no-judgements":
        qrels.write_text(lines[0] + "\n")
    elif damage == "all-grades-zero":
        qrels.write_text("\n".join([lines[0], *(line.rsplit("\t", 1)[0] + "\t0" for line in lines[1:])]) + "\n")
    elif damage == "bad-json":
        corpus.write_text(corpus.read_text().replace("}\n", "\n", 2).replace("\n", "}\n", 1))
    elif damage == "duplicate-query":
        queries = data / "queries.jsonl"
        queries.write_text(queries.read_text() + queries.read_text().splitlines()[0] + "\n")
    elif damage == "no-folder":
        data = tmp_path / "nowhere"
    elif damage == "rescore-too-small":
        extra = ["--precision", "binary", "--rescore", "50"]
    elif damage == "rescore-float32":
        extra = ["--rescore", "100"]
    # the data are checked before the model is loaded: this model does not exist
    code = hpd_cli.main(["eval", "retrieval", "--model", str(tmp_path / "no-model"), "--data", str(data),
                         "--cache-dir", str(tmp_path / "cache"), *extra])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and err.startswith("hpd eval: error: "), err
    assert message in err, err
    assert not (tmp_path / "cache").exists()


# --- mteb's SciFact on the local BEIR files -----------------------------------------------------------------------


def test_mteb_scifact_from_local_beir_files_beside_sts(tmp_path, tiny_hpd, capsys):
    import hpd_cli
    from hpd_toolkit.eval.mteb_eval import read_provenance
    from hpd_toolkit.eval.retrieval import evaluate_retrieval
    from test_eval_mteb import _write_raw_sts

    # more than 1,000 documents: mteb's nAUC of Recall@1000 is NaN (and refused) when every query has the same recall
    write_beir(tmp_path / "retrieval" / "scifact", documents=1200, queries=30)
    _write_raw_sts(tmp_path / "sts-raw", random.Random(0))
    out = tmp_path / "out"
    for tasks, data in (("STSBenchmark", "sts-raw"), ("SciFact", "retrieval")):
        assert hpd_cli.main(["eval", "mteb", "--model", str(tiny_hpd), "--tasks", tasks, "--data",
                             str(tmp_path / data), "--output-folder", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"mteb: SciFact fed from the local BEIR files in {tmp_path / 'retrieval'}, not from the Hugging Face Hub" \
        in printed
    assert ("Note: the local data of SciFact differ from MTEB's (test num_samples is 1230 where MTEB's dataset has "
            "5483)") in printed

    folder = out / "local__tiny-hpd" / "no_revision_available"
    assert sorted(p.name for p in folder.iterdir()) == sorted(["SciFact.json", "STSBenchmark.json", "model_meta.json",
                                                               "model_meta.py", "hpd_provenance.jsonl"])
    saved = json.loads((folder / "SciFact.json").read_text())
    test_scores = saved["scores"]["test"][0]
    assert saved["task_name"] == "SciFact" and test_scores["main_score"] == test_scores["ndcg_at_10"]
    # mteb's own pipeline (its encoding, exact cosine search, pytrec_eval) and ours (faiss flat) agree
    ours = evaluate_retrieval(str(tiny_hpd), tmp_path / "retrieval" / "scifact", cache_dir=tmp_path / "cache",
                              show_progress_bar=False)
    assert abs(100 * test_scores["ndcg_at_10"] - ours["scores"]["ndcg_at_10"]) <= 0.005 + 1e-6
    assert abs(100 * test_scores["recall_at_100"] - ours["scores"]["recall_at_100"]) <= 0.005 + 1e-6

    provenance = read_provenance(folder)
    assert sorted(provenance) == sorted(["SciFact", "STSBenchmark"])
    assert provenance["SciFact"]["data"] == "local"
    assert provenance["SciFact"]["data_dir"] == str((tmp_path / "retrieval" / "scifact").resolve())
    assert provenance["SciFact"]["differs_from_mteb"] == "test num_samples is 1230 where MTEB's dataset has 5483"
    assert provenance["SciFact"]["model_sha256"] == weights_sha256(tiny_hpd)
    assert provenance["STSBenchmark"]["differs_from_mteb"].startswith("test num_samples is 25 ")


def test_mteb_scifact_missing_or_bad_data_fails_before_loading_the_model(tmp_path):
    from hpd_toolkit.eval.mteb_eval import run_mteb

    with pytest.raises(FileNotFoundError, match="scifact: no such folder; SciFact is read from DIR/scifact in BEIR"):
        run_mteb("/nonexistent-model", ["SciFact"], tmp_path / "out", data_dir=tmp_path)
    write_beir(tmp_path / "scifact")
    (tmp_path / "scifact" / "qrels" / "test.tsv").unlink()
    with pytest.raises(FileNotFoundError, match="qrels/test.tsv: missing"):
        run_mteb("/nonexistent-model", ["SciFact"], tmp_path / "out", data_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown task SciFacts; choose from STS12, .*, SciFact"):
        run_mteb("/nonexistent-model", ["SciFacts"], tmp_path / "out", data_dir=tmp_path)
    assert not (tmp_path / "out").exists()


def test_shared_scifact_equals_mtebs_dataset_by_its_statistics(shared_data):
    """The local BEIR SciFact against the statistics mteb ships for its SciFact test split: documents, queries, their
    characters, lengths and distinct texts, judgements per query, distinct relevant documents all agree."""
    import mteb

    from hpd_toolkit.eval.mteb_eval import _feed_local_retrieval, beir_folder, local_data_difference
    from hpd_toolkit.eval.retrieval import load_beir

    data = load_beir(beir_folder(shared_data / "retrieval", "SciFact"))
    assert (len(data.doc_ids), len(data.query_ids), sum(len(j) for j in data.qrels.values())) == (5183, 300, 339)
    task = mteb.get_task("SciFact")
    _feed_local_retrieval([task], {"SciFact": data})
    assert local_data_difference(task) is None
    shipped = task.metadata.descriptive_stats["test"]
    assert shipped["documents_text_statistics"]["total_text_length"] == sum(
        len(f"{t} {x}".strip() if t else x.strip()) for t, x in zip(data.titles, data.texts))


@pytest.mark.integration
def test_minilm_scores_mtebs_published_scifact_ndcg(minilm_path, shared_data, tmp_path, capsys):
    """all-MiniLM-L6-v2 on the local SciFact: MTEB publishes nDCG@10 = 64.51; exact search must give it, through
    `hpd eval retrieval` (faiss flat float32) and through mteb's own SciFact task."""
    import hpd_cli

    code = hpd_cli.main(["eval", "retrieval", "--model", minilm_path, "--data", str(shared_data / "retrieval" / "scifact"),
                         "--cache-dir", str(tmp_path / "cache"), "--output", str(tmp_path / "r.json")])
    assert code == 0, capsys.readouterr().err[-2000:]
    ours = json.loads((tmp_path / "r.json").read_text())
    code = hpd_cli.main(["eval", "mteb", "--model", minilm_path, "--tasks", "SciFact", "--data",
                         str(shared_data / "retrieval"), "--output-folder", str(tmp_path / "out"), "--name",
                         "sentence-transformers/all-MiniLM-L6-v2"])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-2000:]
    saved = json.loads((tmp_path / "out" / "sentence-transformers__all-MiniLM-L6-v2" / "no_revision_available" /
                        "SciFact.json").read_text())
    theirs = 100 * saved["scores"]["test"][0]["ndcg_at_10"]
    with capsys.disabled():
        print(f"\nall-MiniLM-L6-v2 SciFact nDCG@10: hpd eval retrieval {ours['scores']['ndcg_at_10']}, "
              f"hpd eval mteb {theirs:.4f}; Recall@100 {ours['scores']['recall_at_100']}")
    assert abs(ours["scores"]["ndcg_at_10"] - 64.51) <= 0.02 and abs(theirs - 64.51) <= 0.02
    assert "Note: the local data of SciFact" not in captured.out  # equal to MTEB's by every statistic
