#!/usr/bin/env bash
# The KD benchmark's queue as it is run across sessions (from the repository root; resumable: every
# call collects finished runs, resumes interrupted ones from their last checkpoint and trains the rest
# of its list; on a fresh machine the first call retrains the teacher first).
#   A: seeds 42 and 1 of the five recipes that decide the bar and of the balanced combination,
#      then seed 2 of the five and of the balanced combination (3-seed means decide the bar), then the first seeds of the
#      combination's two terms balanced (the loss-scale question: DeFeat's gradient in the
#      combination is a fifth of the detection losses', analysis/);
#   B3 (before B's last recipe, simkd_balanced, on the fresh machine of 2026-12-03): the three seeds
#      of the second combination (mgd_crosskd: MGD at its balanced seed-42 weight + CrossKD; its rule
#      was fixed before list B's results, README "A second combination");
#   B: the first seeds of the rest: first CrossKD with the mask term of the authors' Mask R-CNN
#      recipe (should it beat CrossKD, the combination rule makes it the combination's response
#      loss), then logit MSE, mask KD, the balanced recipes, fgd_init;
#   B2: seeds 1 and 2 of the two balanced feature losses that were level with the combinations at
#      seed 42 (MGD 28.7, DeFeat 28.0, from the retrained teacher): whether balancing makes them the
#      best feature losses (the combination rule, applied to the balanced rows, needs their means);
#   C: everything, all seeds: the full report (the README's command, same table), the only call that
#      publishes the table (A and B would replace it by their part of it: they publish their runs
#      only, --publish-runs, and collect the published ones instead of training them again on a
#      fresh machine). PUBLISH=<dir> publishes elsewhere (e.g. the checkout this queue was copied from).
# Collect and publish what is finished meanwhile: the README's command with --collect-only.
set -e
KD=(.venv/bin/python tools/kd_report.py --teacher configs/synthetic/bench/teacher_R_50_GN.yaml
    --student configs/synthetic/bench/student_MNv3_GN.yaml --output output/kd_benchmark
    --jobs 2 --threads 2)
PART=("${KD[@]}" --publish-runs "${PUBLISH:-results/kd_benchmark}")
recipes() { for n in "$@"; do printf 'configs/synthetic/bench/distill/%s.yaml ' "$n"; done; }
"${PART[@]}" --seeds 42 1 --distill $(recipes defeat_crosskd crosskd defeat pkd cwd defeat_crosskd_balanced)
"${PART[@]}" --seeds 42 1 2 --distill $(recipes defeat_crosskd crosskd defeat pkd cwd defeat_crosskd_balanced)
"${PART[@]}" --seeds 42 --distill $(recipes crosskd_balanced defeat_balanced)
"${PART[@]}" --seeds 42 1 2 --distill $(recipes mgd_crosskd)
"${PART[@]}" --seeds 42 --distill $(recipes crosskd_mask logit_mse mask_kd fitnet_balanced \
    mgd_balanced fgd_balanced fgd_init pkd_balanced cwd_balanced box_kd_balanced reviewkd_balanced \
    logit_kd_balanced logit_mse_balanced mask_kd_balanced simkd_balanced)
"${PART[@]}" --seeds 42 1 2 --distill $(recipes mgd_balanced defeat_balanced)
"${KD[@]}" --publish "${PUBLISH:-results/kd_benchmark}" --seeds 42 1 2 --distill configs/synthetic/bench/distill/[a-z]*.yaml
# The teacher effect (README "KD benchmark"), relative to the table's teacher, over every published run.
.venv/bin/python tools/kd_teacher_effect.py --published "${PUBLISH:-results/kd_benchmark}" --reference b7ab74b97654 \
    --output "${PUBLISH:-results/kd_benchmark}/analysis/teacher_effect"
