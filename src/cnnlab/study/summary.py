"""The short markdown account of a study: its question, budget, table, and what the numbers say.

Only what the table shows is claimed: the ranking, the spread, the mean of each factor's levels over the other
factors, and the caveats that bound what a reader may conclude (one seed, or how far several seeds spread; a smoke
budget; failed variants).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from itertools import pairwise
from typing import Any

from cnnlab.compare import judged_figure
from cnnlab.data.folder import has_validation_folder
from cnnlab.study.spec import Study
from cnnlab.train.config import JUDGED


def _pts(a: float, b: float) -> str:
    """``a - b`` in accuracy points, with a second decimal where one would show 0.0 of figures that differ."""
    text = f"{100 * (a - b):+.1f}"
    if float(text) == 0 and not _tie(a, b):  # e.g. 0.8413 and 0.8410: the figures differ, so must the points
        text = f"{100 * (float(f'{a:.4f}') - float(f'{b:.4f}')):+.2f}"
    return f"{text} points"


def _tie(a: float, b: float) -> bool:
    """Whether two accuracies print the same (4 decimals, as the summary shows them): neither may be called
    ahead of the other, or it reads "0.1000 > 0.1000"."""
    return f"{a:.4f}" == f"{b:.4f}"


def _ranking(scores: dict[str, float], ranked: list[str]) -> str:
    """``a 0.9 > b 0.8 = c 0.8``: '=' between figures that print the same."""
    text = f"{ranked[0]} {scores[ranked[0]]:.4f}"
    for before, name in pairwise(ranked):
        text += f" {'=' if _tie(scores[before], scores[name]) else '>'} {name} {scores[name]:.4f}"
    return text


def _budget_line(budget: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in budget.items())


def is_smoke(budget: dict[str, Any]) -> bool:
    """Whether the budget cuts epochs short (``limit_*_batches``): a pipeline check, not an experiment."""
    return any(budget.get(k) is not None for k in ("limit_train_batches", "limit_val_batches"))


def factor_effects(study: Study, scores: dict[str, float]) -> list[str]:
    """One line per factor: each level's mean score, best level first, over the variants whose other factors meet
    every level of this one (all of them in a full factorial design).

    A study that varies one factor at a time (lenet-kernel-channels: the window at 6-16 channels, the channels at
    5x5) met the 5x5 window with four widths and the others with one: its mean over all variants credited the window
    with what the width did (5x5 "+0.3 points" over 7x7, where at equal width the three tie)."""
    lines = []
    scored = [v for v in study.variants if v.name in scores]
    for factor in study.factors:
        everywhere = {v.factors[factor] for v in scored}
        others: dict[tuple, dict[str, list[float]]] = {}  # the other factors' levels -> this one's -> scores
        for v in scored:
            rest = tuple(v.factors[f] for f in study.factors if f != factor)
            others.setdefault(rest, {}).setdefault(v.factors[factor], []).append(scores[v.name])
        levels: dict[str, list[float]] = {}
        for by_level in others.values():
            if set(by_level) == everywhere:  # a slice that meets every level: a fair comparison
                for level, values in by_level.items():
                    levels.setdefault(level, []).extend(values)
        if len(levels) < 2:
            continue
        means = sorted(((statistics.fmean(s), level, len(s)) for level, s in levels.items()), reverse=True)
        (top, best, _), (low, worst, _) = means[0], means[-1]
        shown = ", ".join(f"{level} {m:.4f}" + (f" (mean of {n})" if n > 1 else "") for m, level, n in means)
        verdict = "the levels tie" if _tie(top, low) else f"{best} over {worst}: {_pts(top, low)}"
        lines.append(f"- **{factor}**: {shown}; {verdict}.")
    return lines


def _spread(low: float, high: float) -> str:
    return f"{low:.4f}-{high:.4f}"


def seed_findings(groups: Mapping[str, Sequence[str]], runs: Mapping[str, float], ranked: list[str],
                  seeds: Sequence[int]) -> list[str]:
    """What several seeds say: each variant's range over its runs, and whether the top two are apart (every run of
    the first above every run of the second) or overlap, which the mean alone would hide."""
    ranges = {v: (min(runs[r] for r in groups[v]), max(runs[r] for r in groups[v])) for v in ranked}
    widest = max(high - low for low, high in ranges.values())
    lines = [f"- {len(seeds)} seeds per variant ({', '.join(map(str, seeds))}): each variant's figure is the mean of "
             f"its runs; the widest range within a variant is {100 * widest:.1f} points ("
             + ", ".join(f"{v} {_spread(*ranges[v])}" for v in ranked) + ")."]
    if len(ranked) > 1:
        first, second = ranked[0], ranked[1]
        if ranges[first][0] > ranges[second][1]:
            lines.append(f"- Every run of {first} beats every run of {second} (its lowest, {ranges[first][0]:.4f}, "
                         f"above the other's highest, {ranges[second][1]:.4f}).")
        else:
            lines.append(f"- {first} and {second} overlap across the seeds ({first} {_spread(*ranges[first])}, "
                         f"{second} {_spread(*ranges[second])}): {len(seeds)} seeds do not settle which is better.")
    return lines


def study_summary(study: Study, budget: dict[str, Any], rows: Sequence[dict[str, Any]], table: str,
                  plot: str = "curves.png", refused: Mapping[str, str] | None = None,
                  seeds: Sequence[int] = ()) -> str:
    """The study's summary.md: question, budget, the comparison table, the plot and the findings.

    Args:
        study: the study that ran.
        budget: the budget the variants trained with (the file's, with the command line's overrides).
        rows: the comparison rows (:func:`cnnlab.compare.compare_runs`), one per run folder, in the study's
            variant order; ``run`` is the run's name (:meth:`Study.run_names`: the variant's, or ``NAME-seedS``).
        table: the rows as a markdown table.
        plot: the curves' file name, relative to the summary.
        refused: runs a check refused before their run folder was made, each with its error's line.
        seeds: the seeds every variant ran with, where several: the variants are ranked by their runs' mean.
    """
    if budget.get("val_split") is not None:
        validated = "a held-out validation split"
    elif has_validation_folder(str(budget.get("dataset") or "")):
        validated = "the folder's own validation split (val/)"
    else:
        validated = "the test set, as the book does (no val_split)"
    drawn = JUDGED[judged_figure(rows)[0]][1]  # the figure curves.png draws (compare.curves_overlay)
    lines = [f"# {study.title}" + (f" (d2l {study.section})" if study.section else ""), ""]
    if study.question:
        lines += [f"Question: {study.question}", ""]
    lines += [f"Budget (every variant): {_budget_line(budget)}. Accuracies are measured on {validated}.", "",
              table, "", f"![validation {drawn} and training loss per epoch]({plot})", "", "## What the numbers say",
              ""]
    by_name = {r["run"]: r for r in rows}
    ranked_rows = [r for r in rows if r["status"] != "failed"]
    judged, why = judged_figure(ranked_rows)
    key, name = f"final_{JUDGED[judged][0]}", JUDGED[judged][1]
    groups = study.run_names(seeds)
    runs = {r["run"]: r[key] for r in ranked_rows if r.get(key) is not None}
    # each variant's figure: its run's, or the mean of its runs over the seeds (all of them scored)
    scores = {v: statistics.fmean(runs[r] for r in names) for v, names in groups.items()
              if all(r in runs for r in names)}
    findings = []
    if why:
        findings.append(f"- Note: {why}.")
    unscored = [r["run"] for r in ranked_rows if r.get(key) is None and r.get("final_val_acc") is not None]
    unranked = [v for v, names in groups.items() if v not in scores and any(r in runs for r in names)]
    if unranked:
        findings.append(f"- Not ranked (not every seed's run scored): {', '.join(unranked)}.")
    if unscored:  # trained before cnnlab recorded the balanced accuracy
        findings.append(f"- Not ranked (no {key} recorded: a run from before cnnlab recorded it): "
                        f"{', '.join(unscored)}.")
    if scores:
        ranked = sorted(scores, key=scores.get, reverse=True)
        best, worst = ranked[0], ranked[-1]
        findings.append(f"- Ranking by final validation {name}: {_ranking(scores, ranked)}.")
        if len(ranked) > 1 and _tie(scores[best], scores[worst]):
            findings.append(f"- No variant leads: all score {scores[best]:.4f}.")
        elif len(ranked) > 1:
            findings.append(f"- {best} leads {worst} by {_pts(scores[best], scores[worst])[1:]}.")
        if len(seeds) > 1:
            findings += seed_findings(groups, runs, ranked, seeds)
        findings += factor_effects(study, scores)
        speed = {n: statistics.fmean(by_name[r]["images_per_s"] for r in groups[n]) for n in ranked
                 if all(by_name[r].get("images_per_s") for r in groups[n])}
        if len(speed) > 1:
            fast, slow = max(speed, key=speed.get), min(speed, key=speed.get)
            findings.append(f"- Training speed: {fast} {speed[fast]:,.0f} images/s, {slow} {speed[slow]:,.0f} "
                            f"images/s ({speed[fast] / speed[slow]:.2f}x).")
    failed = [r["run"] for r in rows if r["status"] == "failed"]
    if failed:
        findings.append(f"- Failed (see their result.json): {', '.join(failed)}.")
    refused = refused or {}
    for name, line in refused.items():  # running the command again would only be refused again
        findings.append(f"- Refused before training (change its settings): {name}: {line}")
    unfinished = [r for names in groups.values() for r in names if r not in refused
                  and (r not in by_name or by_name[r]["status"] == "incomplete")]
    if unfinished:
        findings.append(f"- Not finished yet: {', '.join(unfinished)} (run the same command again to resume).")
    if len(seeds) < 2:
        findings.append("- One seed per variant: differences of a few tenths of a point can be seed noise; run it "
                        "with `--seeds 0 1 2` before trusting them.")
    if is_smoke(budget):
        findings.append("- **Smoke budget** (limit_train_batches / limit_val_batches set): this checks the pipeline; "
                        "the numbers say nothing about the models.")
    return "\n".join(lines + findings) + "\n"
