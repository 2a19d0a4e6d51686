"""Small helpers of the book's function-style API (d2l 2.0 / d2l-zh v2): ``Timer``, ``Accumulator``, ``Benchmark``."""

from __future__ import annotations

import itertools
import time
from typing import Any

__all__ = ["Timer", "Accumulator", "Benchmark"]


class Timer:
    """Records several running times (d2l 3.1.2); started when made.

    Example:
        >>> timer = Timer()
        >>> _ = timer.stop()
        >>> len(timer.times)
        1
    """

    def __init__(self):
        self.times: list[float] = []
        self.start()

    def start(self) -> None:
        """Start (or restart) the clock."""
        self.tik = time.perf_counter()

    def stop(self) -> float:
        """Stop the clock, record the seconds since ``start`` and return them."""
        self.times.append(time.perf_counter() - self.tik)
        return self.times[-1]

    def avg(self) -> float:
        """Mean of the recorded times."""
        return sum(self.times) / len(self.times)

    def sum(self) -> float:
        """Total of the recorded times."""
        return sum(self.times)

    def cumsum(self) -> list[float]:
        """Running totals of the recorded times."""
        return list(itertools.accumulate(self.times))


class Accumulator:
    """Running sums of ``n`` quantities (d2l 4.4.3): ``add(a, b, ...)`` adds one value to each.

    Values are converted with ``float``, so a tensor is read back from its device on every ``add``, as in d2l;
    the library's own loops keep their sums on the device instead.
    """

    def __init__(self, n: int):
        self.data = [0.0] * n

    def add(self, *args: Any) -> None:
        self.data = [a + float(b) for a, b in zip(self.data, args, strict=False)]

    def reset(self) -> None:
        self.data = [0.0] * len(self.data)

    def __getitem__(self, idx: int | slice) -> Any:
        return self.data[idx]


class Benchmark:
    """``with Benchmark("what"):`` prints ``what: 0.1234 sec`` when the block ends (d2l 13.1)."""

    def __init__(self, description: str = "Done"):
        self.description = description

    def __enter__(self) -> Benchmark:
        self.timer = Timer()
        return self

    def __exit__(self, *args: Any) -> None:
        print(f"{self.description}: {self.timer.stop():.4f} sec")
