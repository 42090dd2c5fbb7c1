#!/usr/bin/env bash
# The ablations that choose the recipe (docs/reproduction.md, "Ablations"), each one change from the reference:
# all-mpnet-base-v2 -> layers 0,2,3,5 of all-MiniLM-L6-v2 at 128-d, 50,000 sentences, 1 epoch (196 steps), lr 1e-4,
# uncentred PCA, least-squares head, bfloat16 autocast training, checkpoint by validation MSE, STS-B dev logged.
# All runs share the work dir's sentences and teacher vectors (scripts/reproduce.sh caches them first), so only
# students are trained: about 10 minutes per run on 2 CPU cores.
#
#     bash scripts/ablations.sh [DATA] [WORK]     # WORK: the work dir (default ../hpd-work/wiki, outside the clone)
#
# The first part ran for the table in docs/reproduction.md; MATRYOSHKA=1 adds the runs of the Matryoshka table
# (all ran); ALL=1 the next ablations, each one change from two-teachers (the teacher set that won); LOSS=1 the
# cosine and similarity losses against the MSE; SEARCH=1 the start of every 4-layer cut; WEIGHTS=1 the start of the
# default's first run at each weighting of its two teachers (with TRAIN_WEIGHTS=W, that weighting trained on);
# PASSAGE_PCA=1 the default's start with its PCA fitted on passages, and what that projection keeps of held-out
# passages (with TRAIN_PASSAGE_PCA=1, that target trained on); FIRST=0 leaves the first part out. A finished run is not trained again, only copied to its output.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data}
WORK=${2:-../hpd-work/wiki}
OUT=$(dirname "$WORK")/out
export HF_HUB_OFFLINE=1 PATH="$PWD/.venv/bin:$PATH"
MPNET=models/all-mpnet-base-v2 MINILM=models/all-MiniLM-L6-v2

recipe() {  # FLAGS: the reference's flags but --output and --layers, on the work dir $WORK names now
    FLAGS=(--student $MINILM --corpus "$DATA/corpus/enwiki_wikitasks" "$DATA/corpus/senteval_transfer"
        --work-dir "$WORK" --teacher-dtype bfloat16 --student-dtype bfloat16 --dim 128 --sts-dev "$DATA/senteval"
        --head-init lstsq --warmup-steps 20 --pca-sentences 50000 --max-sentences 50000 --epochs 1 --eval-steps 49
        --teacher $MPNET --lr 1e-4)
}
RAN=()  # NAME=OUTPUT of each run, for the table of its part
run() {  # NAME, then the flags that differ from the reference
    local name=$1; shift
    RAN+=("$name=$OUT/$name")
    recipe
    hpd distill "${FLAGS[@]}" --output "$OUT/$name" --layers 0,2,3,5 "$@"
}

if [ "${FIRST:-1}" = 1 ]; then
    run ref
    run two-teachers --teacher $MINILM
    run lr-3e-4 --teacher $MINILM --lr 3e-4   # on the teacher set that won (two teachers): a tie, 1e-4 kept
    run pca-centered --teacher $MINILM --projection pca-centered   # a tie: uncentred kept
    python scripts/ablation_table.py ref="$OUT/ref" two-teachers="$OUT/two-teachers" lr-3e-4="$OUT/lr-3e-4" \
        pca-centered="$OUT/pca-centered"
fi

