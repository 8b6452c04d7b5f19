#!/usr/bin/env bash
# The pretrained-regime KD benchmark of protocol.md, phase by phase, after run_pretraining.sh and
# train_teacher.sh (weights/ filled, the teacher's sha256 in configs/recipes/Base-Distill-R_18-to-MNv3S.yaml).
# Every phase is resumable: kd_report collects finished runs and resumes the others. Run from the
# repository root:  bash projects/kd_benchmark/pretrained/run_benchmark.sh [selection|table|analyze|all]
set -euo pipefail
PY=${PY:-.venv/bin/python}
P=projects/kd_benchmark/pretrained
C=$P/configs
R=$P/results
OUT=output/kd_benchmark_pretrained
VAL='("synthetic_doclaynet_val",)'
BOTH='("synthetic_doclaynet_val","synthetic_doclaynet_test")'
kd() {  # kd_report with the committed teacher; 2 runs side by side, 1 thread each
  "$PY" projects/kd_benchmark/tools/kd_report.py --teacher "$C/teacher_R_18_FPN128.yaml" \
    --teacher-weights "$P/weights/teacher_R_18_FPN128.fp16.pth" --jobs 2 --threads 2 "$@"
}
teacher_recorded() {  # every run must check the committed teacher's sha256 (protocol.md)
  local expected record=$P/weights/teacher_R_18_FPN128.fp16.pth.json
  [ -f "$record" ] || { echo "error: $record is missing: train the teacher first (train_teacher.sh)" >&2; exit 1; }
  expected=$("$PY" -c "import json; print(json.load(open('$P/weights/teacher_R_18_FPN128.fp16.pth.json'))['sha256'])")
  grep -q "SHA256: \"$expected\"" "$C/recipes/Base-Distill-R_18-to-MNv3S.yaml" || {
    echo "error: $C/recipes/Base-Distill-R_18-to-MNv3S.yaml must name the teacher's sha256 $expected" \
         "(DISTILL.TEACHER.SHA256, from $P/weights/teacher_R_18_FPN128.fp16.pth.json)" >&2; exit 1; }
}
recipe() { "$PY" -c "import json,sys; print(json.load(open('$R/selection.json'))[sys.argv[1]])" "$1"; }

selection() {  # validation pages, seed 42, 1x: the five candidates (their runs published: the report with the
  # combination is published by the second call), then the combination of the best two
  local candidates=("$C"/recipes/{mgd_balanced,defeat,pkd,crosskd,logit_kd}.yaml)
  kd --student "$C/student_MNv3_small_pretrained.yaml" --distill "${candidates[@]}" --seeds 42 \
    --output "$OUT/selection" --publish-runs "$R/selection" TEST.EVAL_PERIOD 500 DATASETS.TEST "$VAL"
  "$PY" "$P/select_recipe.py" terms --runs "$R/selection/runs"
  kd --student "$C/student_MNv3_small_pretrained.yaml" --distill "${candidates[@]}" "$C/recipes/combination.yaml" \
    --seeds 42 --output "$OUT/selection" --publish "$R/selection" TEST.EVAL_PERIOD 500 DATASETS.TEST "$VAL"
  "$PY" "$P/select_recipe.py" recommended --runs "$R/selection/runs"
}

table() {  # test pages: every row of protocol.md, evaluated once after training
  local rec feat resp
  rec=$C/recipes/$(recipe recommended).yaml feat=$C/recipes/$(recipe feature).yaml resp=$C/recipes/$(recipe response).yaml
  local common=(--dataset synthetic_doclaynet_test --teacher-opts DATASETS.TEST "$BOTH")
  kd "${common[@]}" --student "$C/student_MNv3_small_pretrained.yaml" --distill $(printf '%s\n' "$rec" "$feat" "$resp" | sort -u) \
    --seeds 42 1 2 3 4 --output "$OUT/1x" --publish "$R/1x" TEST.EVAL_PERIOD 0 DATASETS.TEST "$BOTH"
  kd "${common[@]}" --student "$C/student_MNv3_small_pretrained.yaml" --distill "$rec" --seeds 42 1 2 3 4 \
    --distill-seeds 42 1 2 3 4 --output "$OUT/3x" --publish "$R/3x" TEST.EVAL_PERIOD 0 DATASETS.TEST "$BOTH" \
    SOLVER.MAX_ITER 6000 SOLVER.STEPS "(3000,3600)"
  kd "${common[@]}" --student configs/synthetic/bench/student_MNv3_GN.yaml --distill "$rec" --seeds 42 1 2 \
    --output "$OUT/scratch" --publish "$R/scratch" TEST.EVAL_PERIOD 0 DATASETS.TEST "$BOTH" \
    MODEL.TIMM.NORM GN MODEL.TIMM.PRETRAINED_PATH ""
}

analyze() {
  local rec feat resp
  rec=$(recipe recommended) feat=$(recipe feature) resp=$(recipe response)
  "$PY" "$P/analyze.py" --teacher "$R/1x/runs/teacher" --reference-1x "supervised 1x" --reference-3x "supervised 3x" \
    --row "supervised 1x=$R/1x/runs/student" --row "supervised 3x=$R/3x/runs/student" \
    --row "recommended 1x ($rec)=$R/1x/runs/$rec" --row "recommended 3x ($rec)=$R/3x/runs/$rec" \
    --row "F* 1x ($feat)=$R/1x/runs/$feat" --row "R* 1x ($resp)=$R/1x/runs/$resp" \
    --row "scratch supervised 1x=$R/scratch/runs/student" --row "scratch recommended 1x ($rec)=$R/scratch/runs/$rec" \
    --family "recommended 1x ($rec)" "recommended 3x ($rec)" "F* 1x ($feat)" "R* 1x ($resp)" \
    --reference "scratch recommended 1x ($rec)=scratch supervised 1x" --out "$R/report"
}

teacher_recorded
case "${1:-all}" in
  selection) selection ;;
  table) table ;;
  analyze) analyze ;;
  all) selection; table; analyze ;;
  *) echo "usage: $0 [selection|table|analyze|all]" >&2; exit 2 ;;
esac
