#!/usr/bin/env bash
# The KD benchmark's runs in the order they were trained, from the repository root. Every call is
# resumable: it collects finished runs (also published ones, on a fresh machine), resumes interrupted
# ones from their last checkpoint and trains the rest of its list; a call with runs left to train
# retrains the teacher first when this machine has none.
#   1. seeds 42 and 1, then 2, of the five recipes that decided the bar and of the DeFeat + CrossKD
#      combination (balanced form included); the combination's two terms balanced (seed 42);
#   2. the three seeds of the second combination (mgd_crosskd; its rule was fixed before the results
#      of the recipes that follow);
#   3. the first seed of every other recipe, then seeds 1 and 2 of the two balanced feature losses
#      level with the combinations at seed 42 (MGD, DeFeat);
#   4. everything, all seeds: the only call that publishes the table (the partial calls above publish
#      their runs only, --publish-runs). PUBLISH=<dir> publishes elsewhere.
# Then the teacher effect over every published run, relative to the table's teacher.
set -e
KD=(.venv/bin/python projects/kd_benchmark/tools/kd_report.py --teacher configs/synthetic/bench/teacher_R_50_GN.yaml
    --student configs/synthetic/bench/student_MNv3_GN.yaml --output output/kd_benchmark
    --jobs 2 --threads 2)
PART=("${KD[@]}" --publish-runs "${PUBLISH:-projects/kd_benchmark/results}")
recipes() { for n in "$@"; do printf 'projects/kd_benchmark/configs/%s.yaml ' "$n"; done; }
"${PART[@]}" --seeds 42 1 --distill $(recipes defeat_crosskd crosskd defeat pkd cwd defeat_crosskd_balanced)
"${PART[@]}" --seeds 42 1 2 --distill $(recipes defeat_crosskd crosskd defeat pkd cwd defeat_crosskd_balanced)
"${PART[@]}" --seeds 42 --distill $(recipes crosskd_balanced defeat_balanced)
"${PART[@]}" --seeds 42 1 2 --distill $(recipes mgd_crosskd)
"${PART[@]}" --seeds 42 --distill $(recipes crosskd_mask logit_mse mask_kd fitnet_balanced \
    mgd_balanced fgd_balanced fgd_init pkd_balanced cwd_balanced box_kd_balanced reviewkd_balanced \
    logit_kd_balanced logit_mse_balanced mask_kd_balanced simkd_balanced)
"${PART[@]}" --seeds 42 1 2 --distill $(recipes mgd_balanced defeat_balanced)
"${KD[@]}" --publish "${PUBLISH:-projects/kd_benchmark/results}" --seeds 42 1 2 --distill projects/kd_benchmark/configs/[a-z]*.yaml
.venv/bin/python projects/kd_benchmark/tools/kd_teacher_effect.py --published "${PUBLISH:-projects/kd_benchmark/results}" --reference b7ab74b97654 \
    --output "${PUBLISH:-projects/kd_benchmark/results}/analysis/teacher_effect"
