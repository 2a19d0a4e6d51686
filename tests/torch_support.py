"""What the installed torch accepts, where versions differ and torch is the oracle of a test.

cnnlab follows the newest torch it supports; on an older one the cases torch refused then have no oracle.
"""

import inspect

import torch
import torch.nn.functional as F
from torch import nn
from torch.export.pt2_archive import _package as pt2_archive

# batch norm's bias=False (a weight without a bias): torch 2.14 has it, 2.11 does not.
BATCH_NORM_TAKES_BIAS = "bias" in inspect.signature(nn.BatchNorm1d).parameters


def _batch_norm_takes_eps_0() -> bool:
    try:
        F.batch_norm(torch.ones(1, 1), torch.zeros(1), torch.ones(1), eps=0.0)
    except ValueError:  # torch 2.11: "batch_norm eps must be positive"
        return False
    return True


BATCH_NORM_TAKES_EPS_0 = _batch_norm_takes_eps_0()


def _pt2_loader_unpickles_opaque_objects() -> bool:
    """Whether torch.export.load unpickles a program's opaque-object constants (torch 2.14 does; on torch 2.11 a
    crafted file's opaque object was never read, so its payload did not run)."""
    loader = getattr(pt2_archive, "_load_constants", None)
    return loader is not None and "OPAQUE_OBJ_FILENAME_PREFIX" in inspect.getsource(loader)


PT2_LOADER_UNPICKLES_OPAQUE_OBJECTS = _pt2_loader_unpickles_opaque_objects()
