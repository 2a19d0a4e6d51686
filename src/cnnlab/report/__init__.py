"""What a trained network learnt: figures (plots), internals (features) and the HTML run report (html)."""

from cnnlab.report.html import write_report

__all__ = ["write_report"]