if [ "${MATRYOSHKA:-0}" = 1 ]; then  # issue 15's table (MATRYOSHKA=1 bash scripts/ablations.sh): at 128, 64 and 32
    # dimensions, the Matryoshka student, the same student trained without it (two-teachers, above) and truncated,
    # a run dedicated to that size, and the ceiling: a perfect copy of the target's first k coordinates.
    run matryoshka --teacher $MINILM --matryoshka-dims 128,64,32
    run two-teachers-d64 --teacher $MINILM --dim 64
    run two-teachers-d32 --teacher $MINILM --dim 32
    mkdir -p "$OUT/results"
    for k in 128 64 32; do
        for name in matryoshka two-teachers; do  # two-teachers at 64 and 32 warns: it was not trained for them
            hpd eval sts --model "$OUT/$name" --dim $k --data "$DATA/senteval" --output "$OUT/results/$name-d$k.json"
        done
    done
    for k in 64 32; do
        hpd eval sts --model "$OUT/two-teachers-d$k" --data "$DATA/senteval" --output "$OUT/results/dedicated-d$k.json"
    done
    python scripts/pca_ceiling.py --work-dir "$WORK" --teacher $MPNET --teacher $MINILM --pca-sentences 50000 \
        --dim 128,64,32 --data "$DATA/senteval" --output "$OUT/results/ceiling"
    python scripts/ablation_table.py matryoshka="$OUT/matryoshka" two-teachers="$OUT/two-teachers" \
        two-teachers-d64="$OUT/two-teachers-d64" two-teachers-d32="$OUT/two-teachers-d32"
    python - "$OUT"/results/*-d*.json <<'PY'  # the STS averages of the table, one line per file
import json, sys
for path in sys.argv[1:]:
    results = json.load(open(path))
    print(f"{path}: {results['embedding_dim']} dimensions, STS Avg {results['scores']['Avg']:.2f}")
PY
fi

if [ "${MIXED:-0}" = 1 ]; then  # sentences against mixed units (docs/reproduction.md, rule 4): MIXED=1 bash ...
    # passages need teacher vectors of their own, so this run has its own work dir beside WORK
    WORK="$(dirname "$WORK")/wiki-mixed" run mixed --teacher $MINILM --unit mixed
    python scripts/ablation_table.py two-teachers="$OUT/two-teachers" mixed="$OUT/mixed"
fi

if [ "${ALL:-0}" = 1 ]; then  # the next ablations (rule 5 of docs/reproduction.md): FIRST=0 ALL=1 bash ...
    RAN=()
    run two-teachers --teacher $MINILM   # the run each one changes
    # more text against more passes over less, at the same 196 steps (the PCA on the 25,000 the run has)
    run half-text-2-epochs --teacher $MINILM --max-sentences 25000 --pca-sentences 25000 --epochs 2
    for layers in 0,2,5 0,1,2,3,4,5 0,1,3,5 0,2,4,5; do run "layers-$layers" --teacher $MINILM --layers "$layers"; done
    run random-head --teacher $MINILM --head-init random
    run 2-epochs --teacher $MINILM --epochs 2 --eval-steps 98
    python scripts/ablation_table.py "${RAN[@]}"
fi

if [ "${LOSS:-0}" = 1 ]; then  # the loss (rule 6 of docs/reproduction.md): FIRST=0 LOSS=1 bash ...
    RAN=()
    run two-teachers --teacher $MINILM   # the run it changes (MSE, checkpoint by validation MSE)
    run cosine-loss --teacher $MINILM --loss cosine --select valid-cosine
    run similarity-loss --teacher $MINILM --loss similarity --select valid-similarity   # rule 7: the pairs alone
    # rule 8: the same at two epochs, against the MSE at two epochs (rule 5's run; when finished, only copied)
    run 2-epochs --teacher $MINILM --epochs 2 --eval-steps 98
    run similarity-loss-2-epochs --teacher $MINILM --loss similarity --select valid-similarity --epochs 2 --eval-steps 98
    python scripts/ablation_table.py "${RAN[@]}"
fi

if [ "${SEARCH:-0}" = 1 ]; then  # rule 9: the start of every 4-layer cut, two teachers, no training: SEARCH=1 bash ...
    recipe
    mkdir -p "$OUT/results"
    python scripts/start_search.py --keep 4 --json "$OUT/results/layer-search.json" -- "${FLAGS[@]}" --teacher $MINILM \
        --output "$OUT/layer-search"
fi

# the default's first run (scripts/reproduce.sh step 3), without its weights: rules 14 and 15 change one thing in it
WEIGHTED=(--teacher $MPNET --teacher $MINILM --student $MINILM --layers 0,1,3,5 --unit mixed
    --corpus "$DATA/corpus/enwiki_wikitasks" "$DATA/corpus/senteval_transfer" --work-dir "$(dirname "$WORK")/wiki-mixed"
    --teacher-dtype bfloat16 --student-dtype bfloat16 --dim 128 --sts-dev "$DATA/senteval" --head-init lstsq
    --lr 1e-4 --warmup-steps 50 --pca-sentences 85112 --max-sentences 85112 --epochs 2 --eval-steps 67)

if [ "${WEIGHTS:-0}" = 1 ]; then  # rule 14: the default's first run at each weighting of its teachers
    mkdir -p "$OUT/results"
    python scripts/start_search.py --teacher-weights 1,0.5 1,0.75 1,1 1,1.5 1,2 \
        --json "$OUT/results/weight-search.json" -- "${WEIGHTED[@]}" --output "$OUT/weight-search"
    if [ -n "${TRAIN_WEIGHTS:-}" ]; then  # the weighting rule 14 chose, trained on from its start
        hpd distill "${WEIGHTED[@]}" --teacher-weights "$TRAIN_WEIGHTS" --output "$OUT/final-mixed-weights"
    fi
fi

if [ "${PASSAGE_PCA:-0}" = 1 ]; then  # rule 15: the default's target with its PCA fitted on passages (>= 65 words)
    mkdir -p "$OUT/results"
    for min_words in "" 65; do  # the default's own start, validated again beside it, then the passage-fitted one
        hpd distill "${WEIGHTED[@]}" --teacher-weights 1,1.5 ${min_words:+--pca-min-words $min_words} --stop-after start \
            --output "$OUT/passage-pca-start"
        # guide (a): what each projection keeps of the held-out passages' pairwise cosines
        python scripts/pca_ceiling.py --work-dir "$(dirname "$WORK")/wiki-mixed" --teacher $MPNET --teacher $MINILM \
            --teacher-weights 1,1.5 --pca-sentences 85112 ${min_words:+--pca-min-words $min_words} \
            --teacher-dtype bfloat16 --dim 128,64 --held-out-min-words 65
    done
    if [ "${TRAIN_PASSAGE_PCA:-0}" = 1 ]; then  # what rule 15 trains when both guides pass
        hpd distill "${WEIGHTED[@]}" --teacher-weights 1,1.5 --pca-min-words 65 --output "$OUT/final-mixed-passage-pca"
    fi
fi
