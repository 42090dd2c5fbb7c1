"""Train on a lent GPU from what can travel there: the projected targets, not the teacher.

    python scripts/gpu_run.py pack --out gpu-pack [--max-mb 24] -- HPD-DISTILL-FLAGS   # here, after the run's start
    python scripts/gpu_run.py train --pack gpu-pack --student releases/HPD-MiniLM-L4-F128 --output OUT/model \
        [--epochs 40] [--lr 1e-4] [--warmup-steps 200] [--eval-steps 500] [--micro-batch-size 256] [--parts-dir $OUT]

A device machine gets a copy of the working tree and nothing else (64 MiB in all, files back at most 16 MiB each):
the teacher (all-mpnet-base-v2, 438 MB) cannot go, and neither can a fresh cut of all-MiniLM-L6-v2 beside the default
model already in the tree. `pack` therefore writes, from a work dir where `hpd distill` with the same flags has cached
the teacher vectors and fitted the projection (`--stop-after start` does both), the run's sentences (held-out ones
first), their projected targets in float16 and STS-B dev into one folder, refusing it past --max-mb. `train` runs
hpd distill's own training stage on that folder, with an identity projection and no teacher: the student (an HPD
folder in the tree, e.g. the default model, continued) learns the packed targets, checkpoints, validation and
--select as `hpd distill` does, and the output is an HPD folder with distill_config.json. With --parts-dir the output
is also written there, with float16 weights, as a tar split into parts small enough to come back (`cat
model.tar.part-* | tar x`).
"""

import argparse
import dataclasses
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import hpd_cli  # noqa: E402
from hpd_inference import hash_file  # noqa: E402

PART_BYTES = 15 * 1024 * 1024  # files come back from a device machine at up to 16 MiB each
STSB_DEV = Path("STS") / "STSBenchmark" / "sts-dev.csv"


class PackedTargets:
    """Projected targets of `valid + train`, in that order, as TargetVectors gives teacher vectors: `rows`, `dim`."""

    def __init__(self, path):
        self.targets = np.load(path, mmap_mode="r")
        self.dim = self.targets.shape[1]

    def rows(self, indices):
        return np.asarray(self.targets[np.asarray(indices)], dtype=np.float32)


def sha256(path):
    digest = hashlib.sha256()
    hash_file(digest, path)
    return digest.hexdigest()


def pack(args, distill_flags):
    from accelerate import Accelerator

    from hpd_toolkit.training.distill import (DistillConfig, prepare_sentences_stage, projection_stage, targets,
                                              teacher_stage)

    config = DistillConfig(**hpd_cli.distill_settings(hpd_cli.build_parser().parse_args(["distill", *distill_flags])))
    work, out = Path(config.work_dir), Path(args.out)
    if not config.projection_path().is_file():
        raise ValueError(f"{work} has no {config.projection_path().name}: run the same hpd distill flags with "
                         "--stop-after start first (it caches the teacher vectors and fits the projection).")
    if out.exists():
        raise ValueError(f"{out} exists: give a new --out folder (pack writes nothing over what is there).")
    valid, all_train, corpus = prepare_sentences_stage(config, work)
    train = all_train[: config.max_sentences]
    count = len(valid) + len(train)
    text_bytes = len("\n".join(valid + train).encode("utf-8"))
    megabytes = (text_bytes + count * config.dim * 2) / 1e6
    if megabytes > args.max_mb:
        raise ValueError(f"the pack would take {megabytes:.0f} MB, over --max-mb {args.max_mb:g}: lower --max-sentences "
                         "(about 420 bytes an item at 128-d) or raise --max-mb if the tree has room.")
    # the run's cached teacher vectors (teacher_stage encodes any that are missing: here, where the teachers are)
    accelerator = Accelerator(cpu=True)
    vectors = teacher_stage(config, work, valid + all_train, count, accelerator)
    weight, bias = projection_stage(config, vectors, len(valid), accelerator, train)  # the run's own, checked
    goal = np.concatenate([targets(vectors.rows(np.arange(start, min(start + 8192, count))), weight, bias).numpy()
                           for start in range(0, count, 8192)])
    out.mkdir(parents=True)
    np.save(out / "targets.npy", goal.astype(np.float16))
    (out / "sentences.txt").write_text("\n".join(valid + train) + "\n", encoding="utf-8")
    if config.sts_dev:
        (out / "senteval" / STSB_DEV).parent.mkdir(parents=True)
        shutil.copyfile(Path(config.sts_dev) / STSB_DEV, out / "senteval" / STSB_DEV)
    settings = {key: value for key, value in dataclasses.asdict(config).items()
                if key not in ("output", "work_dir", "stop_after", "overwrite", "corpus")}
    record = {"settings": settings, "valid": len(valid), "train": len(train), "corpus": corpus,
              "projection": config.projection_path().name,
              "targets_sha256": sha256(out / "targets.npy")}
    (out / "pack.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"Packed {len(valid)} held-out and {len(train)} training items with their {config.dim}-d targets into {out} "
          f"({sum(f.stat().st_size for f in out.rglob('*') if f.is_file()) / 1e6:.1f} MB).")


