"""Retrieval on a BEIR folder with a real vector index (faiss): nDCG@10, Recall@100, index bytes and speed.

A BEIR folder holds `corpus.jsonl` (`_id`, `title`, `text`), `queries.jsonl` (`_id`, `text`) and
`qrels/<split>.tsv` (`query-id`, `corpus-id`, `score`). A document is read as MTEB reads it: title + " " + text.
`load_beir` is the one reader (also what `hpd eval mteb` feeds mteb's SciFact task); `retrieval_scores` is the one
metric (trec_eval's through pytrec_eval, as mteb scores it). Document vectors are cached on disk by model
fingerprint and text, so every index type and precision reuses one encoding of the corpus.
"""

import hashlib
import json
import os
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

from hpd_toolkit.eval.sts import read_utf8
from hpd_inference import hash_file
from hpd_models import encode_by_length, load_any_encoder

RETRIEVAL_TASKS = {"SciFact": "scifact"}  # mteb task name -> its BEIR folder name under `hpd eval mteb --data`
INDEX_TYPES = ("flat", "hnsw")
PRECISIONS = ("float32", "int8", "binary")
NDCG_AT, RECALL_AT = 10, 100
HNSW_M, HNSW_EF_CONSTRUCTION, DEFAULT_EF_SEARCH = 32, 200, 256
LATENCY_WARMUP_QUERIES = 5
CACHE_FORMAT = 1  # bump when what a cached vector means changes
BEIR_HINT = "a BEIR folder holds corpus.jsonl, queries.jsonl and qrels/<split>.tsv (here: ../shared/data/retrieval/scifact)"


class BeirData(NamedTuple):
    folder: Path
    split: str
    doc_ids: list[str]
    titles: list[str]
    texts: list[str]
    query_ids: list[str]  # the split's judged queries, in queries.jsonl order
    queries: list[str]
    qrels: dict[str, dict[str, int]]  # query id -> {document id: graded relevance}


def default_cache_dir():
    return Path(os.environ.get("HPD_CACHE", Path.home() / ".cache" / "hpd")).expanduser() / "document-vectors"


