"""How closely a student copies its target on texts longer than it reads, at each maximum input length.

    python scripts/long_text_check.py --work-dir WORK --teacher T [--teacher T2 ...] [--teacher-weights 1,1] \
        --pca-sentences N --student MODEL --corpus WIKI [--texts 500] [--min-words 250] [--max-words 400] \
        [--lengths 256,384]

The target flags are pca_ceiling.py's (the projection `hpd distill` fitted in WORK). The texts are Wikipedia
articles (WikiExtractor files under WIKI, e.g. ../shared/data/corpus/enwiki_wikitasks): the paragraphs of one
article joined and cut at a sentence end to at most --max-words, kept when at least --min-words remain, one text
per article; documents of this length (a SciFact abstract is 215 words on average) are longer than anything
`hpd distill` trains on. The target encodes them as the teachers read them (each at its own maximum length). For
each --lengths value the student reads them truncated to that many tokens, and the script prints the share of
texts cut, the MSE and the mean cosine to the target, and the Pearson correlation of the students' pairwise
cosines with the target's (what search ranks by). No test set is read: this is a guide for a choice no dev set
here measures, the maximum length a model reads documents at.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pca_ceiling import add_target_flags, target_encoder  # noqa: E402
from hpd_models import load_encoder  # noqa: E402
from hpd_toolkit.eval.retrieval import normalize  # noqa: E402
from hpd_toolkit.training.corpus import SENTENCE_END, corpus_files  # noqa: E402

MIN_PARAGRAPH_WORDS = 12  # shorter lines are titles and section headings


def article_texts(folder, count, min_words, max_words):
    """Up to `count` texts, one per article, in the corpus's file order."""
    texts = []
    for path in corpus_files(folder):
        article = []
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("<doc"):
                article = []
            elif line.startswith("</doc"):
                text = cut_at_sentence(" ".join(article), max_words)
                if len(text.split()) >= min_words:
                    texts.append(text)
                    if len(texts) == count:
                        return texts
            elif len(line.split()) >= MIN_PARAGRAPH_WORDS:
                article.append(line.strip())
    return texts


def cut_at_sentence(text, max_words):
    """The longest run of whole leading sentences with at most `max_words` words."""
    kept, words = [], 0
    for sentence in SENTENCE_END.split(text):
        words += len(sentence.split())
        if words > max_words:
            break
        kept.append(sentence)
    return " ".join(kept)


def fidelity(student, target):
    """(MSE, mean cosine, correlation of the pairwise cosines) of `student` vectors against `target` ones."""
    s, t = normalize(student), normalize(target)
    upper = np.triu_indices(len(s), 1)
    pairwise = np.corrcoef((s @ s.T)[upper], (t @ t.T)[upper])[0, 1]
    return float(np.mean((student - target) ** 2)), float(np.mean(np.sum(s * t, axis=1))), float(pairwise)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_target_flags(parser)
    parser.add_argument("--student", required=True, help="an HPD model distilled on this target")
    parser.add_argument("--corpus", required=True, help="a WikiExtractor folder (text/AA/wiki_00 ...)")
    parser.add_argument("--texts", type=int, default=500, help="how many articles (default %(default)s)")
    parser.add_argument("--min-words", type=int, default=250, help="shortest text kept (default %(default)s)")
    parser.add_argument("--max-words", type=int, default=400, help="longest text (default %(default)s)")
    parser.add_argument("--lengths", default="256,384", help="maximum input lengths in tokens (default %(default)s)")
    args = parser.parse_args(argv)
    try:
        lengths = [int(x) for x in args.lengths.split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"--lengths {args.lengths}: give comma-separated token counts, e.g. 256,384.") from None
    if not lengths or args.texts < 3 or not 0 < args.min_words <= args.max_words:
        raise SystemExit("give --lengths, --texts of at least 3 (pairs to correlate) and "
                         "0 < --min-words <= --max-words.")
    if not Path(args.corpus).is_dir():
        raise SystemExit(f"--corpus {args.corpus}: no such folder; give a WikiExtractor corpus folder.")

    texts = article_texts(args.corpus, args.texts, args.min_words, args.max_words)
    if len(texts) < 3:
        raise SystemExit(f"{args.corpus}: fewer than 3 articles of at least {args.min_words} words; lower --min-words "
                         "or give a larger corpus.")
    path, encoder = target_encoder(args)
    target = encoder.encode(texts)
    print(f"{len(texts)} articles of {args.min_words}-{args.max_words} words (mean "
          f"{np.mean([len(t.split()) for t in texts]):.0f}) from {args.corpus}; target {path.name}")
    print("| max length (tokens) | texts cut | MSE to the target | mean cosine | pairwise cosines' correlation |")
    print("|---|---|---|---|---|")
    for length in lengths:
        student = load_encoder(args.student, max_seq_length=length)
        tokens = [len(ids) for ids in student.tokenizer(texts, verbose=False)["input_ids"]]
        vectors = student.encode(texts, convert_to_numpy=True, show_progress_bar=False)
        if vectors.shape != target.shape:
            raise SystemExit(f"{args.student} gives {vectors.shape[1]}-d vectors but the target has "
                             f"{target.shape[1]}: give a student distilled on this target.")
        mse, cosine, pairwise = fidelity(vectors, target)
        cut = np.mean([count > length for count in tokens])
        print(f"| {length} | {cut:.0%} | {mse:.3e} | {cosine:.4f} | {pairwise:.4f} |")


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(f"error: {error}") from None
