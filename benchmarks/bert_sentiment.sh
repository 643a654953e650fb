#!/usr/bin/env bash
# The default recipe, measured: three seeds of its own strategy (full), each other strategy,
# a head-only probe at a higher rate, and the same architecture from random weights.
# About 30 minutes on 2 CPU cores. Prints the comparison table at the end.
#
#   benchmarks/bert_sentiment.sh [OUTPUT_FOLDER]
set -euo pipefail
out=${1:-runs/benchmarks/bert_sentiment}
quiet=trainer.disable_tqdm=true

python -m hf_transfer -m recipe=bert_sentiment seed=42,1,2 $quiet hydra.sweep.dir="$out/seeds" \
    hydra.sweep.subdir='seed-${seed}'
python -m hf_transfer -m recipe=bert_sentiment strategy=head_only,partial_unfreeze,lora $quiet \
    hydra.sweep.dir="$out/strategies"
python -m hf_transfer recipe=bert_sentiment strategy=head_only strategy.learning_rate=5e-2 $quiet \
    hydra.run.dir="$out/head_only-lr5e-2"
python -m hf_transfer recipe=bert_sentiment model.pretrained=false $quiet hydra.run.dir="$out/random-start"

python -m hf_transfer report "$out" --csv "$out/report.csv"
