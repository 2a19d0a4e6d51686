"""Every registered model trains through the real Trainer at its book input size and lr (a smoke run).

One tiny batch per model keeps this within CI's budget on 2 cores; benchmarks/models.py runs 20 full batches per
model and records the images/s in docs/models.md.
"""

import json

import pytest
import torch

from cnnlab.models import list_models, model_info
from cnnlab.train import build_trainer, make_config


@pytest.mark.slow
@pytest.mark.parametrize("name", list_models())
def test_book_recipe_trains_every_model(tmp_path, data_dir, name):
    cfg = make_config(name, "book", epochs=1, limit_train_batches=2, limit_val_batches=1, batch_size=4,
                      out=str(tmp_path / name))
    trainer = build_trainer(cfg, quiet=True, report=False)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    history = trainer.fit()
    result = json.loads((tmp_path / name / "result.json").read_text())
    assert result["input_size"] == model_info(name).input_size and cfg.lr == model_info(name).lr
    assert history[0]["train_loss"] > 0 and trainer.state.step == 2
    state = trainer.model.state_dict()
    moved = [k for k, v in state.items() if v.is_floating_point() and not torch.equal(v, before[k])]
    assert moved, "no weight changed"
