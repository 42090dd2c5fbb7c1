"""The student's starting point as a model: a layer cut of a sentence encoder with an uncentred PCA head.

    python scripts/pca_head_baseline.py --base MODEL --layers 0,2,3,5 --dim 128 \
        --sentences WORK_DIR/sentences/train.txt --max-sentences 20000 --output OUT

The cut keeps the base's mean pooling; the head is the top `dim` principal axes of the cut's own pooled
embeddings of the sentences, applied without centring and without tanh (what PCA alone gives, before any
distillation). With `--dim 0` the folder is the cut at its full width, no head.
"""

import argparse
import itertools
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hpd_models import save_hpd_folder  # noqa: E402
from hpd_toolkit.training.distill import build_student, fit_projection  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="HPD or sentence-transformers model to cut")
    parser.add_argument("--layers", help="layers to keep, e.g. 0,2,3,5 (default: all)")
    parser.add_argument("--dim", type=int, default=128, help="PCA dimension; 0 keeps the full width")
    parser.add_argument("--sentences", help="text file, one sentence per line, to fit the PCA on")
    parser.add_argument("--max-sentences", type=int, default=20000)
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    layers = [int(i) for i in args.layers.split(",")] if args.layers else None

    model, tokenizer = build_student(args.base, args.dim or None, layers)  # 0: the cut at its own width
    if args.dim:
        if not args.sentences or not Path(args.sentences).is_file():
            raise SystemExit(f"--sentences {args.sentences}: a text file is needed to fit the PCA head on.")
        with open(args.sentences, encoding="utf-8") as handle:
            sentences = [line.strip() for line in itertools.islice(handle, args.max_sentences) if line.strip()]
        if len(sentences) < args.dim:
            raise SystemExit(f"{args.sentences}: {len(sentences)} sentences, fewer than --dim {args.dim}.")
        model.config.embedding_dim = None  # pooled = sentence embedding while the sample is encoded
        model.projection, head = None, model.projection
        pooled = model.encode(sentences, tokenizer=tokenizer, batch_size=64, show_progress_bar=True)
        weight, bias = fit_projection(pooled, args.dim, "pca")
        with torch.no_grad():
            head.weight.copy_(torch.from_numpy(weight))
            head.bias.copy_(torch.from_numpy(bias))
        model.projection = head
        model.config.embedding_dim, model.config.projection_activation = args.dim, "identity"
    print(f"Wrote {save_hpd_folder(model, tokenizer, args.output)}")


if __name__ == "__main__":
    main()
