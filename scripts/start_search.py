"""Which start should the student train from? Scores the starting point of each cut of the student's layers and
each weighting of the teachers, before any training.

    python scripts/start_search.py --keep 4 [--json OUT] -- HPD-DISTILL-FLAGS (without --layers)
    python scripts/start_search.py --teacher-weights 1,0.5 1,1 1,2 -- HPD-DISTILL-FLAGS (without --teacher-weights)

For each way of keeping `--keep` of the student's layers (or each of `--cuts 0,1,3,5 0,2,3,5`; without either, the
flags' own --layers), and for each of `--teacher-weights` (without it, the flags' own), it runs
`hpd distill ... --layers CUT --teacher-weights W --stop-after start`: the cut, its head fitted as the flags say,
validated at step 0 (valid MSE; STS-B dev with --sts-dev) and checkpointed in its run folder, so that the same
distill command without --stop-after trains that start on from there. In this repository's ablations every cut ended
its training close to where it started on STS-B dev (docs/reproduction.md, rule 5), so the start is a cheap guide.
Prints the starts ranked by STS-B dev (by valid MSE without --sts-dev, which is allowed only for one weighting:
another weighting is another target, and its MSE is not comparable).
"""

import argparse
import itertools
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import hpd_cli  # noqa: E402


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    ours, distill_flags = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cuts = parser.add_mutually_exclusive_group()
    cuts.add_argument("--keep", type=int, help="score every cut that keeps this many of the student's layers")
    cuts.add_argument("--cuts", nargs="+", help="score these cuts, e.g. 0,1,3,5 0,2,3,5")
    parser.add_argument("--teacher-weights", nargs="+", metavar="W",
                        help="score each of these weightings of the teachers, e.g. 1,0.5 1,1 1,2")
    parser.add_argument("--json", help="also write the ranked starts here")
    args = parser.parse_args(ours)
    searched = {"--layers": args.keep is not None or args.cuts, "--teacher-weights": args.teacher_weights}
    if not any(searched.values()):
        parser.error("give --keep or --cuts (layers), --teacher-weights, or both: what the search varies.")
    for flag in [flag for flag, given in searched.items() if given] + ["--stop-after"]:
        if flag in distill_flags:
            parser.error(f"give the hpd distill flags without {flag}: the search sets it.")

    try:
        values, starts = settings_and_starts(args, distill_flags)
        if args.teacher_weights and len(args.teacher_weights) > 1 and not values.get("sts_dev"):
            raise ValueError("comparing teacher weightings needs --sts-dev among the hpd distill flags: each "
                             "weighting is another target, so their valid MSEs are not comparable.")
        rows = [score_start(values, start, number, len(starts)) for number, start in enumerate(starts, 1)]
    except (ValueError, OSError) as error:  # one line, as hpd's own errors
        raise SystemExit(f"start_search.py: error: {' '.join(str(error).split())}") from None
    by_stsb = all(row["stsb_dev_spearman"] is not None for row in rows)
    rows.sort(key=lambda row: -row["stsb_dev_spearman"] if by_stsb else row["valid_mse"])

    print("\n| layers | teacher weights | STS-B dev at step 0 | valid MSE at step 0 |\n|---|---|---|---|")
    for row in rows:
        stsb = f"{row['stsb_dev_spearman']:.2f}" if row["stsb_dev_spearman"] is not None else "–"
        print(f"| {row['layers']} | {row['teacher_weights'] or 'default'} | {stsb} | {row['valid_mse']:.3e} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"ranked_by": "stsb_dev_spearman" if by_stsb else "valid_mse",
                                               "starts": rows}, indent=2) + "\n")
        print(f"Wrote {args.json}")


def settings_and_starts(args, distill_flags):
    """The hpd distill settings the flags (and their --config) give, and the (cut, teacher weights) to score."""
    values = hpd_cli.distill_settings(hpd_cli.build_parser().parse_args(["distill", *distill_flags]))
    weightings = args.teacher_weights or [values.get("teacher_weights")]
    if args.cuts:
        try:
            cuts = [[int(i) for i in cut.split(",")] for cut in args.cuts]
        except ValueError:
            raise ValueError(f"--cuts takes comma-separated layer numbers, e.g. 0,1,3,5 0,2,3,5; got "
                             f"{' '.join(args.cuts)}.") from None
    elif args.keep is not None:
        from transformers import PretrainedConfig

        layers = PretrainedConfig.get_config_dict(values["student"])[0]["num_hidden_layers"]  # reads, runs no code
        if not 0 < args.keep <= layers:
            raise ValueError(f"--keep must be between 1 and the student's {layers} layers; got {args.keep}.")
        cuts = [list(cut) for cut in itertools.combinations(range(layers), args.keep)]
    else:
        cuts = [values.get("layers")]
    return values, list(itertools.product(cuts, weightings))


def score_start(values, start, number, count):
    """Step 0 of the run from `start` (cut, teacher weights): validated now, or read from its log if that run has
    it already."""
    from hpd_toolkit.training.distill import DistillConfig, distill, read_log_record

    cut, weights = start
    config = DistillConfig(**{**values, "layers": cut, "teacher_weights": weights, "stop_after": "start"})
    layers = ",".join(map(str, config.layers)) if config.layers else "all"
    shown = ",".join(f"{w:g}" for w in config.teacher_weights) if config.teacher_weights else None
    print(f"== start {number} of {count}: layers {layers}, teacher weights {shown or 'default'}", flush=True)
    distill(config)
    record = read_log_record(config.run_dir(), 0)
    return {"layers": layers, "teacher_weights": shown, "valid_mse": record["valid_mse"],
            "stsb_dev_spearman": record.get("stsb_dev_spearman"), "run_dir": str(config.run_dir())}


if __name__ == "__main__":
    main()
