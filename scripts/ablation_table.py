"""The ablation table: one row per `hpd eval sts` results file of an `hpd distill` output.

    python scripts/ablation_table.py docs/results/ablations/*.json

Each row reads the training settings from the evaluated model's distill_config.json: sentences, epochs,
learning rate, projection, the selected step and its STS-B dev Spearman (the selection metric), then the
STS test scores (reported, never used to choose).
"""

import argparse
import json
from pathlib import Path


def row(results_path):
    results = json.loads(Path(results_path).read_text())
    record_path = Path(results["model"]) / "distill_config.json"
    if not record_path.is_file():
        raise SystemExit(f"{results_path}: {record_path} is missing; ablation rows need `hpd distill` outputs.")
    record = json.loads(record_path.read_text())
    settings, validation = record["settings"], record["validation"]
    return {"name": Path(results_path).stem, "sentences": record["corpus"]["train"], "epochs": settings["epochs"],
            "lr": settings["lr"], "projection": settings["projection"],
            "head": settings.get("head_init", "random"), "step": record["best_step"],
            "dev": validation.get("stsb_dev_spearman"), "valid_mse": validation["valid_mse"],
            "stsb": results["scores"]["STSBenchmark"], "avg": results["scores"]["Avg"]}


def markdown(rows):
    lines = ["| run | sentences | epochs | lr | projection | head init | selected step | STS-B dev | valid MSE | "
             "STS-B test | STS Avg (test) |", "|---" * 11 + "|"]
    for r in rows:
        dev = f"{r['dev']:.2f}" if r["dev"] is not None else "–"
        lines.append(f"| {r['name']} | {r['sentences']:,} | {r['epochs']} | {r['lr']:g} | {r['projection']} | {r['head']} | "
                     f"{r['step']} | {dev} | {r['valid_mse']:.3e} | {r['stsb']:.2f} | {r['avg']:.2f} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", help="hpd eval sts --output files of hpd distill outputs")
    args = parser.parse_args()
    print(markdown([row(path) for path in args.results]))


if __name__ == "__main__":
    main()
