"""The ablation table: one row per `hpd distill` output, read from its distill_config.json.

    python scripts/ablation_table.py NAME=OUTPUT_DIR ... [--results NAME=results.json ...]

Each row: what differs between runs (teachers, student layers, unit, sentences, epochs, learning rate,
projection, head initialisation, training precision), the steps trained and the training stage's minutes,
then the selected step with its validation MSE and STS-B dev Spearman: the guides runs are chosen by.
`--results` adds the STS test average of final candidates only (`hpd eval sts --output`); test figures are
reported, never used to choose.
"""

import argparse
import json
from pathlib import Path

HEADINGS = ("run", "teachers", "layers", "unit", "sentences", "epochs", "lr", "projection", "head", "precision",
            "steps", "train min", "selected step", "valid MSE", "STS-B dev", "STS Avg (test)")


def row(name, output, results=None):
    record_path = Path(output) / "distill_config.json"
    if not record_path.is_file():
        raise SystemExit(f"{record_path} is missing; ablation rows need `hpd distill` output folders.")
    record = json.loads(record_path.read_text())
    settings, validation = record["settings"], record["validation"]
    teachers = settings["teacher"] if isinstance(settings["teacher"], list) else [settings["teacher"]]
    weights = settings.get("teacher_weights")
    teacher_text = " + ".join(Path(t).name + (f" ×{w:g}" if weights else "")
                              for t, w in zip(teachers, weights or [None] * len(teachers)))
    dev = validation.get("stsb_dev_spearman")
    seconds = record.get("training_seconds")
    return (name, teacher_text, ",".join(map(str, settings["layers"])) if settings.get("layers") else "all",
            settings.get("unit", "sentence"), f"{record['corpus']['train']:,}", str(settings["epochs"]),
            f"{settings['lr']:g}", settings["projection"], settings.get("head_init", "random"),
            settings.get("student_dtype", "auto"), str(record.get("steps", "–")),
            f"{seconds / 60:.1f}" if seconds else "–", str(record["best_step"]), f"{validation['valid_mse']:.3e}",
            f"{dev:.2f}" if dev is not None else "–",
            f"{json.loads(Path(results).read_text())['scores']['Avg']:.2f}" if results else "–")


def markdown(rows):
    lines = ["| " + " | ".join(HEADINGS) + " |", "|---" * len(HEADINGS) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def pairs(specs, flag):
    parsed = [spec.partition("=")[::2] for spec in specs]
    if any(not path for _, path in parsed):
        raise SystemExit(f"{flag} takes NAME=PATH.")
    return dict(parsed)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", metavar="NAME=OUTPUT_DIR", help="hpd distill output folders")
    parser.add_argument("--results", action="append", default=[], metavar="NAME=FILE",
                        help="hpd eval sts --output of a final candidate (same NAME)")
    args = parser.parse_args()
    results = pairs(args.results, "--results")
    print(markdown([row(name, output, results.get(name)) for name, output in pairs(args.runs, "runs").items()]))


if __name__ == "__main__":
    main()
