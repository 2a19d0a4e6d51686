"""What the installed torch accepts, where versions differ and torch is the oracle of a test.

cnnlab follows the newest torch it supports; on an older one the cases torch refused then have no oracle.
"""

import inspect

import torch
import torch.nn.functional as F
from torch import nn

# batch norm's bias=False (a weight without a bias): torch 2.14 has it, 2.11 does not.
BATCH_NORM_TAKES_BIAS = "bias" in inspect.signature(nn.BatchNorm1d).parameters


def _batch_norm_takes_eps_0() -> bool:
    try:
        F.batch_norm(torch.ones(1, 1), torch.zeros(1), torch.ones(1), eps=0.0)
    except ValueError:  # torch 2.11: "batch_norm eps must be positive"
        return False
    return True


BATCH_NORM_TAKES_EPS_0 = _batch_norm_takes_eps_0()
