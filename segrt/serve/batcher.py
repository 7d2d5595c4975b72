"""Dynamic batching: items from concurrent requests are gathered, up to ``max_batch`` within
``max_delay`` of the first one's arrival, and run as one batch per input shape on the model's engine
(ServedModel.run). A batch is formed when the engine has room for it, so under load batches grow; it
waits for more only while admitted items are still on their way (being decoded), so a lone request
does not wait at all. ``admit`` bounds the items held at once
(decoding, queued or running): past ``max_queue`` a request is refused instead of growing memory."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time

import numpy as np

from segrt.serve.model import Decoded, ServedModel

__all__ = ["Batcher", "QueueFull", "run_grouped"]


_TICKET: contextvars.ContextVar = contextvars.ContextVar("segrt_serve_ticket")


class QueueFull(Exception):
    """More items than --max-queue would be held at once (answered 503 with Retry-After)."""


async def run_grouped(model: ServedModel, xs: list[np.ndarray]) -> list[np.ndarray]:
    """Run items as few batches as their shapes allow (one per shape and dtype); logits in item order."""
    groups: dict[tuple, list[int]] = {}
    for i, x in enumerate(xs):
        groups.setdefault((x.shape, x.dtype.str), []).append(i)
    out: list = [None] * len(xs)

    async def one(idx: list[int]) -> None:
        logits = await model.run(np.stack([xs[i] for i in idx]))
        for i, row in zip(idx, logits):
            out[i] = row

    await asyncio.gather(*(one(idx) for idx in groups.values()))
    return out


class Batcher:
    """``await batcher(items)`` -> their logits (CHW float32 each), run in batches with other requests' items."""

    def __init__(self, model: ServedModel, max_batch: int = 8, max_delay_ms: float = 5.0, max_queue: int = 256,
                 on_batch=None):
        self.model, self.max_batch, self.max_delay, self.max_queue = model, max_batch, max_delay_ms / 1000, max_queue
        self.on_batch = on_batch or (lambda size: None)  # metrics: the size of each batch run
        self.depth = 0  # items admitted and not yet answered
        self.coming = 0  # items admitted that have not reached the batcher yet (being decoded)
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None

    @contextlib.contextmanager
    def admit(self, n: int):
        """Hold ``n`` items while a request is answered; QueueFull when that would pass max_queue. Until
        they reach the batcher they count as on their way (decoding), which a forming batch waits for."""
        if self.depth + n > self.max_queue:
            raise QueueFull(f"{self.depth} image(s) queued, --max-queue {self.max_queue}")
        ticket = {"on_the_way": n}
        self.depth, self.coming = self.depth + n, self.coming + n
        token = _TICKET.set(ticket)
        try:
            yield
        finally:
            _TICKET.reset(token)
            self.depth, self.coming = self.depth - n, self.coming - ticket["on_the_way"]

    async def __call__(self, items: list[Decoded]) -> list[np.ndarray]:
        if self._task is None:
            self._queue = asyncio.Queue()
            self._task = asyncio.get_running_loop().create_task(self._loop())
        loop = asyncio.get_running_loop()
        ticket = _TICKET.get(None)
        if ticket is not None:  # these items have arrived
            arrived = min(len(items), ticket["on_the_way"])
            ticket["on_the_way"] -= arrived
            self.coming -= arrived
        futures = []
        for item in items:
            fut = loop.create_future()
            self._queue.put_nowait((time.monotonic(), item.x, fut))
            futures.append(fut)
        return list(await asyncio.gather(*futures))

    async def _loop(self) -> None:
        slots = asyncio.Semaphore(self.model.session.in_flight)
        while True:
            first = await self._queue.get()
            await slots.acquire()  # the engine has room: what arrived meanwhile joins this batch
            batch, deadline = [first], first[0] + self.max_delay
            while len(batch) < self.max_batch:
                if not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                    continue
                wait = deadline - time.monotonic()
                if wait <= 0 or self.coming <= 0:  # nothing on its way: a lone request does not wait
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), wait))
                except asyncio.TimeoutError:
                    break
            self.on_batch(len(batch))
            asyncio.get_running_loop().create_task(self._run(batch, slots))

    async def _run(self, batch: list, slots: asyncio.Semaphore) -> None:
        try:
            logits = await run_grouped(self.model, [x for _, x, _ in batch])
        except Exception as exc:  # noqa: BLE001 - the engine failed: every request of this batch hears why
            for _, _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
        else:
            for (_, _, fut), row in zip(batch, logits):
                if not fut.done():
                    fut.set_result(row)
        finally:
            slots.release()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
