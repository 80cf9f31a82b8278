"""Per-recipe progress of `edgeport convert`: a live rich display on a terminal, plain lines otherwise.

Each recipe runs for seconds to minutes in a child process; the user sees which are running, which finished (and
when), which failed or were skipped, and a summary at the end.
"""
from __future__ import annotations

import sys
import time
from typing import Callable, Dict, List, Optional


class ConvertProgress:
    """Reports recipe outcomes as they complete. ``emit`` receives plain lines (the non-TTY path and tests)."""

    def __init__(self, recipes: List[str], emit: Callable[[str], None] = print, live: Optional[bool] = None):
        self.recipes = recipes
        self.emit = emit
        self.t0 = time.perf_counter()
        self.outcomes: Dict[str, str] = {}
        use_live = sys.stdout.isatty() if live is None else live
        self._rich = None
        if use_live and emit is print:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._rich = Progress(TextColumn("converting"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                  TextColumn("{task.description}"), transient=True)
            self._task = self._rich.add_task(f"running: {', '.join(recipes)}", total=len(recipes))
            self._rich.start()

    def _elapsed(self) -> str:
        return f"{time.perf_counter() - self.t0:6.1f} s"

    def _line(self, text: str) -> None:
        if self._rich is not None:
            self._rich.console.print(text, highlight=False, markup=False)
            waiting = [r for r in self.recipes if r not in self.outcomes]
            self._rich.update(self._task, advance=1, description=f"running: {', '.join(waiting)}" if waiting else "")
        else:
            self.emit(text)

    def _report(self, recipe: str, outcome: str, detail: str = "") -> None:
        self.outcomes[recipe] = outcome
        n = len(self.outcomes)
        self._line(f"  [{n}/{len(self.recipes)}] {recipe:<20} {outcome:<8} at {self._elapsed()}"
                   + (f"  {detail}" if detail else ""))

    def done(self, recipe: str) -> None:
        """The recipe converted."""
        self._report(recipe, "done")

    def skipped(self, recipe: str) -> None:
        """The recipe does not apply to this model (the reason is printed as a warning afterwards)."""
        self._report(recipe, "skipped", "(does not apply to this model)")

    def failed(self, recipe: str, why: str) -> None:
        """The recipe failed."""
        self._report(recipe, "FAILED", why[:120])

    def close(self) -> str:
        """Stop the live display; return the one-line summary (also emitted)."""
        if self._rich is not None:
            self._rich.stop()
        counts = {k: sum(1 for v in self.outcomes.values() if v == k) for k in ("done", "skipped", "FAILED")}
        summary = (f"converted {counts['done']} of {len(self.recipes)} {_plural(len(self.recipes), 'recipe')} in "
                   f"{time.perf_counter() - self.t0:.1f} s"
                   + (f", {counts['skipped']} skipped" if counts["skipped"] else "")
                   + (f", {counts['FAILED']} failed" if counts["FAILED"] else ""))
        (self._rich.console.print if self._rich is not None else self.emit)(summary)
        return summary


def _plural(n: int, word: str) -> str:
    return word if n == 1 else word + "s"
