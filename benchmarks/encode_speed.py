"""Benchmark: CPU encode throughput, size and embedding bytes of several models, in one run.

    ../shared/tools/quiet python benchmarks/encode_speed.py --data ../shared/data/senteval \
        --model teacher=PATH --model student=PATH ... [--sentences 2000] [--rounds 3] [--json OUT]

Every model encodes the same sample of STS sentences (seeded, distinct, from the SentEval files) with
SentenceTransformer.encode (batch 64, its own length sorting). Each model first makes one whole untimed pass
(so one-off costs such as kernel selection for every batch shape are paid by all alike), then the models
take turns: in each round every model makes exactly one timed pass, in an order that rotates from round to
round. A model's figure is the median over rounds, and its speed relative to the first model is the median
of the per-round ratios, so drift in the machine's speed (frequency, other load) hits both sides of a ratio.

The first version timed each model once, one after the other, for a fixed number of seconds in whole
passes: unequal run lengths (2 to 6 passes) and a one-batch warm-up let the first, slower pass weigh
differently per model, and the order favoured the models measured last, which made the 4-layer student
look 1.73x all-MiniLM-L6-v2 where an alternating measurement gives about 1.46x. Run it on an idle machine
(`../shared/tools/quiet` waits for one); the load average is recorded with the figures.
"""

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from eval.sts import load_encoder, load_pairs  # noqa: E402


def sample_sentences(data, count, seed=0):
    sentences = sorted({s for subsets in load_pairs(data, "senteval").values() for pairs in subsets.values()
                        for s in (*pairs.sentences1, *pairs.sentences2)})
    return random.Random(seed).sample(sentences, min(count, len(sentences)))


def timed_pass(encoder, sentences, batch_size):
    start = time.perf_counter()
    vectors = encoder.encode(sentences, batch_size=batch_size, show_progress_bar=False)
    return time.perf_counter() - start, vectors


def measure(models, sentences, batch_size, rounds):
    """{name: row}: one untimed pass each, then `rounds` rounds of one timed pass per model, rotating order."""
    encoders = {name: load_encoder(path) for name, path in models}
    vectors = {name: timed_pass(encoder, sentences, batch_size)[1] for name, encoder in encoders.items()}
    seconds = {name: [] for name in encoders}
    names = list(encoders)
    for number in range(rounds):
        for name in names[number % len(names):] + names[: number % len(names)]:
            seconds[name].append(timed_pass(encoders[name], sentences, batch_size)[0])
    reference = names[0]
    rows = {}
    for (name, path), encoder in zip(models, encoders.values()):
        dim = vectors[name].shape[1]
        rates = [len(sentences) / s for s in seconds[name]]
        ratios = [s_ref / s for s_ref, s in zip(seconds[reference], seconds[name])]
        rows[name] = {"model": path, "parameters": sum(p.numel() for p in encoder.parameters()), "dim": dim,
                      "bytes_per_embedding": dim * vectors[name].dtype.itemsize,
                      "sentences_per_s": round(statistics.median(rates), 1),
                      "sentences_per_s_by_round": [round(r, 1) for r in rates],
                      f"speed_vs_{reference}": round(statistics.median(ratios), 3)}
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="SentEval-layout data folder (the sentences to encode)")
    parser.add_argument("--model", action="append", required=True, metavar="NAME=PATH",
                        help="a model to measure (repeat the flag); ratios are against the first")
    parser.add_argument("--sentences", type=int, default=2000, help="sample size (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="timed passes per model (default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    models = [spec.split("=", 1) for spec in args.model]
    if any(len(m) != 2 for m in models):
        raise SystemExit("--model takes NAME=PATH, e.g. --model teacher=../models/all-mpnet-base-v2")
    if args.rounds < 1:
        raise SystemExit("--rounds must be at least 1")

    sentences = sample_sentences(args.data, args.sentences)
    load_before = os.getloadavg()[0]
    print(f"{len(sentences)} STS sentences, batch {args.batch_size}, torch threads {torch.get_num_threads()}, "
          f"{args.rounds} alternating rounds, load average {load_before:.2f} at the start")
    rows = measure(models, sentences, args.batch_size, args.rounds)
    reference = models[0][0]
    print(f"| model | parameters | dim | bytes/embedding (float32) | sentences/s (median) | vs {reference} |\n"
          "|---|---|---|---|---|---|")
    for name, row in rows.items():
        print(f"| {name} | {row['parameters'] / 1e6:.1f}M | {row['dim']} | {row['bytes_per_embedding']} | "
              f"{row['sentences_per_s']:.0f} | {row[f'speed_vs_{reference}']:.2f}x |")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"sentences": len(sentences), "batch_size": args.batch_size, "rounds": args.rounds,
                       "threads": torch.get_num_threads(), "load_average_before": round(load_before, 2),
                       "load_average_after": round(os.getloadavg()[0], 2), "reference": reference, "rows": rows},
                      handle, indent=2)


if __name__ == "__main__":
    main()
