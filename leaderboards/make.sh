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
# From scratch: about 25 minutes per model and 15 for the ablation, with JOBS=2 single-thread
# jobs on two cores.
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

# Commit MESSAGE with the records of RUN (a run directory, or the ablation folder) and the
# committed records under FOLDER that changed or went (runs it replaced); the other worker's
# unfinished runs stay out. A lock keeps the two workers' commits apart; nothing happens
# outside a git checkout or with COMMIT=0.
commit() {  # MESSAGE RUN FOLDER
  [[ "${COMMIT:-1}" == 1 ]] && git rev-parse --git-dir >/dev/null 2>&1 || return 0
  (flock 9
   git add -A -- "$2" && git add -u -- "$3"
   git diff --cached --quiet -- "$3" || git commit -q -m "$1" -- "$3") 9>"$(git rev-parse --git-dir)/vlbench-records.lock"
}

# One job per line: the ablation, and every (task, model, seed) run.
job_list() {
  echo ablate  # its cells run one after another: start it first
  for task in nlvr2 gqa vqa; do  # the longest runs first, so the two workers finish together
    for model in $MODELS; do
      for seed in $SEEDS; do
        echo "run $model $task $seed"
      done
    done
  done
}

job() {
  set -o pipefail  # a failed run fails its job (xargs then reports it)
  if [[ "$1" == ablate ]]; then
    "$VLBENCH" "${ABLATE[@]}" >/dev/null &&
      commit "Ablation cells: pre-training without mask_obj, GQA" leaderboards/ablation leaderboards/ablation
  else
    run=$("$VLBENCH" train --model "$2" --task "$3" --seed "$4" --reuse --out "leaderboards/embedded/$3" |
          tail -n 1) &&
      commit "Leaderboard run: $2 on $3, seed $4" "$run" "leaderboards/embedded/$3"
  fi
}

if [[ "${1:-}" != "--tables" ]]; then
  export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1  # single-thread jobs, one per core
  export VLBENCH MODELS SEEDS
  export -f commit job
  export ABLATE_ARGS="${ABLATE[*]}"
  job_list | xargs -P "${JOBS:-2}" -I{} bash -c 'ABLATE=($ABLATE_ARGS); job {}'
fi

# Tables from the records alone (finished ablation cells are skipped, not re-run).
for task in gqa vqa nlvr2; do
  "$VLBENCH" leaderboard "leaderboards/embedded/$task" --baselines --out "leaderboards/$task.md"
  "$VLBENCH" leaderboard "leaderboards/embedded/$task" --baselines --out "leaderboards/$task.csv"
done
"$VLBENCH" leaderboard leaderboards/embedded --out leaderboards/index.html
"$VLBENCH" "${ABLATE[@]}"

# Linear probes of the ablation's pre-training variants (leaderboards/probe_pretraining.*).
# Checkpoints are not committed, so the two pre-training runs are made again with the
# cells' settings (about 8 minutes, the two in parallel); --tables leaves the probe as it is.
if [[ "${1:-}" != "--tables" ]]; then
  PROBE_RUNS=${PROBE_RUNS:-$(mktemp -d)}
  "$VLBENCH" pretrain --model lxmert --seed 0 --set train.epochs=4 --out "$PROBE_RUNS/full" >/dev/null &
  full=$!
  "$VLBENCH" pretrain --model lxmert --seed 0 --drop-task mask_obj --set train.epochs=4 \
    --out "$PROBE_RUNS/no_mask_obj" >/dev/null &
  no_mask_obj=$!
  wait "$full" "$no_mask_obj"
  "$VLBENCH" probe "$PROBE_RUNS"/full/pretrain-* "$PROBE_RUNS"/no_mask_obj/pretrain-* --random lxmert \
    --label full --label "- mask_obj" --label "no pre-training" --out leaderboards/probe_pretraining >/dev/null
fi
