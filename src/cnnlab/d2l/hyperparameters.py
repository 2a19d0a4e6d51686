"""The book's ``HyperParameters`` (d2l 3.2.2): the base of its boards, models, data and trainers.

Its own module so that ``board`` (ProgressBoard) and ``core`` (Module, which holds a board) can both derive from it.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

__all__ = ["HyperParameters"]


class HyperParameters:
    """Base class whose ``save_hyperparameters`` turns the caller's arguments into attributes (d2l 3.2.2)."""

    def save_hyperparameters(self, ignore: Sequence[str] = ()) -> None:
        """Set every argument of the calling function (``__init__`` as a rule) as an attribute of ``self``.

        Arguments named ``self``, listed in ``ignore`` or starting with ``_`` are skipped; the rest are also kept
        in the dict ``self.hparams``. d2l takes every local variable of the caller; we take only its arguments
        (``*args``/``**kwargs`` included), so a helper variable computed before the call is not saved by accident.
        """
        frame = inspect.currentframe().f_back
        try:
            code = frame.f_code
            count = code.co_argcount + code.co_kwonlyargcount
            count += bool(code.co_flags & inspect.CO_VARARGS) + bool(code.co_flags & inspect.CO_VARKEYWORDS)
            local_vars = frame.f_locals
            skip = {"self", *ignore}
            self.hparams = {name: local_vars[name] for name in code.co_varnames[:count]
                            if name in local_vars and name not in skip and not name.startswith("_")}
        finally:
            del frame  # a frame held in a local makes a reference cycle (inspect docs, "The interpreter stack")
        for name, value in self.hparams.items():
            setattr(self, name, value)
