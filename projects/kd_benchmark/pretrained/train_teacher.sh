#!/usr/bin/env bash
# Fine-tune the benchmark's one teacher from the pre-trained R-18 backbone (1x schedule, 2 threads),
# evaluate it once on the validation and test pages, and keep its weights in fp16 (weights/ + .json
# with the sha256). Resumable: run it again after a kill. Run from the repository root.
set -euo pipefail
PY=${PY:-.venv/bin/python}
P=projects/kd_benchmark/pretrained
OUT=output/kd_benchmark_pretrained/teacher
if [ ! -f "$OUT/model_final.pth" ]; then
  OMP_NUM_THREADS=${THREADS:-2} "$PY" tools/train_net.py --config-file "$P/configs/teacher_R_18_FPN128.yaml" --resume \
    TEST.EVAL_PERIOD 0 DATASETS.TEST '("synthetic_doclaynet_val","synthetic_doclaynet_test")'
fi
"$PY" "$P/export_weights.py" "$OUT/model_final.pth" "$P/weights/teacher_R_18_FPN128.fp16.pth" --format full
