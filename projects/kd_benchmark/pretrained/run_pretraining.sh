#!/usr/bin/env bash
# Pre-train both backbones on the class-agnostic corpus, then keep their bottom-up backbones (fp16)
# in weights/. Resumable: run it again after a kill (each training resumes from its last checkpoint;
# a finished one is skipped). One thread per training, both side by side. Run from the repository root.
set -euo pipefail
PY=${PY:-.venv/bin/python}
P=projects/kd_benchmark/pretrained
OUT=output/kd_benchmark_pretrained
pretrain() {  # config name, exported file, format
  local out="$OUT/$1"
  if [ ! -f "$out/model_final.pth" ]; then
    OMP_NUM_THREADS=1 "$PY" "$P/train_net.py" --config-file "$P/configs/$1.yaml" --resume > "$OUT/$1.log" 2>&1
  fi
  "$PY" "$P/export_weights.py" "$out/model_final.pth" "$P/weights/$2" --format "$3"
}
mkdir -p "$OUT"
pretrain pretrain_MNv3_small_BN mobilenetv3_small_100_regions.fp16.pth timm & student=$!
pretrain pretrain_R_18_BN R_18_regions.fp16.pth d2 & teacher=$!
wait "$student"
wait "$teacher"
