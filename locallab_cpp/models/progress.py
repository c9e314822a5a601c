"""Progress of a model load: downloading, verifying, loading.

A :class:`LoadProgress` is written by the worker thread that fetches and opens a model and
read by request handlers on the event loop, so every access goes through its lock.
``progress_tqdm`` turns one into a tqdm class for ``hf_hub_download(tqdm_class=...)``, which
is how huggingface_hub reports the bytes it has received.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Literal

from tqdm.auto import tqdm

Phase = Literal["downloading", "verifying", "loading"]
Outcome = Literal["ready", "failed"]


class LoadCancelled(Exception):
    """The load was cancelled (server shutdown); the worker thread stops at its next step."""


@dataclass(frozen=True, slots=True)
class ProgressSnapshot:
    """A consistent view of one load at one moment."""

    model_id: str
    state: Phase | Outcome
    bytes_done: int
    bytes_total: int
    started_at: float
    updated_at: float
    detail: str | None = None

    @property
    def active(self) -> bool:
        """Whether the load is still under way."""
        return self.state not in ("ready", "failed")

    @property
    def percent(self) -> float | None:
        """Share of the current phase done, or None while the total is unknown."""
        if self.bytes_total <= 0:
            return None
        return round(min(100.0, 100.0 * self.bytes_done / self.bytes_total), 1)


class LoadProgress:
    """The phase and byte counts of one model load. Thread-safe."""

    def __init__(self, model_id: str) -> None:
        self.model_id = model_id
        self.started_at = time.time()
        self._lock = threading.Lock()
        self._state: Phase = "loading"
        self._done = 0
        self._total = 0
        self._updated_at = self.started_at
        self._cancelled = threading.Event()

    def begin(self, state: Phase, total: int = 0, done: int = 0) -> None:
        """Enter a phase; ``total`` is its size in bytes (0 if unknown)."""
        self.check()
        with self._lock:
            self._state = state
            self._total = max(0, total)
            self._done = max(0, done)
            self._updated_at = time.time()

    def advance(self, n: int, total: int | None = None) -> None:
        """Count ``n`` more bytes of the current phase (negative when a download restarts)."""
        self.check()
        with self._lock:
            self._done = max(0, self._done + n)
            if total is not None and total > 0:
                self._total = total
            self._updated_at = time.time()

    def cancel(self) -> None:
        """Ask the worker to stop; it raises LoadCancelled at its next progress step."""
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        """Whether :meth:`cancel` was called."""
        return self._cancelled.is_set()

    def check(self) -> None:
        """Raise LoadCancelled if the load was cancelled."""
        if self._cancelled.is_set():
            raise LoadCancelled(f"The load of model '{self.model_id}' was cancelled.")

    def snapshot(self) -> ProgressSnapshot:
        """The current state, copied under the lock."""
        with self._lock:
            return ProgressSnapshot(
                model_id=self.model_id,
                state=self._state,
                bytes_done=self._done,
                bytes_total=self._total,
                started_at=self.started_at,
                updated_at=self._updated_at,
            )

    def finish(self, outcome: Outcome, detail: str | None = None) -> ProgressSnapshot:
        """The final snapshot of this load."""
        with self._lock:
            return ProgressSnapshot(
                model_id=self.model_id,
                state=outcome,
                bytes_done=self._done,
                bytes_total=self._total,
                started_at=self.started_at,
                updated_at=time.time(),
                detail=detail,
            )


def progress_tqdm(
    progress: LoadProgress, *, show: bool = False, label: str | None = None
) -> type[tqdm]:
    """A tqdm class that reports a download's bytes to ``progress``.

    huggingface_hub builds the bar itself from the class it is given. Xet downloads build two
    bars (bytes written and bytes received); only the first one created is counted, so the
    figures are not doubled. ``show`` draws the bar on stderr as well (the CLI's ``pull``),
    titled ``label``.
    """
    owner: list[object] = []

    class _ReportingBar(tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            if not show:
                kwargs["disable"] = True
            elif label:
                kwargs["desc"] = label
            super().__init__(*args, **kwargs)
            self._counted = not owner
            if self._counted:
                owner.append(self)
                total = int(kwargs.get("total") or 0)
                progress.begin("downloading", total=total, done=int(kwargs.get("initial") or 0))

        def update(self, n: float | None = 1) -> bool | None:
            if self._counted:
                # huggingface_hub may fix the total after creating the bar (Xet does).
                total = int(self.total) if self.total else None
                progress.advance(int(n or 0), total=total)
            return super().update(n)

    return _ReportingBar
