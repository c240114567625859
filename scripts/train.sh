#!/usr/bin/env bash
# `make train`: reproduce the shipped default weights (demo recipe) from scratch.
# Generates the synthetic recording if absent, runs the stages, evaluates, exports to models/.
# Re-running continues from the last checkpoints (--resume). RECIPE=... to use another recipe.
# Every stage trains exactly the recipe's steps (the same on any machine); the expected duration,
# measured on a short warm-up, is printed first. TIME_BUDGET=MIN caps each job's wall clock
# (quick experiments only: the outputs and the model card then say "stopped at step N of M").
# The report at the end is `admn eval --quick` (150 test frames, minutes); EVAL=full runs the
# whole test split instead (~1 h on 2 CPU cores; docs/ARCHITECTURE.md, "Evaluation").
set -euo pipefail
cd "$(dirname "$0")/.."
RECIPE=${RECIPE:-config/train/demo.yaml}
NPROC=${NPROC:-1}
TIME_BUDGET=${TIME_BUDGET:-}
EVAL=${EVAL:-quick}
case "$EVAL" in quick) EVAL_ARGS=(--quick) ;; full) EVAL_ARGS=() ;;
  *) echo "train.sh: EVAL: expected quick or full, got '$EVAL'" >&2; exit 2 ;; esac
DATA=$(python -c "from admn_ros.train.config import load_train_config as l; print(l('$RECIPE').data.root)")
GEN=$(python -c "from admn_ros.train.config import load_train_config as l; g=l('$RECIPE').data.generate; print('' if g is None else f'--frames {g.frames} --seed {g.seed} --scene {g.scene}')")
start=$(date +%s)
if [ ! -f "$DATA/metadata.json" ]; then
  if [ -z "$GEN" ]; then echo "train.sh: no recording at $DATA and no data.generate in $RECIPE" >&2; exit 1; fi
  rm -rf "$DATA"
  admn generate "$DATA" $GEN
fi
python -m admn_ros.train.estimate --config "$RECIPE"
EXTRA=()
if [ -n "$TIME_BUDGET" ]; then
  echo "train.sh: TIME_BUDGET=$TIME_BUDGET min per job: a job may stop before the recipe's steps" >&2
  EXTRA=(--time-budget "$TIME_BUDGET")
fi
if [ "$NPROC" -gt 1 ]; then
  TRAIN=(python -m torch.distributed.run --nproc_per_node "$NPROC" -m admn_ros.cli train)
else
  TRAIN=(admn train)
fi
for stage in mae backbone controller controller-ae; do
  echo "== stage $stage ($(( $(date +%s) - start )) s)"
  "${TRAIN[@]}" "$stage" --config "$RECIPE" --resume "${EXTRA[@]}"
done
echo "== export ($(( $(date +%s) - start )) s)"
python -m admn_ros.train.weights export --config "$RECIPE"
echo "== eval ($(( $(date +%s) - start )) s)"
admn eval --config "$RECIPE" ${EVAL_ARGS[@]+"${EVAL_ARGS[@]}"}
python -m admn_ros.train.weights card --config "$RECIPE" --train-seconds $(( $(date +%s) - start ))
echo "== done in $(( $(date +%s) - start )) s"
