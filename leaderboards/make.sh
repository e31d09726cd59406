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
# From scratch: about 25 minutes per model (ViLT, reading pixels: about 45), 15 for the
# ablation, 20 for the x-layer curve and 25 for LXMERT on grid features (their extraction
# included), with JOBS=2 single-thread jobs on two cores.
#
# The run records that cannot be recomputed (run.json, predictions, history; no checkpoints)
# are committed under leaderboards/embedded/, leaderboards/gridfeat/, leaderboards/xlayers/ and
# leaderboards/ablation/, so the tables can be checked against them without training anything
# (tests/test_leaderboards.py does). Per-question results, tokenizers and grid features are not
# committed (leaderboards/.gitignore): `vlbench leaderboard --rescore` recomputes the first from
# the predictions, the data rebuild the second, `vlbench features extract` the third (each
# grid run records the features' fingerprint, backbone and weights).
set -euo pipefail
cd "$(dirname "$0")/.."
VLBENCH=${VLBENCH:-vlbench}
SEEDS=${SEEDS:-"0 1 2"}
# Every registered encoder variant of the controlled comparison (same recipe, same seeds);
# the tables compare each with LXMERT, paired by seed.
MODELS=${MODELS:-"lxmert lxmert_coattn visualbert late_fusion text_only vision_only vilt"}
# Cross-modality depths of the x-layer curve (LXMERT tiny, GQA); depth 1, the default, is
# LXMERT's own leaderboard run.
DEPTHS=${DEPTHS:-"0 2 3"}
# LXMERT on another visual input: grid features of a timm backbone over the world's rendered
# images (128 px, its own 4x4 feature map as 16 regions; randomly initialised offline, which
# every run records), extracted on first need into leaderboards/.features/.
GRID_BACKBONE=${GRID_BACKBONE:-resnet18}
ABLATE=(ablate --drop-task mask_obj --task gqa --seeds 10 --pretrain-seeds 2 --out leaderboards/ablation
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

# The comma-separated grid feature TSVs of TASK's images, one per image folder, extracted by
# the first job that needs them (a lock keeps the other waiting; an interrupted extraction
# resumes). WORLD is the embedded world's directory.
grid_features() {  # TASK
  local dirs=() tsvs=() dir tsv
  case "$1" in
    gqa) dirs=(gqa/images) ;;
    vqa) dirs=(vqa/images/train2014 vqa/images/val2014) ;;
    nlvr2) dirs=(nlvr2/images/train nlvr2/images/dev nlvr2/images/test1) ;;
  esac
  mkdir -p leaderboards/.features
  for dir in "${dirs[@]}"; do
    tsv="leaderboards/.features/$GRID_BACKBONE-${dir//\//-}.tsv"
    (flock 8
     [[ -f "$tsv" ]] || "$VLBENCH" features extract --backbone "$GRID_BACKBONE" --images "$WORLD/$dir" \
       --out "$tsv" --image-size 128 --grid 4 --no-progress >&2) 8>"$tsv.lock"
    tsvs+=("$tsv")
  done
  (IFS=,; echo "${tsvs[*]}")
}

# One job per line: the ablation, every (task, model, seed) run, every (depth, seed) run and
# every (task, seed) run on grid features. GQA first (the headline task and the x-layer
# curve), so a regeneration that stops early has finished what matters most; it resumes
# where it stopped.
job_list() {
  echo ablate  # its cells run one after another: start it first
  for model in $MODELS; do for seed in $SEEDS; do echo "run $model gqa $seed"; done; done
  for depth in $DEPTHS; do for seed in $SEEDS; do echo "depth $depth $seed"; done; done
  for seed in $SEEDS; do echo "grid gqa $seed"; done
  for task in vqa nlvr2; do
    for model in $MODELS; do for seed in $SEEDS; do echo "run $model $task $seed"; done; done
    for seed in $SEEDS; do echo "grid $task $seed"; done
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
  elif [[ "$1" == grid ]]; then
    features=$(grid_features "$2") &&
    run=$("$VLBENCH" train --model lxmert --task "$2" --seed "$3" --set "data.features=$features" \
          --reuse --out "leaderboards/gridfeat/$2" | tail -n 1) &&
      commit "Grid-feature run: LXMERT on $GRID_BACKBONE grid features, $2, seed $3" "$run" \
        "leaderboards/gridfeat/$2"
  else
    run=$("$VLBENCH" train --model "$2" --task "$3" --seed "$4" --reuse --out "leaderboards/embedded/$3" |
          tail -n 1) &&
      commit "Leaderboard run: $2 on $3, seed $4" "$run" "leaderboards/embedded/$3"
  fi
}

if [[ "${1:-}" != "--tables" ]]; then
  export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1  # single-thread jobs, one per core
  WORLD=$("$VLBENCH" data images | tail -n 1)  # draws the world's images if it has none yet
  export VLBENCH MODELS SEEDS DEPTHS GRID_BACKBONE WORLD
  export -f commit job grid_features
  export ABLATE_ARGS="${ABLATE[*]}"
  job_list | xargs -P "${JOBS:-2}" -I{} bash -c 'ABLATE=($ABLATE_ARGS); job {}'
fi

mkdir -p leaderboards/xlayers leaderboards/gridfeat/{gqa,vqa,nlvr2}  # tables read them before their first run
# Tables from the records alone (finished ablation cells are skipped, not re-run). Each task's
# table is the controlled comparison: every variant against LXMERT, paired by seed.
CONTROLLED=(--baselines --reference model=lxmert)
for task in gqa vqa nlvr2; do
  "$VLBENCH" leaderboard "leaderboards/embedded/$task" "${CONTROLLED[@]}" --out "leaderboards/$task.md"
  "$VLBENCH" leaderboard "leaderboards/embedded/$task" "${CONTROLLED[@]}" --out "leaderboards/$task.csv"
  "$VLBENCH" plot grid "leaderboards/embedded/$task" --reference model=lxmert --out "leaderboards/$task.png"
done
"$VLBENCH" leaderboard leaderboards/embedded --out leaderboards/index.html
# Visual inputs on the same questions: LXMERT on the detector's regions (the controlled
# table's runs) and on grid features, ViLT on the pixels, against LXMERT on regions.
INPUTS=(--group-by model,inputs --reference model=lxmert --reference inputs=regions)
for model in $MODELS; do [[ $model == lxmert || $model == vilt ]] || INPUTS+=(--filter "model!=$model"); done
for task in gqa vqa nlvr2; do
  SOURCES=(leaderboards/embedded/$task leaderboards/gridfeat/$task)
  "$VLBENCH" leaderboard "${SOURCES[@]}" "${INPUTS[@]}" --baselines --out "leaderboards/inputs_$task.md"
  "$VLBENCH" leaderboard "${SOURCES[@]}" "${INPUTS[@]}" --baselines --out "leaderboards/inputs_$task.csv"
  "$VLBENCH" plot grid "${SOURCES[@]}" "${INPUTS[@]}" --out "leaderboards/inputs_$task.png"
done
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
