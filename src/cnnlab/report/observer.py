"""The report's observer of a training run: curves.png when the fit ends, report.html after it.

Both are derived from the run's record (:class:`cnnlab.runs.RunFolder` writes that), so they are written after it
and can be written again later (``cnnlab report RUN_DIR``).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from cnnlab.io import save_figure
from cnnlab.report.curves import curves_figure
from cnnlab.report.html import write_report


class RunReport:
    """Observer of a :class:`~cnnlab.train.trainer.Trainer` that draws a run's curves and writes its report.

    curves.png when the fit ends (also without ``report``: it is cheap and every run folder has it); then
    report.html, which evaluates the test set again where the run kept no logits and can be skipped with Ctrl-C. A
    resumed run's report.html, of the run as it was, goes when the fit starts.

    Args:
        path: the run folder.
        report: write report.html after the fit.
        data_dir: where the report finds the test set when it must evaluate it again.
        quiet: no line saying the report is being written.
    """

    def __init__(self, path: str | Path, *, report: bool = True, data_dir: str | None = None, quiet: bool = False):
        self.path, self.report, self.data_dir, self.quiet = Path(path), report, data_dir, quiet

    def on_start(self, trainer) -> None:
        # resumed: it trains again (more epochs, perhaps), and a report of the run as it was would stand beside
        # figures it no longer matches, for good under --no-report
        (self.path / "report.html").unlink(missing_ok=True)

    def on_end(self, trainer, result: dict[str, Any]) -> None:
        if trainer.state.history:
            save_figure(curves_figure(trainer.state.history, title=trainer.config.model,
                                      balance=trainer.config.balance), self.path / "curves.png")

    def after_fit(self, trainer, result: dict[str, Any]) -> None:
        if not self.report:
            return
        if not self.quiet:
            print(f"writing {self.path / 'report.html'} (Ctrl-C skips it: the run's results are saved)", flush=True)
        t0 = time.perf_counter()
        try:
            write_report(self.path, data_dir=self.data_dir, device=str(trainer.device), dataset=trainer.dataset,
                         test_logits=trainer.test_logits)
        except KeyboardInterrupt:
            print("cnnlab: report.html skipped (Ctrl-C); `cnnlab report RUN_DIR` writes it later", file=sys.stderr)
        except Exception as e:  # the run's results are already safe on disk; say what failed and go on
            print(f"cnnlab: warning: report.html not written: {e}", file=sys.stderr)
        else:
            if not self.quiet:
                print(f"report written in {time.perf_counter() - t0:.1f}s", flush=True)
