#!/usr/bin/env bash
# The unlabeled-pages study, from the repository root (every step resumes where it stopped):
#   1. the unlabeled pages of both styles (skipped when complete) and the teacher's offline
#      pseudo-labels of the DocLayNet-style ones (journaled);
#   2. the first seed of every row, publishing its runs but not the table (--publish-runs; the
#      supervised and labelled-KD rows are the KD benchmark's runs, taken over with --reuse and
#      only evaluated on the other domain; kd_report trains them when they have not finished);
#   3. the full list (every seed), the only call that publishes (PUBLISH=<dir> publishes elsewhere,
#      e.g. into the checkout this queue was copied from), then the other-domain table.
# The KD benchmark's teacher must exist (output/kd_benchmark/teacher/model_final.pth).
set -e
TEACHER=output/kd_benchmark/teacher/model_final.pth
# (a finished split of the same settings is kept by the generator: nothing drawn)
.venv/bin/python tools/make_synthetic_dataset.py --style doclaynet \
    --num-images 5000 --seed 2 --split unlabeled --out datasets/synthetic/doclaynet --workers 2
.venv/bin/python tools/pseudo_label.py --config-file configs/synthetic/bench/teacher_R_50_GN.yaml \
    --input datasets/synthetic/doclaynet/unlabeled --output datasets/synthetic/doclaynet/unlabeled_pseudo \
    MODEL.WEIGHTS $TEACHER
.venv/bin/python tools/make_synthetic_dataset.py --style publaynet \
    --num-images 5000 --seed 2 --split unlabeled --out datasets/synthetic/publaynet --workers 2
ARGS=(--teacher configs/synthetic/bench/teacher_R_50_GN.yaml --teacher-weights $TEACHER
      --teacher-opts DATASETS.TEST "('synthetic_doclaynet_val', 'synthetic_publaynet_as_doclaynet_val')"
      --student configs/synthetic/unlabeled/student_MNv3_GN.yaml --output output/unlabeled
      --reuse student=output/kd_benchmark/student kd_labelled=output/kd_benchmark/defeat_crosskd
      --jobs 2 --threads 2)
U=configs/synthetic/unlabeled
.venv/bin/python projects/kd_benchmark/tools/kd_report.py "${ARGS[@]}" --publish-runs "${PUBLISH:-projects/unlabeled_kd/results}" --seeds 42 --distill $U/kd_labelled.yaml $U/kd_unlabeled.yaml \
    $U/kd_pseudo_offline.yaml $U/kd_publaynet_unlabeled.yaml $U/kd_unlabeled_pseudo.yaml
.venv/bin/python projects/kd_benchmark/tools/kd_report.py "${ARGS[@]}" --seeds 42 1 2 --distill $U/kd_*.yaml --publish "${PUBLISH:-projects/unlabeled_kd/results}"
.venv/bin/python projects/kd_benchmark/tools/kd_report.py "${ARGS[@]}" --seeds 42 1 2 --distill $U/kd_*.yaml --publish "${PUBLISH:-projects/unlabeled_kd/results}" \
    --collect-only --dataset synthetic_publaynet_as_doclaynet_val
