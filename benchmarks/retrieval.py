"""Benchmark: retrieval quality, memory and speed against the teacher, and how index cost grows with the collection.

    python benchmarks/retrieval.py measure --data ../shared/data/retrieval/scifact --teacher models/all-mpnet-base-v2 \\
        --model all-MiniLM-L6-v2=PATH --hpd releases/HPD-MiniLM-L4-F128 [--cache-dir DIR] [--json out.json]
        [--reuse earlier.json]
    python benchmarks/retrieval.py scale [--sizes 5000,50000,500000,5000000] [--dims 768,384,128]
        [--kinds flat-float32,hnsw-float32,flat-binary,hnsw-binary] [--budget-gb 24] [--json out.json]

`measure` runs `hpd eval retrieval`'s own function (eval.retrieval.evaluate_retrieval) for the teacher, each
--model at float32 and the HPD model at float32, int8, binary and binary re-ranked by float cosine (top 100), all on
one index type (default flat: exact search), one model at a time on this machine, and prints one markdown table with
each figure's ratio to the teacher, then the paper's claim as two ratios. Document vectors are cached in --cache-dir
(default: a fresh temporary folder, so every corpus encoding is measured in this run). `--reuse` takes the rows of an
earlier --json whose model (by weights fingerprint), data and settings are the same instead of measuring them again
(the teacher's SciFact encoding takes 37 minutes on 2 CPU cores); the table marks them, and their timings are
those of the earlier run.

`scale` needs no model: search cost depends only on count, dimension and precision, so it indexes random unit
vectors. For each dimension, size and index it reports index bytes, build seconds, search latency one query at a
time (p50/p95, top 100, search only) and, for hnsw, Recall@10 against exact search. An index whose bytes (measured
per vector at a smaller size, else its code size) exceed --budget-gb is not built but reported as not fitting; one
whose predicted build time exceeds --max-build-seconds is reported with its predicted bytes only.
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hpd_toolkit.eval.retrieval import DEFAULT_EF_SEARCH, RECALL_AT, VectorIndex  # noqa: E402

HPD_SETTINGS = (("float32", 0), ("int8", 0), ("binary", 0), ("binary", 100))
GOALS = {"memory_float32": 6.0, "memory_binary": 48.0, "query_speed": 8.0}


# --- measure ---------------------------------------------------------------------------------------------------


def measure(args):
    from hpd_toolkit.eval.retrieval import encoder_fingerprint, evaluate_retrieval
    from hpd_models import load_encoder

    cache_dir = args.cache_dir or tempfile.mkdtemp(prefix="hpd-retrieval-bench-")
    plan = [("teacher", args.teacher, [("float32", 0)])]
    plan += [(name, path, [("float32", 0)]) for name, path in (m.split("=", 1) for m in args.model)]
    plan.append((Path(args.hpd).name, args.hpd, list(HPD_SETTINGS)))
    earlier = json.loads(Path(args.reuse).read_text(encoding="utf-8"))["rows"] if args.reuse else []
    rows = []
    for name, path, settings in plan:
        encoder = load_encoder(path)  # once per model; every setting reuses its cached document vectors
        fingerprint = encoder_fingerprint(encoder) if earlier else None
        for precision, rescore in settings:
            same = {"model_fingerprint": fingerprint, "data": str(Path(args.data).expanduser()), "split": "test",
                    "index": args.index, "precision": precision, "rescore": rescore,
                    "ef_search": args.ef_search if args.index == "hnsw" else None}
            old = next((r for r in earlier if all(r.get(key) == value for key, value in same.items())), None)
            label = name if len(settings) == 1 else f"{name} {precision}" + (f" + rescore {rescore}" if rescore else "")
            if old is not None:
                rows.append({**old, "label": label, "model": path, "reused_from": args.reuse})
                print(f"reused: {label}: nDCG@10 {old['scores']['ndcg_at_10']} ({args.reuse})", file=sys.stderr)
                continue
            results = evaluate_retrieval(encoder, args.data, args.index, precision, rescore, args.ef_search,
                                         cache_dir=cache_dir, batch_size=args.batch_size, show_progress_bar=False)
            results["model"] = path
            rows.append({"label": label, **results})
            print(f"done: {label}: nDCG@10 {results['scores']['ndcg_at_10']}", file=sys.stderr, flush=True)
        del encoder
    report = measure_report(rows)
    print(report)
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "report": report}, indent=2) + "\n", encoding="utf-8")
        print(f"Wrote {args.json}")


def measure_report(rows):
    """The markdown table (each figure with its ratio to the teacher, the first row) and the paper's two ratios."""
    teacher = rows[0]

    def ratio(value, base):
        return f"{value / base:.2f}x" if base else "-"

    lines = ["| model | nDCG@10 | Recall@100 | bytes/vector | index bytes | query p50 ms | queries/s | corpus docs/s |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        encoding = row["corpus_encoding"]
        cells = [
            f"{row['scores']['ndcg_at_10']:.2f} ({ratio(row['scores']['ndcg_at_10'], teacher['scores']['ndcg_at_10'])})",
            f"{row['scores']['recall_at_100']:.2f} ({ratio(row['scores']['recall_at_100'], teacher['scores']['recall_at_100'])})",
            # memory: how many times smaller than the teacher's
            f"{row['vector_bytes']:,} ({ratio(teacher['vector_bytes'], row['vector_bytes'])} smaller)",
            f"{row['index_bytes']:,} ({ratio(teacher['index_bytes'], row['index_bytes'])} smaller)",
            f"{row['query_latency_ms']['p50']:.2f} ({ratio(teacher['query_latency_ms']['p50'], row['query_latency_ms']['p50'])} faster)",
            f"{row['queries_per_s']:.1f} ({ratio(row['queries_per_s'], teacher['queries_per_s'])})",
            f"{encoding['sentences_per_s']} ({ratio(encoding['sentences_per_s'], teacher['corpus_encoding']['sentences_per_s'])})"
            + (" cached" if encoding["cached"] else ""),
        ]
        lines.append(f"| {row['label']}{' (reused)' if row.get('reused_from') else ''} | " + " | ".join(cells) + " |")
    hpd = [row for row in rows[1:] if row["precision"] == "float32"][-1]
    binary = next((row for row in rows if row["precision"] == "binary" and not row["rescore"]), None)
    claims = {
        "query_speed": teacher["query_latency_ms"]["p50"] / hpd["query_latency_ms"]["p50"],
        "memory_float32": teacher["index_bytes"] / hpd["index_bytes"],
        "memory_binary": teacher["index_bytes"] / binary["index_bytes"] if binary else None,
    }
    lines.append("")
    lines.append(f"The paper's claim (8.2x faster, 8.0x less memory), measured: {hpd['label']} against the teacher, "
                 f"{hpd['index']} index, {hpd['documents']:,} documents, {hpd['queries']} queries")
    for key, text in (("query_speed", "end-to-end query speed (p50, one query at a time, encode + search)"),
                      ("memory_float32", "index memory at float32"), ("memory_binary", "index memory with binary")):
        if claims[key] is not None:
            verdict = "meets" if claims[key] >= GOALS[key] else "misses"
            lines.append(f"- {text}: {claims[key]:.2f}x ({verdict} the goal of {GOALS[key]:g}x)")
    reused = sorted({row["reused_from"] for row in rows if row.get("reused_from")})
    if reused:
        lines.append(f"(reused) rows come from {', '.join(reused)}: same weights, data and settings, so the same "
                     "scores; their timings were measured in that run")
    threads = teacher["threads"]
    lines.append(f"({threads['torch']} torch threads, {threads['faiss']} faiss threads; "
                 f"faiss {teacher['versions'].get('faiss-cpu', '?')})")
    return "\n".join(lines)


# --- scale -----------------------------------------------------------------------------------------------------


def random_unit_chunks(count, dim, seed, chunk=100_000):
    """Random unit vectors in chunks, so a 5M x 768 collection never exists twice in memory."""
    rng = np.random.default_rng(seed)
    for start in range(0, count, chunk):
        block = rng.standard_normal((min(chunk, count - start), dim), dtype=np.float32)
        yield block / np.linalg.norm(block, axis=1, keepdims=True)


def build_index(kind, count, dim, seed, ef_search):
    """A faiss index of `count` random unit vectors built chunk by chunk (VectorIndex's faiss types and settings)."""
    index_type, precision = kind.split("-")
    chunks = random_unit_chunks(count, dim, seed)
    first = next(chunks)
    # VectorIndex builds the index (and trains int8's ranges) on the first chunk; the rest is added to it
    index = VectorIndex(first, index_type, precision, ef_search)
    for block in chunks:
        index.index.add(index._codes(block))
    return index


def code_bytes(kind, dim):
    precision = kind.split("-")[1]
    return dim // 8 if precision == "binary" else dim * (1 if precision == "int8" else 4)


def scale(args):
    budget = args.budget_gb * 1e9
    kinds = args.kinds.split(",")
    ordered = sorted(kinds, key=lambda k: k != "flat-float32")  # exact results first: hnsw's recall needs them
    rows, per_vector, build_rate = [], {}, {}
    for dim in map(int, args.dims.split(",")):
        queries = next(random_unit_chunks(args.queries, dim, seed=10_000 + dim))
        for count in map(int, args.sizes.split(",")):
            exact_ids = None
            for kind in ordered:
                bytes_per_vector = per_vector.get((kind, dim), code_bytes(kind, dim))
                predicted_bytes = bytes_per_vector * count
                row = {"dim": dim, "vectors": count, "index": kind, "fits": predicted_bytes <= budget}
                predicted_seconds = build_rate.get((kind, dim), 0) * count * (np.log2(count) if "hnsw" in kind else 1)
                if not row["fits"]:
                    rows.append({**row, "index_bytes": int(predicted_bytes), "predicted": True})
                    continue
                if predicted_seconds > args.max_build_seconds:
                    rows.append({**row, "index_bytes": int(predicted_bytes), "predicted": True,
                                 "predicted_build_seconds": round(float(predicted_seconds))})
                    continue
                start = time.perf_counter()
                index = build_index(kind, count, dim, seed=dim * 7919 + count, ef_search=args.ef_search)
                seconds = time.perf_counter() - start
                build_rate[(kind, dim)] = seconds / (count * (np.log2(count) if "hnsw" in kind else 1))
                size = index.bytes()
                per_vector[(kind, dim)] = size / count
                latencies, found = [], []
                for query in queries:
                    query_start = time.perf_counter()
                    _, ids = index.search(query[None, :], RECALL_AT)
                    latencies.append(time.perf_counter() - query_start)
                    found.append(ids[0])
                p50, p95 = np.percentile(np.asarray(latencies) * 1000, [50, 95])
                row.update({"fits": size <= budget, "index_bytes": int(size), "bytes_per_vector": round(size / count, 1),
                            "build_seconds": round(seconds, 2), "search_p50_ms": round(float(p50), 3),
                            "search_p95_ms": round(float(p95), 3), "predicted": False})
                if kind == "flat-float32":
                    exact_ids = np.stack(found)
                elif kind.startswith("hnsw") and exact_ids is not None:
                    row["recall_at_10_vs_exact"] = round(float(np.mean(
                        [len(set(a[:10]) & set(b[:10])) / 10 for a, b in zip(found, exact_ids)])), 3)
                rows.append(row)
                del index
                print(f"done: {dim}-d {count:,} {kind}", file=sys.stderr, flush=True)
    report = scale_report(rows, kinds, args.budget_gb, per_vector)
    print(report)
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "report": report}, indent=2) + "\n", encoding="utf-8")
        print(f"Wrote {args.json}")


