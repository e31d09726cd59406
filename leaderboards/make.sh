#!/usr/bin/env bash
# Regenerates every table in leaderboards/ on the embedded synthetic benchmark.
#
#   bash leaderboards/make.sh           train everything again, then write the tables
#                                        (about 50 min on 2 CPU cores: two one-thread jobs at a time)
#   bash leaderboards/make.sh --tables  only rewrite the tables from the committed run records
#
# The run records (run.json, predictions, per-question results, history; no checkpoints)
# are committed under leaderboards/embedded/ and leaderboards/ablation/, so the tables can
# be checked against them without training anything (tests/test_leaderboards.py does).
set -euo pipefail
cd "$(dirname "$0")/.."
VLBENCH=${VLBENCH:-vlbench}
SEEDS=${SEEDS:-"0 1 2"}
ABLATE=(ablate --drop-task mask_obj --task gqa --seeds 5 --out leaderboards/ablation
        --publish leaderboards/ablation_gqa)

if [[ "${1:-}" != "--tables" ]]; then
  rm -rf leaderboards/embedded leaderboards/ablation
  export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1  # two single-thread jobs share the two cores evenly
  (for task in gqa vqa nlvr2; do
     for seed in $SEEDS; do
       "$VLBENCH" train --model lxmert --task "$task" --seed "$seed" --out "leaderboards/embedded/$task"
     done
   done) &
  "$VLBENCH" "${ABLATE[@]}"
  wait
fi

# Tables from the records alone (finished ablation cells are skipped, not re-run).
for task in gqa vqa nlvr2; do
  "$VLBENCH" leaderboard "leaderboards/embedded/$task" --baselines --out "leaderboards/$task.md"
  "$VLBENCH" leaderboard "leaderboards/embedded/$task" --baselines --out "leaderboards/$task.csv"
done
"$VLBENCH" leaderboard leaderboards/embedded --out leaderboards/index.html
"$VLBENCH" "${ABLATE[@]}"
