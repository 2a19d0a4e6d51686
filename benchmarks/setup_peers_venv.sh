#!/usr/bin/env bash
# Make the virtualenv the peer programs run in (benchmarks/peer_lightning.py, peer_fastai.py, peer_keras.py;
# `python benchmarks/bench.py --only peers`), outside the repo: current PyTorch Lightning, fastai and Keras 3 from
# PyPI, beside the same torch/torchvision as cnnlab's .venv so that every program runs the same kernels.
# Keras runs on the torch backend (the peer scripts set KERAS_BACKEND=torch before importing it).
set -euo pipefail
VENV="$(realpath -m "${1:-$HOME/.cache/cnnlab/peers-venv}")"
cd "$(dirname "$0")/.."  # the versions below are read from the repository's .venv
TORCH="$(.venv/bin/python -c 'import torch; print(torch.__version__.split("+")[0])' 2>/dev/null || echo 2.14.1)"
VISION="$(.venv/bin/python -c 'import torchvision; print(torchvision.__version__.split("+")[0])' 2>/dev/null \
  || echo 0.29.1)"
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q "torch==$TORCH" "torchvision==$VISION"
# Pinning torch again keeps a peer's own requirement from swapping it for another release.
"$VENV/bin/pip" install -q "torch==$TORCH" "torchvision==$VISION" lightning fastai keras
KERAS_BACKEND=torch "$VENV/bin/python" -c "import lightning, fastai, keras, torch
print('peers ready: lightning', lightning.__version__, '| fastai', fastai.__version__, '| keras', keras.__version__,
      keras.backend.backend(), '| torch', torch.__version__)"
echo "$VENV/bin/python"