def load_beir(folder, split="test"):
    """The BEIR folder's corpus, the split's judged queries and its qrels; bad input is a one-line ValueError or
    FileNotFoundError naming the file (and line) and the fix."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such data folder; {BEIR_HINT}.")
    corpus = _read_jsonl(folder / "corpus.jsonl", ("_id", "text"))
    if not corpus:
        raise ValueError(f"{folder / 'corpus.jsonl'} holds no documents: the corpus is empty; re-copy the data.")
    doc_ids = [str(row["_id"]) for row in corpus]
    _refuse_duplicates(doc_ids, folder / "corpus.jsonl")
    query_rows = _read_jsonl(folder / "queries.jsonl", ("_id", "text"))
    _refuse_duplicates([str(row["_id"]) for row in query_rows], folder / "queries.jsonl")
    all_queries = {str(row["_id"]): row["text"] for row in query_rows}
    qrels = _read_qrels(folder / "qrels" / f"{split}.tsv", set(doc_ids), all_queries)
    query_ids = [query_id for query_id in all_queries if query_id in qrels]
    return BeirData(folder, split, doc_ids, [str(row.get("title") or "") for row in corpus],
                    [row["text"] for row in corpus], query_ids, [all_queries[q] for q in query_ids], qrels)


def _read_jsonl(path, required):
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; {BEIR_HINT}.")
    rows = []
    for number, line in enumerate(read_utf8(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{number}: not JSON ({error.msg}); each line must be one JSON object.") from None
        if not isinstance(row, dict) or any(key not in row for key in required) or not isinstance(row["text"], str):
            raise ValueError(f"{path}:{number}: expected a JSON object with {' and '.join(required)} (text a string).")
        rows.append(row)
    return rows


def _refuse_duplicates(ids, path):
    seen = set()
    for identifier in ids:
        if identifier in seen:
            raise ValueError(f"{path}: the _id {identifier!r} occurs twice; every _id must be unique.")
        seen.add(identifier)


def _read_qrels(path, doc_ids, queries):
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing, so there are no relevance judgements for the {path.stem} split; "
                                f"{BEIR_HINT}.")
    qrels = {}
    for number, line in enumerate(read_utf8(path).splitlines(), 1):
        columns = line.rstrip("\r").split("\t")
        if not line.strip() or (number == 1 and columns[0] == "query-id"):
            continue
        if len(columns) != 3:
            raise ValueError(f"{path}:{number}: expected query-id, corpus-id and score separated by tabs.")
        query_id, doc_id, score = columns
        try:
            relevance = int(score)
        except ValueError:
            raise ValueError(f"{path}:{number}: score {score!r} is not an integer relevance grade.") from None
        if doc_id not in doc_ids:
            raise ValueError(f"{path}:{number}: corpus-id {doc_id!r} is not in corpus.jsonl; the qrels and the corpus "
                             "come from different datasets or versions: re-copy the folder.")
        if query_id not in queries:
            raise ValueError(f"{path}:{number}: query-id {query_id!r} is not in queries.jsonl; the qrels and the "
                             "queries come from different datasets or versions: re-copy the folder.")
        qrels.setdefault(query_id, {})[doc_id] = relevance
    if not qrels:
        raise ValueError(f"{path} holds no judgements, so no query of the {path.stem} split can be scored; re-copy "
                         "the qrels file.")
    if not any(grade > 0 for judged in qrels.values() for grade in judged.values()):
        raise ValueError(f"{path}: every judgement has relevance 0, so every query scores 0; re-copy the qrels file.")
    return qrels


def document_texts(data):
    """Each document as MTEB reads it: title + " " + text, stripped (the text alone when there is no title)."""
    return [f"{title} {text}".strip() if title else text.strip() for title, text in zip(data.titles, data.texts)]


def retrieval_scores(run, qrels):
    """{"ndcg_at_10", "recall_at_100"}: means over the judged queries (fractions), computed by trec_eval through
    pytrec_eval as mteb does: nDCG with linear gain (a grade-2 document counts twice a grade-1 one), log2 discount;
    recall = judged-relevant (grade > 0) documents in the top 100 / all judged-relevant. A judged query without
    results scores 0. `run`: query id -> {document id: score}, higher is better (trec_eval breaks ties by
    document id, descending)."""
    import pytrec_eval

    measures = {f"ndcg_cut.{NDCG_AT}", f"recall.{RECALL_AT}"}
    per_query = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate({q: run.get(q, {}) for q in qrels})
    return {
        f"ndcg_at_{NDCG_AT}": sum(per_query.get(q, {}).get(f"ndcg_cut_{NDCG_AT}", 0.0) for q in qrels) / len(qrels),
        f"recall_at_{RECALL_AT}": sum(per_query.get(q, {}).get(f"recall_{RECALL_AT}", 0.0) for q in qrels) / len(qrels),
    }


def encoder_fingerprint(encoder):
    """SHA-256 of what decides a SentenceTransformer's vectors: its weights (as loaded), its modules and their
    settings, its model config and its tokenizer. Equal fingerprints give equal vectors for equal text.
    An exported graph (hpd_inference) is fingerprinted by its files, config, tokenizer and length instead."""
    import torch

    digest = hashlib.sha256()
    if not hasattr(encoder, "state_dict"):
        return exported_fingerprint(encoder)
    for name, tensor in sorted(encoder.state_dict().items()):
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    config = encoder[0].auto_model.config.to_dict() if hasattr(encoder[0], "auto_model") else {}
    tokenizer = getattr(encoder, "tokenizer", None)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    settings = {
        "modules": repr(encoder),
        "max_seq_length": encoder.max_seq_length,
        "prompts": encoder.prompts, "default_prompt_name": encoder.default_prompt_name,
        # the path a model was loaded from and the library version do not change its vectors
        "config": {k: v for k, v in config.items() if not k.startswith("_") and k != "transformers_version"},
        "tokenizer": _tokenizer_settings(backend) if backend is not None
        else sorted((tokenizer.get_vocab() if tokenizer else {}).items()),
    }
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def exported_fingerprint(encoder):
    """The graph files' bytes (an OpenVINO .xml and its .bin), the HPD config, the tokenizer and the length."""
    digest = hashlib.sha256()
    for path in sorted({encoder.path, encoder.path.with_suffix(".bin")}):
        if path.is_file():
            digest.update(path.name.encode())
            hash_file(digest, path)
    settings = {"encoder": type(encoder).__name__, "max_seq_length": encoder.max_seq_length,
                "config": {k: v for k, v in encoder.config.items() if not k.startswith("_")
                           and k != "transformers_version"},
                "tokenizer": _tokenizer_settings(encoder.tokenizer.backend_tokenizer)}
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def _tokenizer_settings(backend):
    settings = json.loads(backend.to_str())
    # set on the backend by each call (the encoder's own max_seq_length is in the fingerprint already)
    settings.pop("truncation", None), settings.pop("padding", None)
    return settings


