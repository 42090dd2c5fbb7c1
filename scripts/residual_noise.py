"""How much STS (or search) a student's error costs: STS-B dev of the target, of each student, and of the target
plus noise of each student's size.

    python scripts/residual_noise.py --work-dir WORK --teacher T [--teacher T2 ...] [--teacher-weights 1,1] \
        --pca-sentences N (--data DATA/senteval | --beir DATA/retrieval/scifact) --student NAME=MODEL [--student ...] \
        [--scales 1,0.5] [--trials 5] [--seed 0]

The target flags are pca_ceiling.py's (the projection `hpd distill` fitted in WORK). For each student (an HPD model
of that target's dimension) it prints the mean squared error to the target over the STS-B dev sentences, and the
STS-B dev Spearman x 100 of the target with three kinds of error of exactly that size added (mean and standard
deviation over --trials draws): isotropic Gaussian noise; Gaussian noise with the student's residual mean and
covariance; the student's own residuals given to other sentences (shuffled). If these cost as much as the student's
real error, the error acts as noise and only its size matters; if the student scores lower, its error is aligned
with what STS measures. STS-B dev only: no test set enters the analysis. --scales also adds the same kinds of error
at other fractions of the student's size (the error a closer copy would leave).

--beir scores a BEIR test set instead (nDCG@10 x 100 of exact cosine search, documents as "title text", queries and
documents each with noise of the student's own error on them): a test set, so this is for reporting what a closer
copy would buy in search, never for choosing a run.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pca_ceiling import add_target_flags, exact_search_scores, target_encoder  # noqa: E402
from hpd_toolkit.eval.retrieval import document_texts, load_beir  # noqa: E402
from hpd_toolkit.eval.sts import load_stsb_split, spearman_x100  # noqa: E402
from hpd_models import encode_by_length, load_encoder  # noqa: E402


def noise_rows(target, residual, score, trials, rng, scale=1.0, groups=None):
    """(kind, mean, std) of the score of the target plus each kind of error of the residual's size times `scale`.
    `groups` (row index arrays, default all rows one group) get each their own error: queries and documents."""
    groups = [np.arange(len(target))] if groups is None else groups

    def by_group(draw):
        noise = np.empty_like(target)
        for rows in groups:
            noise[rows] = draw(residual[rows])
        return noise

    draws = {
        "isotropic Gaussian noise": lambda r: rng.normal(0, np.sqrt(np.mean(r ** 2)), r.shape),
        "Gaussian noise, its residual mean and covariance":
            lambda r: rng.multivariate_normal(r.mean(0), np.cov(r, rowvar=False), len(r)),
        "its residuals, shuffled across sentences": lambda r: r[rng.permutation(len(r))],
    }
    rows = []
    for kind, draw in draws.items():
        scores = [score(target + scale * by_group(draw)) for _ in range(trials)]
        rows.append((kind, float(np.mean(scores)), float(np.std(scores))))
    return rows


def scales_arg(text):
    try:
        scales = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        scales = []
    if not scales or any(not x > 0 for x in scales):
        raise argparse.ArgumentTypeError(f"{text!r}: give positive fractions of the student's error, e.g. 1,0.5")
    return scales


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_target_flags(parser)
    parser.add_argument("--data", help="STS data folder holding STS-B dev (e.g. ../shared/data/senteval)")
    parser.add_argument("--beir", help="a BEIR test set instead (e.g. ../shared/data/retrieval/scifact): reported only")
    parser.add_argument("--student", action="append", required=True, metavar="NAME=MODEL",
                        help="a student of this target (repeat)")
    parser.add_argument("--scales", type=scales_arg, default=[1.0],
                        help="sizes of the added error, as fractions of each student's (default 1)")
    parser.add_argument("--trials", type=int, default=5, help="noise draws per row (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if any("=" not in s for s in args.student):
        raise SystemExit("--student takes NAME=MODEL, e.g. --student default=releases/HPD-MiniLM-L4-F128.")
    if args.trials < 1:
        raise SystemExit(f"--trials {args.trials}: give at least 1.")
    if bool(args.data) == bool(args.beir):
        raise SystemExit("give --data (STS-B dev) or --beir (a retrieval test set, reported only), not both.")

    groups = None
    if args.data:
        pairs = load_stsb_split(args.data, "dev")
        texts = list(dict.fromkeys(pairs.sentences1 + pairs.sentences2))
        row = {s: i for i, s in enumerate(texts)}
        first, second = (np.array([row[s] for s in side]) for side in (pairs.sentences1, pairs.sentences2))
        score = lambda vectors: spearman_x100(vectors[first], vectors[second], pairs.scores)  # noqa: E731
        heading = f"STS-B dev: {len(pairs.scores)} pairs, {len(texts)} sentences"
        metric = "STS-B dev"
    else:
        data = load_beir(args.beir)
        texts, count = data.queries + document_texts(data), len(data.queries)
        groups = [np.arange(count), np.arange(count, len(texts))]  # queries and documents: each its own error size
        score = lambda vectors: exact_search_scores(vectors[:count], vectors[count:], data)["ndcg_at_10"]  # noqa
        heading = f"{args.beir} (a test set: reported, never chosen on): {count} queries, {len(texts) - count} documents"
        metric = "nDCG@10"
    path, encoder = target_encoder(args)
    target = encoder.encode(texts)
    rng = np.random.default_rng(args.seed)

    print(f"{heading}; target {path.name}; {args.trials} draws")
    print(f"| vectors | MSE to the target | {metric} |\n|---|---|---|")
    print(f"| target (a perfect copy) | 0 | {score(target):.2f} |")
    for name, model in (s.split("=", 1) for s in args.student):
        student_encoder = load_encoder(model)
        student = (student_encoder.encode(texts, convert_to_numpy=True, show_progress_bar=False) if args.data else
                   encode_by_length(student_encoder, texts, 64, show_progress_bar=True))  # as hpd eval retrieval
        if student.shape != target.shape:
            raise SystemExit(f"{model} gives {student.shape[1]}-d vectors but the target has {target.shape[1]}: "
                             "give a student distilled on this target (its --dim and projection).")
        residual = student - target
        mse = np.mean(residual ** 2)
        print(f"| {name} | {mse:.3e} | {score(student):.2f} |")
        for scale in args.scales:
            size = f"{name}" if scale == 1 else f"{name} at {scale:g}x its size"
            for kind, mean, std in noise_rows(target, residual, score, args.trials, rng, scale, groups):
                print(f"| target + {kind} of {size} | {scale ** 2 * mse:.3e} | {mean:.2f} ± {std:.2f} |")


if __name__ == "__main__":
    main()
