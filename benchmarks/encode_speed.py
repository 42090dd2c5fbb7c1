"""Benchmark: CPU encode throughput, size and embedding bytes of several models, in one run.

    ../shared/tools/quiet python benchmarks/encode_speed.py --data ../shared/data/senteval \
        --model teacher=PATH --model student=PATH \
        --model student-onnx-int8=PATH@onnx:onnx/model_qint8_avx512_vnni.onnx \
        ... [--sentences 2000] [--rounds 3] [--sts] [--json OUT]

A model is NAME=PATH (PyTorch through SentenceTransformer) or NAME=PATH@onnx[:FILE] / NAME=PATH@openvino[:FILE]
(the graph `hpd export` wrote into an HPD folder, through hpd_inference; FILE relative to PATH, default the float32
graph). Every model encodes the same sample of STS sentences (seeded, distinct, from the SentEval files) with its
encode() (batch 64, length sorting). Besides the speed-up over the first model, each exported row gets its speed-up
over the same folder's torch row (same weights in PyTorch float32) when there is one; the size column is the file
the backend runs (weights, .onnx, or OpenVINO's .xml + .bin). `--sts` adds each row's STS average (SentEval
protocol, all seven tasks unless --sts-tasks), scored by `hpd eval sts`'s code on the same backend. Each model first makes one whole untimed pass
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

from hpd_toolkit.eval.sts import TASKS, evaluate_sts, load_pairs  # noqa: E402
from hpd_models import load_any_encoder
from hpd_inference import BACKEND_FILES  # noqa: E402


def sample_sentences(data, count, seed=0):
    sentences = sorted({s for subsets in load_pairs(data, "senteval").values() for pairs in subsets.values()
                        for s in (*pairs.sentences1, *pairs.sentences2)})
    return random.Random(seed).sample(sentences, min(count, len(sentences)))


def timed_pass(encoder, sentences, batch_size):
    start = time.perf_counter()
    vectors = encoder.encode(sentences, batch_size=batch_size, show_progress_bar=False)
    return time.perf_counter() - start, vectors


def parse_model(spec):
    """NAME=PATH[@BACKEND[:FILE]] -> (name, path, backend, file_name)."""
    if "=" not in spec:
        raise SystemExit("--model takes NAME=PATH[@onnx|@openvino[:FILE]], "
                         "e.g. --model teacher=../models/all-mpnet-base-v2")
    name, path = spec.split("=", 1)
    backend, file_name = "torch", None
    if "@" in path:
        path, backend = path.rsplit("@", 1)
        backend, _, file_name = backend.partition(":")
        if backend not in BACKEND_FILES:
            raise SystemExit(f"--model {spec}: unknown backend {backend!r}; use @onnx or @openvino")
    return name, path, backend, file_name or None


def model_bytes(path, backend, file_name):
    """Size of what the backend loads: the weight files, the .onnx, or OpenVINO's .xml and .bin."""
    folder = Path(path)
    if not folder.is_dir():
        return None
    if backend == "torch":
        return sum(p.stat().st_size for p in folder.rglob("*") if p.suffix in (".safetensors", ".bin")
                   and p.relative_to(folder).parts[0] not in ("onnx", "openvino"))
    graph = folder / (file_name or BACKEND_FILES[backend])
    return sum(p.stat().st_size for p in (graph, graph.with_suffix(".bin")) if p.is_file() and p != folder)


