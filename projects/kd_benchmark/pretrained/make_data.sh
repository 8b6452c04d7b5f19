#!/usr/bin/env bash
# Pages of the pretrained-regime KD benchmark (protocol.md): the target splits (train1k, val, and the
# held-out test split of an unseen seed) and the pre-training corpus (both page styles, other seeds).
# Generation resumes where it stopped; a finished split is kept. Run from the repository root;
# pages go to $DETECTRON2_DATASETS/synthetic/<style>/ (default ./datasets).
set -euo pipefail
ROOT=${DETECTRON2_DATASETS:-datasets}
PY=${PY:-.venv/bin/python}
gen() { "$PY" tools/make_synthetic_dataset.py --style "$1" --num-images "$2" --seed "$3" --split "$4" --out "$ROOT/synthetic/$1"; }
gen doclaynet 500 3 test          # headline split: never used for a choice
gen doclaynet 100 1 val           # every choice is made here
gen doclaynet 1000 0 train1k      # fine-tuning pages (the benchmark's training split)
gen doclaynet 5000 20 pretrain    # pre-training corpus, DocLayNet style
gen publaynet 5000 21 pretrain    # pre-training corpus, PubLayNet style
