"""Micro-batching: requests that arrive while the interpreter is busy run together in its next call.

No timer and no added latency: a request that finds the interpreter idle runs at once (alone, or with the
requests that arrived in the same event-loop turn); requests that arrive while a call is running queue up and
go in the next call as one batch. Under load the batches grow by themselves, so the per-call overhead (Python,
the thread hand-off, the interpreter's own setup) is paid once per batch instead of once per request.
"""
from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

Result = Tuple[np.ndarray, Dict[str, Any]]
# A call that takes less than this runs on the event loop itself: handing it to the worker thread and back costs
# two thread wake-ups (tens of microseconds idle, milliseconds on a busy CPU), more than a small model's call.
# Longer calls go to the worker thread so the loop keeps reading requests (and /health answers) meanwhile.
INLINE_BELOW_S = 0.002


class MicroBatcher:
    """Collects single-input float32 requests and runs them through ``predict`` in batches.

    Args:
        predict: the model's predict (float32 batch in, one float32 array out).
        max_batch: most samples per interpreter call; a request larger than this runs alone.
        on_batch: called after each call with (samples, seconds), e.g. to update metrics.
        inline_below_s: calls whose recent average CPU time is below this run on the event loop's thread.
    """

    def __init__(self, predict: Callable[[np.ndarray], np.ndarray], max_batch: int = 256,
                 on_batch: Optional[Callable[[int, float], None]] = None, inline_below_s: float = INLINE_BELOW_S
                 ) -> None:
        self._predict = predict
        self._max_batch = max_batch
        self._on_batch = on_batch
        self._pending: List[Tuple[np.ndarray, "asyncio.Future[Result]"]] = []
        self._running = False
        # One thread: the interpreter runs one call at a time anyway (Model serialises calls), and while it
        # runs (LiteRT and onnxruntime release the GIL) the event loop keeps parsing the next requests.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edgeport-infer")
        self._inline_below_s = inline_below_s
        self._recent_s = 0.0  # moving average of a call's CPU time; 0 until the first call: start inline

    async def submit(self, x: np.ndarray) -> Result:
        """Queue ``x`` (a validated float32 batch); return its rows of the output and timing details."""
        loop = asyncio.get_running_loop()
        fut: "asyncio.Future[Result]" = loop.create_future()
        self._pending.append((x, fut))
        if not self._running:
            self._running = True
            loop.create_task(self._drain())
        return await fut

    def _take(self) -> List[Tuple[np.ndarray, "asyncio.Future[Result]"]]:
        """The oldest pending requests whose samples fit in one call (at least one request)."""
        taken, n = [], 0
        while self._pending:
            x = self._pending[0][0]
            if taken and n + len(x) > self._max_batch:
                break
            taken.append(self._pending.pop(0))
            n += len(x)
        return taken

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                batch = [(x, f) for x, f in self._take() if not f.cancelled()]
                if not batch:
                    continue
                xs = [x for x, _ in batch]
                t0 = time.perf_counter()
                try:
                    big = xs[0] if len(xs) == 1 else np.concatenate(xs)
                    if self._recent_s < self._inline_below_s:
                        y, cpu = self._call(big)  # shorter than two thread hand-offs: run it right here
                    else:
                        y, cpu = await loop.run_in_executor(self._pool, self._call, big)
                except Exception as e:  # every request of the batch gets the error (ModelRunError: a 500)
                    for _, f in batch:
                        if not f.done():
                            f.set_exception(e)
                    continue
                dt = time.perf_counter() - t0
                self._recent_s = cpu if not self._recent_s else 0.8 * self._recent_s + 0.2 * cpu
                if self._on_batch is not None:
                    self._on_batch(len(big), dt)
                detail = {"batch": int(len(big)), "model_ms": round(dt * 1000, 4)}
                start = 0
                for x, f in batch:
                    if not f.done():
                        f.set_result((y[start:start + len(x)], detail))
                    start += len(x)
        finally:
            self._running = False

    def _call(self, x: np.ndarray) -> Tuple[np.ndarray, float]:
        """The outputs and the calling thread's CPU seconds: unlike wall time, not inflated when a busy machine
        pre-empts the thread mid-call, so a small model is not mistaken for a slow one."""
        c0 = time.thread_time()
        y = self._predict(x)
        return y, time.thread_time() - c0

    def close(self) -> None:
        """Stop the worker thread (pending calls finish first)."""
        self._pool.shutdown(wait=True)