def measure(models, sentences, batch_size, rounds):
    """{name: row}: one untimed pass each, then `rounds` rounds of one timed pass per model, rotating order."""
    encoders = {name: load_any_encoder(path, backend, file_name) for name, path, backend, file_name in models}
    vectors = {name: timed_pass(encoder, sentences, batch_size)[1] for name, encoder in encoders.items()}
    seconds = {name: [] for name in encoders}
    names = list(encoders)
    for number in range(rounds):
        for name in names[number % len(names):] + names[: number % len(names)]:
            seconds[name].append(timed_pass(encoders[name], sentences, batch_size)[0])
    reference = names[0]
    rows = {}
    torch_rows = {path: name for name, path, backend, _ in models if backend == "torch"}
    for (name, path, backend, file_name), encoder in zip(models, encoders.values()):
        dim = vectors[name].shape[1]
        rates = [len(sentences) / s for s in seconds[name]]
        ratios = [s_ref / s for s_ref, s in zip(seconds[reference], seconds[name])]
        same_weights = torch_rows.get(path)
        rows[name] = {"model": path, "backend": backend, "file_name": file_name,
                      "parameters": sum(p.numel() for p in encoder.parameters()) if hasattr(encoder, "parameters")
                      else None,
                      "dim": dim, "bytes_per_embedding": dim * vectors[name].dtype.itemsize,
                      "model_bytes": model_bytes(path, backend, file_name),
                      "sentences_per_s": round(statistics.median(rates), 1),
                      "sentences_per_s_by_round": [round(r, 1) for r in rates],
                      f"speed_vs_{reference}": round(statistics.median(ratios), 3),
                      "speed_vs_torch_same_weights": None if same_weights is None else round(statistics.median(
                          [t / s for t, s in zip(seconds[same_weights], seconds[name])]), 3)}
    return rows, encoders


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="SentEval-layout data folder (the sentences to encode)")
    parser.add_argument("--model", action="append", required=True, metavar="NAME=PATH",
                        help="a model to measure (repeat the flag); ratios are against the first")
    parser.add_argument("--sentences", type=int, default=2000, help="sample size (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="timed passes per model (default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--sts", action="store_true", help="also score each row on STS (after the timing)")
    parser.add_argument("--sts-tasks", default=",".join(TASKS), help="tasks for --sts (default: all seven)")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    models = [parse_model(spec) for spec in args.model]
    if args.rounds < 1:
        raise SystemExit("--rounds must be at least 1")

    sentences = sample_sentences(args.data, args.sentences)
    load_before = os.getloadavg()[0]
    print(f"{len(sentences)} STS sentences, batch {args.batch_size}, torch threads {torch.get_num_threads()}, "
          f"{args.rounds} alternating rounds, load average {load_before:.2f} at the start")
    rows, encoders = measure(models, sentences, args.batch_size, args.rounds)
    if args.sts:  # after every timing, so scoring never competes with a timed pass
        for name, encoder in encoders.items():
            rows[name]["sts"] = evaluate_sts(encoder, args.data, tasks=args.sts_tasks, batch_size=args.batch_size,
                                             show_progress_bar=False)["scores"]
    reference = models[0][0]
    print(f"| model | backend | parameters | dim | model file MB | sentences/s (median) | vs {reference} | "
          f"vs torch, same weights |{' STS avg |' if args.sts else ''}\n"
          f"|---|---|---|---|---|---|---|---|{'---|' if args.sts else ''}")

    def cell(value, form):
        return "-" if value is None else format(value, form)

    for name, row in rows.items():
        backend = row["backend"] + (f" {Path(row['file_name']).name}" if row["file_name"] else "")
        parameters = None if row["parameters"] is None else row["parameters"] / 1e6
        print(f"| {name} | {backend} | {cell(parameters, '.1f')}{'M' if parameters else ''} | {row['dim']} | "
              f"{cell(row['model_bytes'] and row['model_bytes'] / 1e6, '.1f')} | {row['sentences_per_s']:.0f} | "
              f"{row[f'speed_vs_{reference}']:.2f}x | {cell(row['speed_vs_torch_same_weights'], '.2f')}"
              f"{'x' if row['speed_vs_torch_same_weights'] else ''} |"
              + (f" {row['sts']['Avg']:.2f} |" if args.sts else ""))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"sentences": len(sentences), "batch_size": args.batch_size, "rounds": args.rounds,
                       "threads": torch.get_num_threads(), "load_average_before": round(load_before, 2),
                       "load_average_after": round(os.getloadavg()[0], 2), "reference": reference, "rows": rows},
                      handle, indent=2)


if __name__ == "__main__":
    main()
