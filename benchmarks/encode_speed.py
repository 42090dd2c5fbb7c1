"""Benchmark: CPU encode throughput, size and embedding bytes of several models, in one run.

    python benchmarks/encode_speed.py --data ../shared/data/senteval \
        --model teacher=PATH --model student=PATH ... [--sentences 2000] [--min-seconds 20] [--json OUT]

Every model encodes the same sample of STS sentences (seeded, distinct, from the SentEval files) with
SentenceTransformer.encode (batch 64, its own length sorting), after a warm-up, repeated until
--min-seconds have passed. Run it on an otherwise idle machine: other load changes the figures.
"""

import argparse
import json
import random
import time

import torch

from eval.sts import load_encoder, load_pairs


def sample_sentences(data, count, seed=0):
    sentences = sorted({s for subsets in load_pairs(data, "senteval").values() for pairs in subsets.values()
                        for s in (*pairs.sentences1, *pairs.sentences2)})
    return random.Random(seed).sample(sentences, min(count, len(sentences)))


def measure(path, sentences, batch_size, min_seconds):
    encoder = load_encoder(path)
    encoder.encode(sentences[:batch_size], batch_size=batch_size)  # warm-up
    encoded, start = 0, time.perf_counter()
    while True:
        vectors = encoder.encode(sentences, batch_size=batch_size, show_progress_bar=False)
        encoded += len(sentences)
        if time.perf_counter() - start >= min_seconds:
            break
    seconds = time.perf_counter() - start
    dim = vectors.shape[1]
    return {"model": path, "parameters": sum(p.numel() for p in encoder.parameters()), "dim": dim,
            "bytes_per_embedding": dim * vectors.dtype.itemsize, "sentences_per_s": round(encoded / seconds, 1),
            "sentences_encoded": encoded, "seconds": round(seconds, 1)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="SentEval-layout data folder (the sentences to encode)")
    parser.add_argument("--model", action="append", required=True, metavar="NAME=PATH",
                        help="a model to measure (repeat the flag)")
    parser.add_argument("--sentences", type=int, default=2000, help="sample size (default %(default)s)")
    parser.add_argument("--min-seconds", type=float, default=20, help="time each model at least this long")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    models = [spec.split("=", 1) for spec in args.model]
    if any(len(m) != 2 for m in models):
        raise SystemExit("--model takes NAME=PATH, e.g. --model teacher=../models/all-mpnet-base-v2")

    sentences = sample_sentences(args.data, args.sentences)
    print(f"{len(sentences)} STS sentences, batch {args.batch_size}, torch threads {torch.get_num_threads()}, "
          f"at least {args.min_seconds:.0f} s per model")
    rows = {name: measure(path, sentences, args.batch_size, args.min_seconds) for name, path in models}
    print("| model | parameters | dim | bytes/embedding (float32) | sentences/s |\n|---|---|---|---|---|")
    for name, row in rows.items():
        print(f"| {name} | {row['parameters'] / 1e6:.1f}M | {row['dim']} | {row['bytes_per_embedding']} | "
              f"{row['sentences_per_s']:.0f} |")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"sentences": len(sentences), "batch_size": args.batch_size,
                       "threads": torch.get_num_threads(), "rows": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