def scale_report(rows, kinds, budget_gb, per_vector):
    lines = ["| dim | vectors | index | index bytes | bytes/vector | build s | search p50 ms | p95 ms | "
             "Recall@10 vs exact | fits |", "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        if row["predicted"]:
            why = (f"not built: predicted build {row['predicted_build_seconds']:,} s" if "predicted_build_seconds" in row
                   else "not built")
            lines.append(f"| {row['dim']} | {row['vectors']:,} | {row['index']} | ~{row['index_bytes']:,} (predicted) | "
                         f"| | {why} | | | {'yes' if row['fits'] else f'no (> {budget_gb:g} GB)'} |")
            continue
        recall = row.get("recall_at_10_vs_exact", "")
        lines.append(f"| {row['dim']} | {row['vectors']:,} | {row['index']} | {row['index_bytes']:,} | "
                     f"{row['bytes_per_vector']} | {row['build_seconds']} | {row['search_p50_ms']} | "
                     f"{row['search_p95_ms']} | {recall} | {'yes' if row['fits'] else f'no (> {budget_gb:g} GB)'} |")
    lines.append("")
    budget = budget_gb * 1e9
    for dim in sorted({row["dim"] for row in rows}, reverse=True):
        for kind in kinds:
            bytes_per_vector = per_vector.get((kind, dim), code_bytes(kind, dim))
            lines.append(f"- {dim}-d {kind}: {bytes_per_vector:,.1f} bytes/vector, so at most "
                         f"{int(budget // bytes_per_vector):,} vectors fit in {budget_gb:g} GB")
        for precision in ("float32", "int8", "binary"):
            flat = {r["vectors"]: r for r in rows if r["dim"] == dim and r["index"] == f"flat-{precision}"
                    and not r["predicted"]}
            hnsw = {r["vectors"]: r for r in rows if r["dim"] == dim and r["index"] == f"hnsw-{precision}"
                    and not r["predicted"]}
            common = sorted(set(flat) & set(hnsw))
            if not common:
                continue
            faster = [n for n in common if hnsw[n]["search_p50_ms"] < flat[n]["search_p50_ms"]]
            lines.append(f"- {dim}-d {precision}: hnsw searches faster than flat from "
                         f"{faster[0]:,} vectors" if faster else
                         f"- {dim}-d {precision}: hnsw is not faster than flat up to {common[-1]:,} vectors")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    m = commands.add_parser("measure", help="the models on a BEIR folder, with ratios to the teacher")
    m.add_argument("--data", required=True, help="BEIR folder, e.g. ../shared/data/retrieval/scifact")
    m.add_argument("--teacher", required=True, help="the teacher model folder (first row, the base of every ratio)")
    m.add_argument("--model", action="append", default=[], metavar="NAME=PATH", help="another model at float32")
    m.add_argument("--hpd", required=True, help="the HPD model: float32, int8, binary and binary + rescore 100")
    m.add_argument("--index", choices=("flat", "hnsw"), default="flat")
    m.add_argument("--ef-search", type=int, default=DEFAULT_EF_SEARCH)
    m.add_argument("--batch-size", type=int, default=64)
    m.add_argument("--cache-dir", help="document-vector cache (default: a fresh temporary folder)")
    m.add_argument("--json", help="write the rows and the report here")
    m.add_argument("--reuse", help="an earlier --json: its rows of the same model weights, data and settings are "
                   "taken instead of measured again")
    m.set_defaults(run=measure)
    s = commands.add_parser("scale", help="index bytes and search latency of random unit vectors by size")
    s.add_argument("--sizes", default="5000,50000,500000,5000000")
    s.add_argument("--dims", default="768,384,128")
    s.add_argument("--kinds", default="flat-float32,hnsw-float32,flat-binary,hnsw-binary",
                   help="comma-separated index-precision pairs (flat|hnsw)-(float32|int8|binary)")
    s.add_argument("--queries", type=int, default=200, help="queries timed one at a time")
    s.add_argument("--ef-search", type=int, default=DEFAULT_EF_SEARCH)
    s.add_argument("--budget-gb", type=float, default=24.0, help="memory an index may take (default: %(default)s)")
    s.add_argument("--max-build-seconds", type=float, default=3600, help="skip builds predicted to take longer")
    s.add_argument("--json", help="write the rows and the report here")
    s.set_defaults(run=scale)
    args = parser.parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main()
