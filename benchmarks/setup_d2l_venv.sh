#!/usr/bin/env bash
# Make the virtualenv the d2l 1.0.3 baseline runs in (benchmarks/seed_lenet.py --d2l book), outside the repo.
# d2l 1.0.3 pins 2023 releases of numpy, pandas, scipy, matplotlib and jupyter, so it goes in with --no-deps,
# beside the same torch/torchvision as cnnlab's .venv and current releases of what `from d2l import torch` imports.
set -euo pipefail
VENV="$(realpath -m "${1:-$HOME/.cache/cnnlab/d2l-venv}")"
cd "$(dirname "$0")/.."  # the versions below are read from the repository's .venv
TORCH="$(.venv/bin/python -c 'import torch; print(torch.__version__.split("+")[0])' 2>/dev/null || echo 2.14.1)"
VISION="$(.venv/bin/python -c 'import torchvision; print(torchvision.__version__.split("+")[0])' 2>/dev/null \
  || echo 0.29.1)"
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q "torch==$TORCH" "torchvision==$VISION"
"$VENV/bin/pip" install -q --no-deps d2l==1.0.3
"$VENV/bin/pip" install -q matplotlib pandas scipy ipython requests
"$VENV/bin/python" -c "from d2l import torch as d2l; print('d2l 1.0.3 ready:', d2l.__name__)"
echo "$VENV/bin/python"
