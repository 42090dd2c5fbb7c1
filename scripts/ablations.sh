#!/usr/bin/env bash
# Ablations of docs/reproduction.md at a smaller scale: learning rate, centred vs uncentred projection, corpus
# size, epochs and head initialisation, each one change from the reference (50,000 sentences, 1 epoch, lr 1e-4,
# uncentred PCA, least-squares head as in the reproduction).
# They reuse the teacher vectors of scripts/reproduce.sh (same work dir), so only the students are trained:
# about 10 minutes per 50,000 sentence-passes on 2 CPU cores.
#
#     bash scripts/ablations.sh [DATA]
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data}
export HF_HUB_OFFLINE=1 PATH="$PWD/.venv/bin:$PATH"
mkdir -p docs/results/ablations

run() {  # NAME, then the flags that differ from the reference
    local name=$1; shift
    hpd distill --teacher models/all-mpnet-base-v2 --student models/all-MiniLM-L6-v2 --layers 0,2,3,5 \
        --corpus "$DATA/corpus/enwiki_wikitasks" "$DATA/corpus/senteval_transfer" --teacher-dtype bfloat16 \
        --dim 128 --sts-dev "$DATA/senteval" --work-dir runs/repro.work --warmup-steps 20 \
        --max-sentences 50000 --pca-sentences 50000 --epochs 1 --lr 1e-4 --eval-steps 49 --head-init lstsq "$@" --output "runs/ablation-$name"
    hpd eval sts --model "runs/ablation-$name" --data "$DATA/senteval" --output "docs/results/ablations/$name.json"
}

run reference
run random-head --head-init random
run lr-2e-4 --lr 2e-4
run lr-5e-5 --lr 5e-5
run pca-centered --projection pca-centered
run 2-epochs --epochs 2 --eval-steps 98
run 100k-sentences --max-sentences 100000 --pca-sentences 100000 --eval-steps 98
python scripts/ablation_table.py docs/results/ablations/*.json
