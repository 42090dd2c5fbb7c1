"""Which layers should the student keep? Scores the starting point of every cut, before any training.

    python scripts/layer_search.py --keep 4 [--json OUT] -- HPD-DISTILL-FLAGS (without --layers)

For each way of keeping `--keep` of the student's layers (or each `--cuts 0,1,3,5 0,2,3,5`), it runs
`hpd distill ... --layers CUT --stop-after start`: the cut, its head fitted as the flags say, validated at
step 0 (valid MSE; STS-B dev with --sts-dev) and checkpointed in its run folder, so that the same distill
command without --stop-after trains the chosen cut on from there. In this repository's ablations every cut ended
its training close to where it started on STS-B dev (docs/reproduction.md, rule 5), so the start is a cheap
guide. Prints the cuts ranked by STS-B dev (by valid MSE without --sts-dev).
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
    choice = parser.add_mutually_exclusive_group(required=True)
    choice.add_argument("--keep", type=int, help="score every cut that keeps this many of the student's layers")
    choice.add_argument("--cuts", nargs="+", help="score these cuts, e.g. 0,1,3,5 0,2,3,5")
    parser.add_argument("--json", help="also write the ranked cuts here")
    args = parser.parse_args(ours)
    if "--layers" in distill_flags or "--stop-after" in distill_flags:
        parser.error("give the hpd distill flags without --layers and --stop-after: the search sets both.")

    try:
        values, cuts = settings_and_cuts(args, distill_flags)
        rows = [score_start(values, cut, number, len(cuts)) for number, cut in enumerate(cuts, 1)]
    except (ValueError, OSError) as error:  # one line, as hpd's own errors
        raise SystemExit(f"layer_search.py: error: {' '.join(str(error).split())}") from None
    by_stsb = all(row["stsb_dev_spearman"] is not None for row in rows)
    rows.sort(key=lambda row: -row["stsb_dev_spearman"] if by_stsb else row["valid_mse"])

    print("\n| layers | STS-B dev at step 0 | valid MSE at step 0 |\n|---|---|---|")
    for row in rows:
        stsb = f"{row['stsb_dev_spearman']:.2f}" if row["stsb_dev_spearman"] is not None else "–"
        print(f"| {row['layers']} | {stsb} | {row['valid_mse']:.3e} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"ranked_by": "stsb_dev_spearman" if by_stsb else "valid_mse",
                                               "cuts": rows}, indent=2) + "\n")
        print(f"Wrote {args.json}")


def settings_and_cuts(args, distill_flags):
    """The hpd distill settings the flags (and their --config) give, and the cuts to score."""
    values = hpd_cli.distill_settings(hpd_cli.build_parser().parse_args(["distill", *distill_flags]))
    if args.cuts:
        try:
            return values, [[int(i) for i in cut.split(",")] for cut in args.cuts]
        except ValueError:
            raise ValueError(f"--cuts takes comma-separated layer numbers, e.g. 0,1,3,5 0,2,3,5; got "
                             f"{' '.join(args.cuts)}.") from None
    from transformers import PretrainedConfig

    layers = PretrainedConfig.get_config_dict(values["student"])[0]["num_hidden_layers"]  # reads, runs no code
    if not 0 < args.keep <= layers:
        raise ValueError(f"--keep must be between 1 and the student's {layers} layers; got {args.keep}.")
    return values, [list(cut) for cut in itertools.combinations(range(layers), args.keep)]


def score_start(values, cut, number, count):
    """Step 0 of the run that keeps `cut`: validated now, or read from its log if that run has it already."""
    from hpd_toolkit.training.distill import DistillConfig, distill, read_log_record

    print(f"== cut {number} of {count}: layers {','.join(map(str, cut))}", flush=True)
    config = DistillConfig(**{**values, "layers": cut, "stop_after": "start"})
    distill(config)
    start = read_log_record(config.run_dir(), 0)
    return {"layers": ",".join(map(str, cut)), "valid_mse": start["valid_mse"],
            "stsb_dev_spearman": start.get("stsb_dev_spearman"), "run_dir": str(config.run_dir())}

if __name__ == "__main__":
    main()