def train(args):
    from hpd_toolkit.eval.sts import load_stsb_split
    from hpd_toolkit.training.distill import (DistillConfig, build_student, make_accelerator, training_stage,
                                              write_output)
    import torch

    folder = Path(args.pack)
    if not (folder / "pack.json").is_file():
        raise ValueError(f"{folder} is not a pack (no pack.json): make one with `gpu_run.py pack`.")
    record = json.loads((folder / "pack.json").read_text())
    if sha256(folder / "targets.npy") != record["targets_sha256"]:
        raise ValueError(f"{folder}/targets.npy does not match pack.json: the pack is damaged; pack it again.")
    items = (folder / "sentences.txt").read_text(encoding="utf-8").split("\n")[:-1]
    valid, train_items = items[: record["valid"]], items[record["valid"] :]
    overrides = {key: value for key, value in vars(args).items()
                 if key in ("epochs", "lr", "warmup_steps", "eval_steps", "batch_size", "micro_batch_size", "select")
                 and value is not None}
    stsb = folder / "senteval"
    config = DistillConfig(**{**record["settings"], **overrides, "student": args.student, "layers": args.layers,
                              "corpus": [str(folder / "sentences.txt")], "output": args.output,
                              "sts_dev": str(stsb) if (stsb / STSB_DEV).is_file() else None,
                              "work_dir": args.work_dir, "max_sentences": len(train_items)})
    accelerator = make_accelerator(config)
    student = build_student(config.student, config.dim, config.layers, config.seed, False, config.matryoshka_dims)
    vectors = PackedTargets(folder / "targets.npy")
    if vectors.dim != config.dim or len(vectors.targets) != len(items):
        raise ValueError(f"{folder}: {len(vectors.targets)} targets of {vectors.dim} dimensions for {len(items)} "
                         f"items at --dim {config.dim}: the pack is damaged; pack it again.")
    identity = (torch.eye(config.dim), torch.zeros(config.dim))  # the targets are projected already
    stsb_dev = load_stsb_split(config.sts_dev, "dev") if config.sts_dev else None
    state = training_stage(config, student, stsb_dev, train_items, valid, vectors, identity, accelerator)
    output = write_output(config, state, record["corpus"], accelerator,
                          sources=[folder, config.student], extra={"targets_pack": {
                              key: record[key] for key in ("projection", "targets_sha256", "valid", "train")}})
    if args.parts_dir:
        import tempfile

        from hpd_models import load_hpd, save_hpd_folder

        parts = Path(args.parts_dir)
        parts.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as staging:
            # float16 weights (computed in float32, as releases are): a 4-layer student is 38 MB, not 76, and what
            # comes back from a device is at most 64 MiB in all
            half = Path(staging) / output.name
            save_hpd_folder(*load_hpd(output), half, weights_dtype="float16")
            shutil.copyfile(output / "distill_config.json", half / "distill_config.json")
            tar = subprocess.run(["tar", "-C", staging, "-c", output.name], check=True, capture_output=True).stdout
        for number, start in enumerate(range(0, len(tar), PART_BYTES)):
            (parts / f"model.tar.part-{number:02d}").write_bytes(tar[start : start + PART_BYTES])
        shutil.copyfile(config.run_dir() / "train_log.jsonl", parts / "train_log.jsonl")
        print(f"{output} is also in {parts} as {-(-len(tar) // PART_BYTES)} parts: cat model.tar.part-* | tar x")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    ours, distill_flags = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    packing = commands.add_parser("pack", help="here: the run's items and projected targets into one folder")
    packing.add_argument("--out", required=True, help="the pack folder to write (new)")
    packing.add_argument("--max-mb", type=float, default=24.0,
                         help="refuse a larger pack (default %(default)s: what travels beside a 40 MB tree)")
    training = commands.add_parser("train", help="there: hpd distill's training on a pack, no teacher")
    training.add_argument("--pack", required=True)
    training.add_argument("--student", required=True, help="HPD folder to train (e.g. the default model, continued)")
    training.add_argument("--layers", help="student layers to keep (default: all)")
    training.add_argument("--output", required=True, help="HPD folder to write")
    training.add_argument("--work-dir", help="checkpoints (default: OUTPUT.work)")
    for flag, kind in (("--epochs", int), ("--lr", float), ("--warmup-steps", int), ("--eval-steps", int),
                       ("--batch-size", int), ("--micro-batch-size", int)):
        training.add_argument(flag, type=kind, help="as hpd distill's (default: the packed run's)")
    training.add_argument("--select", help="as hpd distill's (default: the packed run's)")
    training.add_argument("--parts-dir", help="also write the output here as a tar in parts of at most 15 MiB")
    args = parser.parse_args(ours)
    if args.command == "train" and distill_flags:
        parser.error("train takes no hpd distill flags: the pack holds the run's settings.")
    try:
        pack(args, distill_flags) if args.command == "pack" else train(args)
    except (ValueError, OSError) as error:  # one line, as hpd's own errors
        raise SystemExit(f"gpu_run.py: error: {' '.join(str(error).split())}") from None


if __name__ == "__main__":
    main()
