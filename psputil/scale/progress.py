"""Progress of long work (units of a sweep, epochs of a LOBSTER run) for a person to follow.

A ``Progress`` sends each update to one place: a tqdm bar (``bar=True``, for an
interactive session), a file of JSON lines (``path``; ``python -m psputil reproduce``
sets $PSPUTIL_PROGRESS for each notebook's kernel and prints the lines on the
terminal, so nothing lands in the saved notebooks), or nowhere. Updates to the file
are throttled to one per second per task, plus the first and the last.
"""

import json
import time
from dataclasses import dataclass
from typing import Optional

from psputil import bars


@dataclass
class Progress:
    """Where progress goes: a tqdm bar, a JSON-lines file, or nowhere (both None/False)."""

    bar: bool = False
    path: Optional[str] = None
    interval: float = 1.0  # seconds between file updates of one task

    def task(self, what, total, unit="unit", elapsed=0.0, done=0, **facts):
        """A ``Task`` counting `total` steps of `what` ("control runs of lenet300-mnist").

        Args:
            elapsed, done: seconds and steps the work already had before this task was made (a
                resumed run, a worker that reports only now); the ETA counts them.
            facts: shown with the first record (e.g. sparsity="97.50 %").
        """
        return Task(self, what, int(total), unit, elapsed, done, **facts)

    def _write(self, record):
        if self.path:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")


class Task:
    """One counted piece of work; ``update`` after each step, ``close`` at the end (or use ``with``)."""

    def __init__(self, progress, what, total, unit, elapsed=0.0, done=0, **facts):
        self.progress, self.what, self.total, self.unit = progress, what, total, unit
        self.done = int(done)
        self.started = time.perf_counter() - elapsed
        self._last = 0.0
        self._held = None  # the facts of an update the throttle held back (close writes it)
        self._bar = bars.bar(None, total=total, initial=self.done, desc=what, unit=unit,
                             leave=False) if progress.bar else None
        self._emit(force=True, **facts)

    def update(self, steps=1, **facts):
        """Count `steps` more finished steps; `facts` (e.g. sparsity=97.5) travel with the update."""
        self.done += steps
        if self._bar is not None:
            self._bar.update(steps)
            if facts:
                self._bar.set_postfix(facts)
        self._emit(force=self.done >= self.total, **facts)

    def eta(self):
        """Seconds left at the mean pace so far (None before the first step)."""
        if self.done == 0:
            return None
        return (time.perf_counter() - self.started) / self.done * max(self.total - self.done, 0)

    def close(self):
        """End the task; an update the throttle held back is written now, so the last state shows."""
        if self._held is not None:
            self._emit(force=True, **self._held)
        if self._bar is not None:
            self._bar.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _emit(self, force=False, **facts):
        now = time.perf_counter()
        if not self.progress.path:
            return
        if not force and now - self._last < self.progress.interval:
            self._held = facts
            return
        self._last, self._held = now, None
        eta = self.eta()
        self.progress._write({"what": self.what, "unit": self.unit, "done": self.done, "total": self.total,
                              "elapsed": round(now - self.started, 1), "eta": None if eta is None else round(eta, 1),
                              **facts})


def describe(record):
    """One terminal line for a progress record: "control runs: 12/30 units, 41 s, ETA 60 s"."""
    eta = f", ETA {record['eta']:.0f} s" if record.get("eta") is not None and record["done"] < record["total"] else ""
    extra = "".join(f", {k} {v}" for k, v in record.items()
                    if k not in ("what", "unit", "done", "total", "elapsed", "eta"))
    return f"{record['what']}: {record['done']}/{record['total']} {record['unit']}s, {record['elapsed']:.0f} s{eta}{extra}"
