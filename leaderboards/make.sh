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
# From scratch: about 25 minutes per model, 15 for the ablation and 20 for the x-layer curve,
# with JOBS=2 single-thread jobs on two cores.
#
# The run records that cannot be recomputed (run.json, predictions, history; no checkpoints)
# are committed under leaderboards/embedded/, leaderboards/xlayers/ and leaderboards/ablation/,
# so the tables can be checked against them without training anything
# (tests/test_leaderboards.py does). Per-question results and tokenizers are not committed
# (leaderboards/.gitignore): `vlbench leaderboard --rescore` recomputes the former from the
# predictions, the data rebuild the latter.
set -euo pipefail
cd "$(dirname "$0")/.."
VLBENCH=${VLBENCH:-vlbench}
SEEDS=${SEEDS:-"0 1 2"}
# Every registered encoder variant of the controlled comparison (same recipe, same seeds);
# the tables compare each with LXMERT, paired by seed.
MODELS=${MODELS:-"lxmert lxmert_coattn visualbert late_fusion text_only vision_only"}
# Cross-modality depths of the x-layer curve (LXMERT tiny, GQA); depth 1, the default, is
# LXMERT's own leaderboard run.
DEPTHS=${DEPTHS:-"0 2 3"}
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

# One job per line: the ablation, every (task, model, seed) run and every (depth, seed) run.
# GQA first (the headline task and the x-layer curve), so a regeneration that stops early
# has finished what matters most; it resumes where it stopped.
job_list() {
  echo ablate  # its cells run one after another: start it first
  for model in $MODELS; do for seed in $SEEDS; do echo "run $model gqa $seed"; done; done
  for depth in $DEPTHS; do for seed in $SEEDS; do echo "depth $depth $seed"; done; done
  for task in vqa nlvr2; do
    for model in $MODELS; do for seed in $SEEDS; do echo "run $model $task $seed"; done; done
  done
}

job() {
  set -o pipefail  # a failed run fails its job (xargs then reports it)
  if [[ "$1" == ablate ]]; then
    "$VLBENCH" "${ABLATE[@]}" >/dev/null &&
      commit "Ablation cells: pre-training without mask_obj, GQA" leaderboards/ablation leaderboards/ablation
  elif [[ "$1" == depth ]]; then  # one folder per depth: --reuse replaces a seed's run in its folder
    run=$("$VLBENCH" train --model lxmert --task gqa --seed "$3" --set "model.x_layers=$2" --reuse \
          --out "leaderboards/xlayers/x$2" | tail -n 1) &&
      commit "x-layer curve run: LXMERT with $2 cross-modality layers on gqa, seed $3" "$run" \
        "leaderboards/xlayers/x$2"
  else
    run=$("$VLBENCH" train --model "$2" --task "$3" --seed "$4" --reuse --out "leaderboards/embedded/$3" |
          tail -n 1) &&
      commit "Leaderboard run: $2 on $3, seed $4" "$run" "leaderboards/embedded/$3"
  fi
}

if [[ "${1:-}" != "--tables" ]]; then
  export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1  # single-thread jobs, one per core
  export VLBENCH MODELS SEEDS DEPTHS
  export -f commit job
  export ABLATE_ARGS="${ABLATE[*]}"
  job_list | xargs -P "${JOBS:-2}" -I{} bash -c 'ABLATE=($ABLATE_ARGS); job {}'
fi

mkdir -p leaderboards/xlayers  # the x-layer table reads it even before its first run
# Tables from the records alone (finished ablation cells are skipped, not re-run). Each task's
# table is the controlled comparison: every variant against LXMERT, paired by seed.
CONTROLLED=(--baselines --reference model=lxmert)
for task in gqa vqa nlvr2; do
  "$VLBENCH" leaderboard "leaderboards/embedded/$task" "${CONTROLLED[@]}" --out "leaderboards/$task.md"
  "$VLBENCH" leaderboard "leaderboards/embedded/$task" "${CONTROLLED[@]}" --out "leaderboards/$task.csv"
  "$VLBENCH" plot grid "leaderboards/embedded/$task" --reference model=lxmert --out "leaderboards/$task.png"
done
"$VLBENCH" leaderboard leaderboards/embedded --out leaderboards/index.html
# The x-layer curve: LXMERT's GQA runs at every cross-modality depth, against depth 1.
XLAYERS=(leaderboards/xlayers leaderboards/embedded/gqa --filter model=lxmert
         --group-by config.model.x_layers --reference config.model.x_layers=1)
"$VLBENCH" leaderboard "${XLAYERS[@]}" --baselines --out leaderboards/xlayers_gqa.md
"$VLBENCH" leaderboard "${XLAYERS[@]}" --baselines --out leaderboards/xlayers_gqa.csv
"$VLBENCH" plot sweep "${XLAYERS[@]}" --out leaderboards/xlayers_gqa.png
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
