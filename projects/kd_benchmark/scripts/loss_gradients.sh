#!/usr/bin/env bash
# Loss-term gradients of the combination, its two terms alone and the balanced combination (seed 42): projects/kd_benchmark/tools/kd_gradients.py at
# five checkpoints, 8 training batches each. Needs the runs' checkpoints (output/, not committed).
# Measured 2026-12-01 beside two trainings (about 5 min per recipe).
cd "$(dirname "$0")/../../.."  # the repository root
for r in defeat_crosskd crosskd defeat defeat_crosskd_balanced; do
  d=output/kd_benchmark/$r/seed42
  nice -n 5 .venv/bin/python projects/kd_benchmark/tools/kd_gradients.py --config-file $d/config.yaml \
    --checkpoints $d/model_0000199.pth $d/model_0000599.pth $d/model_0000999.pth $d/model_0001399.pth $d/model_0001999.pth \
    --batches 8 --output projects/kd_benchmark/results/analysis/${r}_seed42
done
