#!/usr/bin/env bash
# Regenerates every table in leaderboards/ on the embedded synthetic benchmark.
#
#   bash leaderboards/make.sh           train what is missing or out of date, then write the tables
#   bash leaderboards/make.sh --tables  only rewrite the tables from the committed run records
#
# Runs are reused, not repeated: `vlbench train --reuse` keeps a finished run whose config,
# data (the world's fingerprint), code revision and seed are unchanged, resumes an interrupted
# one and replaces an outdated one; the ablation skips its finished cells the same way. So the
# script can be stopped at any point and started again, in this session or another, and only
# what changed is trained. Each finished run is committed as it lands (set COMMIT=0 not to).
# From scratch: about 25 minutes per model (two single-thread jobs on two cores), plus 30 for
# the ablation.
#
# The run records (run.json, predictions, per-question results, history; no checkpoints)
# are committed under leaderboards/embedded/ and leaderboards/ablation/, so the tables can
# be checked against them without training anything (tests/test_leaderboards.py does).
set -euo pipefail
cd "$(dirname "$0")/.."
VLBENCH=${VLBENCH:-vlbench}
SEEDS=${SEEDS:-"0 1 2"}
MODELS=${MODELS:-"lxmert visualbert"}
ABLATE=(ablate --drop-task mask_obj --task gqa --seeds 5 --out leaderboards/ablation
        --publish leaderboards/ablation_gqa)

# Commit PATH's records (added, changed or removed) with MESSAGE; a lock keeps the two jobs'
# commits apart, and nothing happens outside a git checkout or with COMMIT=0.
commit() {
  [[ "${COMMIT:-1}" == 1 ]] && git rev-parse --git-dir >/dev/null 2>&1 || return 0
  (flock 9
   git add -A -- "$1"
   git diff --cached --quiet -- "$1" || git commit -q -m "$2" -- "$1") 9>"$(git rev-parse --git-dir)/vlbench-records.lock"
}

if [[ "${1:-}" != "--tables" ]]; then
  export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1  # two single-thread jobs share the two cores evenly
  (for task in gqa vqa nlvr2; do
     for model in $MODELS; do
       for seed in $SEEDS; do
         "$VLBENCH" train --model "$model" --task "$task" --seed "$seed" --reuse \
           --out "leaderboards/embedded/$task" >/dev/null
         commit "leaderboards/embedded/$task" "Leaderboard run: $model on $task, seed $seed"
       done
     done
   done) &
  runs=$!
  "$VLBENCH" "${ABLATE[@]}"
  commit leaderboards/ablation "Ablation cells: pre-training without mask_obj, GQA"
  wait "$runs"
fi

# Tables from the records alone (finished ablation cells are skipped, not re-run).
for task in gqa vqa nlvr2; do
  "$VLBENCH" leaderboard "leaderboards/embedded/$task" --baselines --out "leaderboards/$task.md"
  "$VLBENCH" leaderboard "leaderboards/embedded/$task" --baselines --out "leaderboards/$task.csv"
done
"$VLBENCH" leaderboard leaderboards/embedded --out leaderboards/index.html
"$VLBENCH" "${ABLATE[@]}"
