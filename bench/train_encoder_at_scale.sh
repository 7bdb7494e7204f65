#!/bin/bash
# How the end-to-end encoder trained at scale (issue: an amortised start for every length) was
# made and measured, at one thread on a 2-core CPU. No run is needed: the reconstruction loss
# needs no solutions, and the start is the shipped encoder.
#
# 1. Training texts: 1,000 model continuations (10 built-in contexts x 100, 72 tokens each),
#    800 random-word strings and the 99 windows of the built-in prose (text seed 23; the held-out
#    texts of bench/starts.py use their own prose and seed 9001, and the bench checks it), each
#    text at ONE of 8, 16, 32, 64 tokens (a seeded round robin; 5% of the texts, by context, held
#    out). A checkpoint after every epoch: stopped, it resumes with --resume (the texts are made
#    again first, about 7 minutes of the 13 before epoch 1).
# 2. The starts benchmark on its held-out problems (8 texts x 2 seeds), with the rows it already
#    holds for the recipes and the shipped encoder kept (--add): 16 tokens, then the seed-spread
#    curve at 16 tokens, then 32 tokens.
set -euo pipefail
ENC=${ENC:-runs/enc/scale}
protoscope encoder train --kind end-to-end --from shipped \
  --texts generated:10:100+random:800+windows:99 --generate-tokens 72 --text-seed 23 \
  --lengths 8,16,32,64 --epochs 5 --patience 3 --holdout 0.05 --seed 0 --threads 1 --out "$ENC"
python -m protoscope.bench.starts --length 16 --cap 600 --encoder "$ENC" --only encoder_scale --add --workers 1
python -m protoscope.bench.starts --length 16 --cap 600 --encoder "$ENC" --spreads 0 0.2 0.5 \
  --only encoder_scale@0 encoder_scale@0.2 encoder_scale@0.5 --name starts_spread --workers 1
python -m protoscope.bench.starts --length 32 --cap 1000 --encoder "$ENC" --only encoder_scale --add --workers 1
# 3. Shipped: ENC.safetensors and ENC.texts.jsonl.gz copied to geometry/encoders/smollm2-135m-end-to-end.*,
#    and ENC.json with its texts_file renamed to match.
