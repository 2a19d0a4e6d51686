"""What a trained network learnt: figures (plots), internals (features), the HTML run report (html) and the
observer that writes a run's curves and report when it trains (observer)."""

from cnnlab.report.html import read_run, write_report
from cnnlab.report.observer import RunReport

__all__ = ["RunReport", "read_run", "write_report"]
