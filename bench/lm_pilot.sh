#!/bin/sh
# LM pilot (BENCHMARKS "LM pilots"): bench/lm_pilot.sh NAME MINUTES THREADS [extra overrides...]
cd "$(dirname "$0")/.."; N=$1; M=$2; T=$3; shift 3; O=runs/pilots/$N; mkdir -p runs/pilots
S='[{"path":"runs/tiny/tok/speech","tasks":{"asr":1.0,"tts":1.0,"continue":0.1}},{"path":"runs/tiny/tok/music","tasks":{"music":0.1}},{"path":"runs/tiny/tok/sfx","tasks":{"sfx":0.1}}]'
export AUDIOLLM_THREADS=$T OMP_NUM_THREADS=$T
.venv/bin/audiollm fit --config recipes/quickstart/config.yaml --data.sources "$S" --data.tokenizer runs/tiny/tokenizer \
  --trainer.default_root_dir $O --checkpoint.dirpath $O/checkpoints --trainer.max_time 00:00:$M:00 \
  --trainer.max_steps 3000 --trainer.val_check_interval 100000 --trainer.limit_val_batches 0 "$@" > $O.log 2>&1
.venv/bin/audiollm eval asr --manifest runs/tiny/data/fsdd/test.jsonl --model $O/model --limit 100 --out $O/asr_fsdd.json > $O.asr 2>&1
