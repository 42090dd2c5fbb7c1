"""How much STS a student's error costs: STS-B dev of the target, of each student, and of the target plus noise
of each student's size.

    python scripts/residual_noise.py --work-dir WORK --teacher T [--teacher T2 ...] [--teacher-weights 1,1] \
        --pca-sentences N --data DATA/senteval --student NAME=MODEL [--student ...] [--trials 5] [--seed 0]

The target flags are pca_ceiling.py's (the projection `hpd distill` fitted in WORK). For each student (an HPD model
of that target's dimension) it prints the mean squared error to the target over the STS-B dev sentences, and the
STS-B dev Spearman x 100 of the target with three kinds of error of exactly that size added (mean and standard
deviation over --trials draws): isotropic Gaussian noise; Gaussian noise with the student's residual mean and
covariance; the student's own residuals given to other sentences (shuffled). If these cost as much as the student's
real error, the error acts as noise and only its size matters; if the student scores lower, its error is aligned
with what STS measures. STS-B dev only: no test set enters the analysis.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pca_ceiling import add_target_flags, target_encoder  # noqa: E402
from hpd_toolkit.eval.sts import load_stsb_split, spearman_x100  # noqa: E402
from hpd_models import load_encoder  # noqa: E402


def noise_rows(target, residual, score, trials, rng):
    """(kind, mean, std) of the STS-B dev score of the target plus each kind of error of the residual's size."""
    mse = np.mean(residual ** 2)
    draws = {
        "isotropic Gaussian noise": lambda: rng.normal(0, np.sqrt(mse), target.shape),
        "Gaussian noise, its residual mean and covariance":
            lambda: rng.multivariate_normal(residual.mean(0), np.cov(residual, rowvar=False), len(target)),
        "its residuals, shuffled across sentences": lambda: residual[rng.permutation(len(target))],
    }
    rows = []
    for kind, draw in draws.items():
        scores = [score(target + draw()) for _ in range(trials)]
        rows.append((kind, float(np.mean(scores)), float(np.std(scores))))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_target_flags(parser)
    parser.add_argument("--data", required=True, help="STS data folder holding STS-B dev (e.g. ../shared/data/senteval)")
    parser.add_argument("--student", action="append", required=True, metavar="NAME=MODEL",
                        help="a student of this target (repeat)")
    parser.add_argument("--trials", type=int, default=5, help="noise draws per row (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if any("=" not in s for s in args.student):
        raise SystemExit("--student takes NAME=MODEL, e.g. --student default=releases/HPD-MiniLM-L4-F128.")
    if args.trials < 1:
        raise SystemExit(f"--trials {args.trials}: give at least 1.")

    pairs = load_stsb_split(args.data, "dev")
    sentences = list(dict.fromkeys(pairs.sentences1 + pairs.sentences2))
    row = {s: i for i, s in enumerate(sentences)}
    first, second = (np.array([row[s] for s in side]) for side in (pairs.sentences1, pairs.sentences2))
    score = lambda vectors: spearman_x100(vectors[first], vectors[second], pairs.scores)  # noqa: E731
    path, encoder = target_encoder(args)
    target = encoder.encode(sentences)
    rng = np.random.default_rng(args.seed)

    print(f"STS-B dev: {len(pairs.scores)} pairs, {len(sentences)} sentences; target {path.name}; {args.trials} draws")
    print("| vectors | MSE to the target | STS-B dev |\n|---|---|---|")
    print(f"| target (a perfect copy) | 0 | {score(target):.2f} |")
    for name, model in (s.split("=", 1) for s in args.student):
        student = load_encoder(model).encode(sentences, convert_to_numpy=True, show_progress_bar=False)
        if student.shape != target.shape:
            raise SystemExit(f"{model} gives {student.shape[1]}-d vectors but the target has {target.shape[1]}: "
                             "give a student distilled on this target (its --dim and projection).")
        residual = student - target
        mse = np.mean(residual ** 2)
        print(f"| {name} | {mse:.3e} | {score(student):.2f} |")
        for kind, mean, std in noise_rows(target, residual, score, args.trials, rng):
            print(f"| target + {kind} of {name} | {mse:.3e} | {mean:.2f} ± {std:.2f} |")


if __name__ == "__main__":
    main()
