"""The STS (and search) ceiling of an `hpd distill` target: a perfect copy of it, i.e. the teachers' (joined) vectors
through the work dir's projection, cut to their first k coordinates.

    python scripts/pca_ceiling.py --work-dir WORK --teacher T [--teacher T2 ...] [--teacher-weights 1,1] \
        [--projection pca] [--projection-dim 128] --pca-sentences N [--pca-min-words W] [--teacher-dtype bfloat16] \
        --dim 128,64,32 [--data DATA/senteval] [--output docs/results/ceiling] [--beir DATA/retrieval/scifact] \
        [--held-out-min-words 65]

The projection is the one `hpd distill` fitted in WORK for the same --teacher (spelled as in that command),
--teacher-weights, --projection, --dim (here --projection-dim), --pca-sentences and --pca-min-words. PCA
coordinates come in order of variance, so the first k of a 128-d projection are the k-d projection: the target of a
Matryoshka student's k-d prefix (--dim k, one projection) and, up to the PCA solver's precision, of a run trained at
k alone (--projection-dim k). Each distinct STS sentence is encoded once by each teacher (--teacher-dtype), whatever the
number of sizes; with --output, each size's results go to OUTPUT-d<k>.json in `hpd eval sts --output`'s format.
With --beir, the target is also scored on a BEIR folder's test queries as `hpd eval retrieval` scores a model
(documents as "title text", exact cosine search, nDCG@10 and Recall@100 x 100), each document encoded once.
With --held-out-min-words N, the work dir's held-out items of at least N words (never trained on, never used for
the PCA) measure what the projection keeps of the joined teacher vectors, no test set involved: the Spearman
correlation x 100 of their pairwise cosines before and after it, and the share of their energy it keeps.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hpd_toolkit.eval.retrieval import RECALL_AT, document_texts, load_beir, normalize, retrieval_scores  # noqa: E402
from hpd_toolkit.eval.sts import TASKS, evaluate_sts, format_table, write_results  # noqa: E402
from hpd_models import encode_by_length, load_encoder  # noqa: E402
from hpd_toolkit.training.distill import PROJECTIONS, check_projection, join_teachers, projection_path  # noqa: E402


class TargetEncoder:
    """Encodes sentences as the distillation target: teachers -> joined -> W t + b -> first `dim` coordinates."""

    def __init__(self, teachers, teacher_weights, weight, bias, teacher_dtype="float32"):
        self.teachers = [load_encoder(teacher) for teacher in teachers]
        self.teacher_weights, self.weight, self.bias = teacher_weights, weight, bias
        self.teacher_dtype = teacher_dtype
        self.dim = len(weight)
        self._joined = {}  # sentence -> its joined teacher vector, so each size reuses the teachers' work

    def preprocess(self, sentences):
        return self.teachers[0].preprocess(sentences)  # token counts, for batching by length

    def joined(self, sentences, batch_size=64):
        """The joined teacher vectors (the target before the projection)."""
        missing = [s for s in dict.fromkeys(sentences) if s not in self._joined]
        if missing:
            import torch

            # as hpd distill's --teacher-dtype encodes the targets
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.teacher_dtype == "bfloat16"):
                vectors = [encode_by_length(teacher, missing, batch_size, show_progress_bar=len(missing) >= 1000)
                           for teacher in self.teachers]
            self._joined.update(zip(missing, join_teachers(vectors, self.teacher_weights)))
        return np.stack([self._joined[s] for s in sentences])

    def encode(self, sentences, batch_size=64, **kwargs):
        projected = self.joined(sentences, batch_size) @ self.weight[: self.dim].T + self.bias[: self.dim]
        return projected.astype(np.float32)


def load_projection(work_dir, projection, dim, pca_sentences, teachers, teacher_weights, pca_min_words=None):
    from safetensors.numpy import load_file

    path = projection_path(work_dir, projection, dim, pca_sentences, teachers, teacher_weights, pca_min_words)
    if not path.is_file():
        there = sorted(p.name for p in Path(work_dir).glob("projection-*.safetensors"))
        raise SystemExit(f"{path.name} is not in {work_dir} (it holds {', '.join(there) or 'no projection'}): run "
                         "hpd distill with these settings first, naming the teachers exactly as it was given them.")
    tensors = load_file(str(path))
    check_projection(tensors["weight"], projection, path)
    return path, tensors["weight"], tensors["bias"]


def add_target_flags(parser):
    """The flags that name an hpd distill target (shared with residual_noise.py)."""
    parser.add_argument("--work-dir", required=True, help="the hpd distill work dir holding the projection")
    parser.add_argument("--teacher", action="append", required=True, help="as given to hpd distill (repeat)")
    parser.add_argument("--teacher-weights", help="as given to hpd distill (several teachers)")
    parser.add_argument("--projection", choices=PROJECTIONS, default="pca")
    parser.add_argument("--projection-dim", type=int, default=128, help="hpd distill's --dim (default %(default)s)")
    parser.add_argument("--pca-sentences", type=int, required=True, help="hpd distill's --pca-sentences")
    parser.add_argument("--pca-min-words", type=int, help="hpd distill's --pca-min-words")
    parser.add_argument("--teacher-dtype", choices=("float32", "bfloat16"), default="float32",
                        help="teacher compute precision, as hpd distill's (default %(default)s)")


def target_encoder(args):
    """(projection file, TargetEncoder) of the target named by add_target_flags' flags."""
    weights = [float(w) for w in args.teacher_weights.split(",")] if args.teacher_weights else None
    path, weight, bias = load_projection(args.work_dir, args.projection, args.projection_dim, args.pca_sentences,
                                         args.teacher, weights, args.pca_min_words)
    return path, TargetEncoder(args.teacher, weights, weight, bias, args.teacher_dtype)


