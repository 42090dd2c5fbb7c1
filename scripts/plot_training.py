"""Plot a distillation run's training curve: valid MSE and STS-B dev Spearman by step.

    python scripts/plot_training.py RUN [RUN ...] docs/training_curve.png [--title TEXT]

RUN is an `hpd distill` output folder (its distill_config.json names the run) or a train_log.jsonl. Several RUNs
are stages of one training, each continuing the one before (`hpd distill --student PREVIOUS-OUTPUT`): they are drawn
as one curve, each stage's steps after the previous stage's last, with a dotted line where a stage starts.
"""

import argparse
import json
from pathlib import Path


def read_evaluations(log_path):
    """The evaluation records of `hpd distill`'s train_log.jsonl (those with valid_mse), in step order."""
    path = Path(log_path)
    if (path / "distill_config.json").is_file():
        path = Path(json.loads((path / "distill_config.json").read_text())["run_dir"]) / "train_log.jsonl"
    if not path.is_file():
        raise SystemExit(f"{path}: no such training log (hpd distill writes WORK_DIR/run-<hash>/train_log.jsonl).")
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    evaluations = sorted((r for r in records if "valid_mse" in r), key=lambda r: r["step"])
    if not evaluations:
        raise SystemExit(f"{path} holds no evaluations yet (no records with valid_mse).")
    return evaluations


def chain(stages):
    """One curve from the evaluations of consecutive stages: (evaluations, the steps where stages 2.. start).
    A stage's step 0 validates the previous stage's output, so it is drawn at that stage's last step."""
    chained, joins, offset = [], [], 0
    for index, evaluations in enumerate(stages):
        if index:
            joins.append(offset)
        chained += [{**r, "step": r["step"] + offset} for r in evaluations]
        offset = chained[-1]["step"]
    return chained, joins


def plot(evaluations, output, title=None, joins=()):
    import matplotlib

    matplotlib.use("Agg")  # files only, no screen
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in evaluations]
    figure, mse_axis = plt.subplots(figsize=(7, 4), dpi=120)
    mse_axis.plot(steps, [r["valid_mse"] for r in evaluations], "o-", color="tab:blue", label="valid MSE")
    mse_axis.set_xlabel("optimiser step")
    mse_axis.set_ylabel("valid MSE (projected teacher)", color="tab:blue")
    mse_axis.set_yscale("log")
    if any("stsb_dev_spearman" in r for r in evaluations):
        sts_axis = mse_axis.twinx()
        dev = [(r["step"], r["stsb_dev_spearman"]) for r in evaluations if "stsb_dev_spearman" in r]
        sts_axis.plot(*zip(*dev), "s-", color="tab:red", label="STS-B dev Spearman x100")
        sts_axis.set_ylabel("STS-B dev Spearman x100", color="tab:red")
        best = max(dev, key=lambda point: point[1])
        sts_axis.annotate(f"best {best[1]:.2f} @ {best[0]}", best, textcoords="offset points", xytext=(-60, -20))
    for step in joins:
        mse_axis.axvline(step, color="grey", linestyle=":", linewidth=1)
    mse_axis.set_title(title or "HPD distillation")
    mse_axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(output)
    return Path(output)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log", nargs="+", help="hpd distill output folder, or the train_log.jsonl of a run; several: "
                                               "stages of one training, in order")
    parser.add_argument("output", help="PNG file to write")
    parser.add_argument("--title")
    args = parser.parse_args()
    evaluations, joins = chain([read_evaluations(log) for log in args.log])
    print(f"Wrote {plot(evaluations, args.output, args.title, joins)}")


if __name__ == "__main__":
    main()