def texts_sha256(texts):
    digest = hashlib.sha256()
    for text in texts:
        encoded = text.encode("utf-8")
        digest.update(len(encoded).to_bytes(8, "little") + encoded)  # length-prefixed: no two lists collide
    return digest.hexdigest()


def cached_document_vectors(encoder, texts, cache_dir=None, batch_size=64, show_progress_bar=True, fingerprint=None):
    """(L2-normalised float32 vectors of `texts`, read-only memory map; info dict). Encoded once per model
    fingerprint, texts and settings, then read from `cache_dir`; info["cached"] says which happened, and
    info["sentences_per_s"] is always the speed of the encoding that filled the cache."""
    cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    key_parts = {"format": CACHE_FORMAT, "model": fingerprint or encoder_fingerprint(encoder),
                 "texts": texts_sha256(texts), "normalized": True, "dtype": "float32"}
    key = hashlib.sha256(json.dumps(key_parts, sort_keys=True).encode()).hexdigest()[:32]
    entry = cache_dir / key
    vectors = _read_cache_entry(entry, len(texts))
    if vectors is not None:
        info = json.loads((entry / "info.json").read_text(encoding="utf-8"))
        return vectors, {**info, "cached": True, "cache": str(entry)}

    start = time.perf_counter()
    vectors = normalize(encode_by_length(encoder, texts, batch_size, show_progress_bar))
    seconds = time.perf_counter() - start
    info = {**key_parts, "documents": len(texts), "dim": int(vectors.shape[1]), "encode_seconds": round(seconds, 2),
            "sentences_per_s": round(len(texts) / seconds, 1) if seconds > 0 else None,
            "batch_size": batch_size, "torch_threads": _torch_threads()}
    staging = cache_dir / f".{key}.{os.getpid()}.tmp"  # written aside and renamed: no reader sees half an entry
    staging.mkdir(parents=True, exist_ok=True)
    np.save(staging / "vectors.npy", vectors)
    (staging / "info.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    if entry.exists():  # a damaged entry (vectors unreadable or of the wrong shape) is replaced
        import shutil

        shutil.rmtree(entry)
    os.replace(staging, entry)
    return _read_cache_entry(entry, len(texts)), {**info, "cached": False, "cache": str(entry)}


def _read_cache_entry(entry, rows):
    try:
        vectors = np.load(entry / "vectors.npy", mmap_mode="r")
        json.loads((entry / "info.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return vectors if vectors.dtype == np.float32 and vectors.ndim == 2 and len(vectors) == rows else None


def normalize(vectors):
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


class VectorIndex:
    """A faiss index over L2-normalised vectors, searched by cosine (inner product), in one of three precisions:
    float32 (IndexFlatIP / IndexHNSWFlat), int8 (faiss's 8-bit scalar quantiser: one byte per dimension, the range
    of each dimension taken from the corpus; float queries are scored against the decoded codes) or binary (the
    sign of each dimension, one bit; queries binarised too, ranked by Hamming distance). With `rescore` N >= 100,
    the top N candidates are re-ranked by exact float cosine against `rescore_vectors` (the cached float vectors,
    memory-mapped from disk: they are not part of the index's memory)."""

    def __init__(self, vectors, index_type="flat", precision="float32", ef_search=DEFAULT_EF_SEARCH, rescore=0,
                 rescore_vectors=None):
        import faiss

        check_index_options(index_type, precision, rescore)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        count, dim = vectors.shape
        self.index_type, self.precision, self.embedding_dim, self.rescore = index_type, precision, dim, rescore
        self.rescore_vectors = rescore_vectors if rescore_vectors is not None else (vectors if rescore else None)
        if precision == "binary":
            if dim % 8:
                raise ValueError(f"binary precision packs 8 dimensions per byte, but the vectors have {dim}; use "
                                 "float32 or int8 for this model.")
            index = faiss.IndexBinaryFlat(dim) if index_type == "flat" else faiss.IndexBinaryHNSW(dim, HNSW_M)
        elif precision == "int8":
            qtype = faiss.ScalarQuantizer.QT_8bit
            index = (faiss.IndexScalarQuantizer(dim, qtype, faiss.METRIC_INNER_PRODUCT) if index_type == "flat"
                     else faiss.IndexHNSWSQ(dim, qtype, HNSW_M, faiss.METRIC_INNER_PRODUCT))
        else:
            index = (faiss.IndexFlatIP(dim) if index_type == "flat"
                     else faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT))
        if index_type == "hnsw":
            index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
            index.hnsw.efSearch = ef_search
        if not index.is_trained:
            index.train(vectors)
        index.add(self._codes(vectors))
        self.index = index

    def _codes(self, vectors):
        return np.packbits(vectors > 0, axis=1) if self.precision == "binary" else vectors

    def search(self, queries, k):
        """(scores, ids), each (queries, k), best first; id -1 where the index holds fewer than k vectors."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        depth = max(k, self.rescore)
        scores, ids = self.index.search(self._codes(queries), min(depth, self.index.ntotal))
        if self.precision == "binary":
            scores = (self.embedding_dim - 2 * scores).astype(np.float32)  # the dot product of the +-1 sign vectors
        if self.rescore:
            exact = np.einsum("qkd,qd->qk", np.asarray(self.rescore_vectors[np.maximum(ids, 0)]), queries)
            exact[ids < 0] = -np.inf
            order = np.argsort(-exact, axis=1, kind="stable")
            scores, ids = np.take_along_axis(exact, order, 1), np.take_along_axis(ids, order, 1)
        return scores[:, :k], ids[:, :k]

    def bytes(self):
        return index_bytes(self.index)

    @property
    def vector_bytes(self):
        """Bytes of one stored vector (the code; graph links of hnsw not included)."""
        return self.embedding_dim // 8 if self.precision == "binary" else self.embedding_dim * (1 if self.precision == "int8" else 4)


def index_bytes(index):
    """Bytes a faiss index holds in memory: the stored codes, plus for hnsw its graph (links, offsets, levels) and for
    int8 the quantiser's ranges. Read from the index's own arrays, so it costs no copy at any size (it agrees with
    faiss.serialize_index to within the file header)."""
    import faiss

    if hasattr(index, "hnsw"):
        hnsw = index.hnsw
        graph = (hnsw.neighbors.size() * 4 + hnsw.offsets.size() * 8 + hnsw.levels.size() * 4
                 + hnsw.assign_probas.size() * 8 + hnsw.cum_nneighbor_per_level.size() * 4)
        storage = (faiss.downcast_IndexBinary(index.storage) if isinstance(index, faiss.IndexBinary)
                   else faiss.downcast_index(index.storage))
        return graph + index_bytes(storage)
    quantiser = index.sq.trained.size() * 4 if hasattr(index, "sq") else 0
    return index.ntotal * index.code_size + quantiser


def check_index_options(index_type, precision, rescore):
    if index_type not in INDEX_TYPES:
        raise ValueError(f"unknown index {index_type!r}; choose {' or '.join(INDEX_TYPES)}.")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose {', '.join(PRECISIONS)}.")
    if rescore and precision == "float32":
        raise ValueError("--rescore re-ranks int8 or binary candidates by float cosine; float32 needs none: drop it.")
    if rescore and rescore < RECALL_AT:
        raise ValueError(f"--rescore {rescore} is below {RECALL_AT}: Recall@{RECALL_AT} needs {RECALL_AT} re-ranked "
                         f"candidates; give {RECALL_AT} or more (or 0 for no re-ranking).")


def evaluate_retrieval(model, data_dir, index_type="flat", precision="float32", rescore=0, ef_search=DEFAULT_EF_SEARCH,
                       cache_dir=None, batch_size=64, split="test", show_progress_bar=True, trust_remote_code=False,
                       backend="torch", file_name=None):
    """Scores `model` (a folder or Hub id, or a loaded encoder) on a BEIR folder; returns the results dict that
    `hpd eval retrieval --output` writes (scores x 100). `backend` onnx/openvino runs the graph `hpd export` wrote
    into an HPD folder (`file_name` picks which)."""
    start = time.perf_counter()
    check_index_options(index_type, precision, rescore)
    try:
        import faiss
        import pytrec_eval  # noqa: F401
    except ImportError as error:
        raise ValueError(f"hpd eval retrieval needs faiss-cpu and pytrec-eval-terrier ({error}): pip install "
                         "'hpd-toolkit[retrieval]'") from None
    data = load_beir(data_dir, split)  # read and check the data before the model costs anything
    encoder = model if not isinstance(model, (str, Path)) else load_any_encoder(
        str(model), backend, file_name, trust_remote_code=trust_remote_code)
    fingerprint = encoder_fingerprint(encoder)
    doc_vectors, encoding = cached_document_vectors(encoder, document_texts(data), cache_dir, batch_size,
                                                    show_progress_bar, fingerprint=fingerprint)
    build_start = time.perf_counter()
    index = VectorIndex(doc_vectors, index_type, precision, ef_search, rescore, rescore_vectors=doc_vectors)
    build_seconds = time.perf_counter() - build_start

    # batched: every query encoded in equal-length batches, then one search call; these results are scored
    batch_start = time.perf_counter()
    query_vectors = normalize(encode_by_length(encoder, data.queries, batch_size, show_progress_bar=False))
    scores, ids = index.search(query_vectors, RECALL_AT)
    batch_seconds = time.perf_counter() - batch_start
    run = {query_id: {data.doc_ids[i]: float(s) for s, i in zip(row_scores, row_ids) if i >= 0}
           for query_id, row_scores, row_ids in zip(data.query_ids, scores, ids)}
    metrics = retrieval_scores(run, data.qrels)

    # one query at a time, as a user's request arrives: encode + search (+ re-rank)
    for text in data.queries[:LATENCY_WARMUP_QUERIES]:
        index.search(normalize(encoder.encode([text], convert_to_numpy=True)), RECALL_AT)
    end_to_end, search_only = [], []
    for text in data.queries:
        query_start = time.perf_counter()
        vector = normalize(encoder.encode([text], convert_to_numpy=True))
        search_start = time.perf_counter()
        index.search(vector, RECALL_AT)
        end = time.perf_counter()
        end_to_end.append(end - query_start), search_only.append(end - search_start)

    from hpd_inference import weights_sha256

    local_folder = isinstance(model, (str, Path)) and Path(model).expanduser().is_dir()
    return {
        "model": str(model) if isinstance(model, (str, Path)) else type(model).__name__,
        "model_sha256": weights_sha256(Path(model).expanduser()) if local_folder else None,
        "model_fingerprint": fingerprint,
        "backend": backend, "file_name": getattr(encoder, "file_name", None),
        "data": str(data.folder), "split": split,
        "documents": len(data.doc_ids), "queries": len(data.query_ids),
        "judgements": sum(len(judged) for judged in data.qrels.values()),
        "index": index_type, "precision": precision, "rescore": rescore,
        "ef_search": ef_search if index_type == "hnsw" else None,
        "scores": {name: round(100 * value, 2) for name, value in metrics.items()},
        "embedding_dim": index.embedding_dim,
        "vector_bytes": index.vector_bytes,
        "index_bytes": index.bytes(),
        "rescore_bytes_on_disk": int(doc_vectors.nbytes) if rescore else 0,
        "corpus_encoding": {key: encoding[key] for key in ("sentences_per_s", "encode_seconds", "batch_size",
                                                           "torch_threads", "cached", "cache")},
        "index_build_seconds": round(build_seconds, 3),
        "query_latency_ms": _percentiles(end_to_end),
        "search_latency_ms": _percentiles(search_only),
        "queries_per_s": round(len(data.queries) / batch_seconds, 1),
        "threads": {"torch": _torch_threads(), "faiss": faiss.omp_get_max_threads()},
        "wall_seconds": round(time.perf_counter() - start, 2),
        "versions": _versions(),
    }


def _percentiles(seconds):
    p50, p95 = np.percentile(np.asarray(seconds) * 1000, [50, 95])
    return {"p50": round(float(p50), 3), "p95": round(float(p95), 3)}


def _torch_threads():
    import torch

    return torch.get_num_threads()


def _versions():
    import importlib.metadata as metadata
    import platform

    versions = {"python": platform.python_version()}
    for package in ("torch", "transformers", "sentence-transformers", "faiss-cpu", "pytrec-eval-terrier", "numpy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions


def format_report(results):
    """The results as a few lines for the terminal."""
    rescore = f", re-ranked top {results['rescore']} by float cosine" if results["rescore"] else ""
    encoding = results["corpus_encoding"]
    source = "cached vectors, encoded earlier at" if encoding["cached"] else "encoded at"
    return "\n".join([
        f"{Path(results['model']).name or results['model']} on {results['data']} ({results['split']}): "
        f"{results['documents']} documents, {results['queries']} queries, {results['judgements']} judgements",
        f"index {results['index']} {results['precision']}{rescore}: nDCG@{NDCG_AT} {results['scores']['ndcg_at_10']:.2f}, "
        f"Recall@{RECALL_AT} {results['scores']['recall_at_100']:.2f}",
        f"index {results['index_bytes']:,} bytes ({results['vector_bytes']} bytes per {results['embedding_dim']}-d "
        "vector before graph links)",
        f"corpus: {source} {encoding['sentences_per_s']} documents/s",
        f"query, one at a time (encode + search): p50 {results['query_latency_ms']['p50']:.2f} ms, "
        f"p95 {results['query_latency_ms']['p95']:.2f} ms (search alone p50 {results['search_latency_ms']['p50']:.3f} ms); "
        f"batched: {results['queries_per_s']} queries/s",
    ])