def retrieval_ceiling(encoder, data, dims, batch_size=64):
    """{k: {"ndcg_at_10", "recall_at_100"} x 100} of the target's first k coordinates on BEIR `data`."""
    encoder.dim = len(encoder.weight)
    documents = encoder.encode(document_texts(data), batch_size)
    queries = encoder.encode(data.queries, batch_size)
    return {k: exact_search_scores(queries[:, :k], documents[:, :k], data) for k in dims}


def exact_search_scores(queries, documents, data):
    """{"ndcg_at_10", "recall_at_100"} x 100 of exact cosine search of the query vectors over the document vectors
    (rows in `data`'s order)."""
    similarity = normalize(queries) @ normalize(documents).T
    top = np.argsort(-similarity, axis=1, kind="stable")[:, :RECALL_AT]
    run = {query: {data.doc_ids[i]: float(similarity[row, i]) for i in top[row]}
           for row, query in enumerate(data.query_ids)}
    return {name: 100 * value for name, value in retrieval_scores(run, data.qrels).items()}


def held_out_texts(work_dir, min_words):
    """The work dir's held-out items of at least `min_words` words."""
    path = Path(work_dir) / "sentences" / "valid.txt"
    if not path.is_file():
        raise SystemExit(f"{path} is missing: --work-dir must be an hpd distill work dir (it holds sentences/).")
    texts = [t for t in path.read_text(encoding="utf-8").split("\n")[:-1] if len(t.split()) >= min_words]
    if len(texts) < 3:
        raise SystemExit(f"only {len(texts)} held-out items in {path} have at least {min_words} words: lower "
                         "--held-out-min-words (passages need a work dir made with --unit mixed or paragraph).")
    return texts


def held_out_kept(encoder, texts, dims, batch_size=64):
    """{k: {"cosine_spearman", "energy"} x 100}: how much of the joined vectors' pairwise cosines (Spearman
    correlation) and of their squared length the first k coordinates of the projection keep."""
    from scipy.stats import spearmanr

    joined = encoder.joined(texts, batch_size).astype(np.float64)
    upper = np.triu_indices(len(texts), k=1)
    before = (normalize(joined) @ normalize(joined).T)[upper]
    results = {}
    for k in dims:
        encoder.dim = k
        projected = encoder.encode(texts, batch_size).astype(np.float64)
        after = (normalize(projected) @ normalize(projected).T)[upper]
        energy = (projected ** 2).sum(axis=1) / (joined ** 2).sum(axis=1)
        results[k] = {"cosine_spearman": 100 * spearmanr(before, after).statistic, "energy": 100 * energy.mean()}
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_target_flags(parser)
    parser.add_argument("--dim", required=True, help="sizes to score, comma-separated, e.g. 128,64,32")
    parser.add_argument("--data", help="STS data folder (e.g. ../shared/data/senteval)")
    parser.add_argument("--protocol", choices=("senteval", "mteb"), default="senteval")
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--output", help="write OUTPUT-d<k>.json for each size (STS)")
    parser.add_argument("--beir", help="also score a BEIR retrieval folder (e.g. ../shared/data/retrieval/scifact)")
    parser.add_argument("--held-out-min-words", type=int, metavar="N",
                        help="also measure what the projection keeps on the work dir's held-out items of >= N words")
    args = parser.parse_args(argv)
    if not args.data and not args.beir and args.held_out_min_words is None:
        raise SystemExit("give --data (STS), --beir (retrieval) or --held-out-min-words, or several.")
    try:
        dims = [int(x) for x in args.dim.split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"--dim {args.dim}: give comma-separated sizes, e.g. 128,64,32.") from None
    if not dims or any(not 1 <= k <= args.projection_dim for k in dims):
        raise SystemExit(f"--dim {args.dim}: each size must be from 1 to --projection-dim {args.projection_dim}.")
    beir = load_beir(args.beir) if args.beir else None  # read and checked before the teachers cost anything
    held_out = held_out_texts(args.work_dir, args.held_out_min_words) if args.held_out_min_words is not None else None
    path, encoder = target_encoder(args)
    name = f"{path.name} ({' + '.join(Path(t).name for t in args.teacher)})"
    if held_out is not None:
        print(f"What {name} keeps of the joined teacher vectors of the {len(held_out)} held-out items of at least "
              f"{args.held_out_min_words} words ({len(held_out) * (len(held_out) - 1) // 2} pairs)")
        print("| size | pairwise cosines, Spearman | energy kept, % |\n|---|---|---|")
        for k, kept in held_out_kept(encoder, held_out, dims, args.batch_size).items():
            print(f"| {k} | {kept['cosine_spearman']:.2f} | {kept['energy']:.2f} |")
    for k in dims if args.data else ():
        encoder.dim = k
        results = evaluate_sts(encoder, args.data, protocol=args.protocol, tasks=args.tasks,
                               batch_size=args.batch_size, show_progress_bar=False)
        results["model"] = f"PCA ceiling: first {k} of {name}"
        print(format_table(results))
        if args.output:
            write_results(results, f"{args.output}-d{k}.json")
            print(f"Wrote {args.output}-d{k}.json")
    if beir is not None:
        print(f"Retrieval ceiling of {name} on {args.beir} ({len(beir.query_ids)} queries, {len(beir.doc_ids)} "
              "documents, exact cosine)")
        print("| size | nDCG@10 | Recall@100 |\n|---|---|---|")
        for k, scores in retrieval_ceiling(encoder, beir, dims, args.batch_size).items():
            print(f"| {k} | {scores['ndcg_at_10']:.2f} | {scores['recall_at_100']:.2f} |")


if __name__ == "__main__":
    main()
