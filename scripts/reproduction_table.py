"""The reproduction's table: `hpd eval sts` results of several models, their CPU encode speed, the paper's rows.

    python scripts/reproduction_table.py --results NAME=results.json ... --speed encode_speed.json \
        [--teacher NAME --student NAME --baseline NAME] [--plot speed_quality.png]

Each `--results` file comes from `hpd eval sts --output` (SentEval protocol); `--speed` from
`benchmarks/encode_speed.py --json`, measured in one run with the same NAMEs. With --teacher, --student
and --baseline it also checks the reproduction's goals: student average >= 99% of the teacher's and above the
baseline's, encode throughput >= 8x the teacher's and >= 1.4x the baseline's, embeddings >= 6x smaller.
With --plot it draws what the student buys: CPU sentences/s (log axis) against the STS average, marker area
by embedding dimension, for every row with a measured speed.
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hpd_toolkit.eval.sts import PUBLISHED, TASK_TABLE, TASKS  # noqa: E402

# What the paper's models are (HPD paper, Table 1; SimCSE-RoBERTa-large is its teacher): parameters, dimension.
PUBLISHED_SIZES = {"HPD-TinyBERT-F128": (14.3e6, 128), "HPD-MiniLM-F128": (22.7e6, 128),
                   "SimCSE-RoBERTa-large": (355e6, 1024)}


def load_rows(results_specs, speed_file):
    speed = json.loads(Path(speed_file).read_text())["rows"] if speed_file else {}
    rows = {}
    for spec in results_specs:
        name, _, path = spec.partition("=")
        if not path:
            raise SystemExit(f"--results takes NAME=FILE; got {spec!r}.")
        result = json.loads(Path(path).read_text())
        if result.get("protocol") != "senteval":
            raise SystemExit(f"{path}: protocol {result.get('protocol')!r}; the paper's table is the senteval protocol.")
        measured = speed.get(name, {})
        rows[name] = {"scores": [result["scores"][t] for t in (*TASKS, "Avg")], "parameters": result["parameters"],
                      "dim": result["embedding_dim"], "sentences_per_s": measured.get("sentences_per_s")}
    return rows


def markdown(rows):
    headings = [TASK_TABLE[t].column for t in TASKS] + ["Avg", "parameters", "dim", "CPU sentences/s",
                                                    "bytes/sentence"]
    lines = ["| model | " + " | ".join(headings) + " |", "|---" * (len(headings) + 1) + "|"]
    for name, row in rows.items():
        speed = f"{row['sentences_per_s']:.0f}" if row["sentences_per_s"] else "–"
        lines.append(f"| {name} | " + " | ".join(f"{v:.2f}" for v in row["scores"]) +
                     f" | {row['parameters'] / 1e6:.1f}M | {row['dim']} | {speed} | {4 * row['dim']:,} |")
    for name, values in PUBLISHED.items():
        parameters, dim = PUBLISHED_SIZES[name]
        lines.append(f"| {name} (paper) | " + " | ".join(f"{v:.2f}" for v in values) +
                     f" | {parameters / 1e6:.1f}M | {dim} | – | {4 * dim:,} |")
    return "\n".join(lines)


def goals(rows, teacher, student, baseline):
    t, s, b = rows[teacher], rows[student], rows[baseline]
    share = s["scores"][-1] / t["scores"][-1]
    checks = [(f"average {s['scores'][-1]:.2f} = {100 * share:.1f}% of the teacher's {t['scores'][-1]:.2f}",
               "≥ 99%", share >= 0.99),
              (f"embeddings {t['dim'] / s['dim']:.1f}x smaller ({4 * s['dim']} vs {4 * t['dim']} bytes)", "≥ 6x",
               t["dim"] / s["dim"] >= 6),
              (f"average {s['scores'][-1]:.2f} vs {baseline} {b['scores'][-1]:.2f}", "higher",
               s["scores"][-1] > b["scores"][-1])]
    if s["sentences_per_s"] and t["sentences_per_s"]:
        ratio = s["sentences_per_s"] / t["sentences_per_s"]
        checks.insert(1, (f"CPU throughput {ratio:.1f}x the teacher's ({s['sentences_per_s']:.0f} vs "
                          f"{t['sentences_per_s']:.0f} sentences/s)", "≥ 8x", ratio >= 8))
    if s["sentences_per_s"] and b["sentences_per_s"]:
        ratio = s["sentences_per_s"] / b["sentences_per_s"]
        checks.insert(2, (f"CPU throughput {ratio:.2f}x {baseline}'s ({s['sentences_per_s']:.0f} vs "
                          f"{b['sentences_per_s']:.0f} sentences/s)", "≥ 1.4x", ratio >= 1.4))
    lines = ["| goal for the student | measured | met |", "|---|---|---|"]
    lines += [f"| {goal} | {text} | {'yes' if met else 'no'} |" for text, goal, met in checks]
    return "\n".join(lines)


def plot(rows, output):
    """Speed against quality: what each model costs on a CPU and what it scores."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no screen
    import matplotlib.pyplot as plt

    measured = {name: row for name, row in rows.items() if row["sentences_per_s"]}
    if not measured:
        raise SystemExit("--plot needs --speed with the same NAMEs as --results.")
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for name, row in measured.items():
        axes.scatter(row["sentences_per_s"], row["scores"][-1], s=row["dim"] / 2, alpha=0.6)
        axes.annotate(f"{name}\n{row['dim']}-d", (row["sentences_per_s"], row["scores"][-1]),
                      textcoords="offset points", xytext=(8, -4), fontsize=8)
    axes.set_xscale("log")
    axes.set_xlabel("CPU sentences/s (2 cores, log scale)")
    axes.set_ylabel("STS average, Spearman x 100 (7 tasks)")
    axes.set_title("Speed against quality (marker area: embedding dimension)")
    low, high = min(r["sentences_per_s"] for r in measured.values()), max(r["sentences_per_s"] for r in measured.values())
    axes.set_xlim(low / 1.5, high * 3)  # room for the labels on the right
    axes.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    figure.savefig(output, dpi=120)
    plt.close(figure)
    return Path(output)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", action="append", required=True, metavar="NAME=FILE")
    parser.add_argument("--speed", help="benchmarks/encode_speed.py --json output (same NAMEs)")
    parser.add_argument("--teacher")
    parser.add_argument("--student")
    parser.add_argument("--baseline")
    parser.add_argument("--plot", help="also draw speed against quality into this PNG")
    args = parser.parse_args()
    rows = load_rows(args.results, args.speed)
    print(markdown(rows))
    if args.plot:
        print(f"Wrote {plot(rows, args.plot)}")
    if args.teacher and args.student and args.baseline:
        missing = [n for n in (args.teacher, args.student, args.baseline) if n not in rows]
        if missing:
            raise SystemExit(f"no --results named {', '.join(missing)}.")
        print()
        print(goals(rows, args.teacher, args.student, args.baseline))


if __name__ == "__main__":
    main()
