"""The dynamic batcher on a pointwise fake engine: batches form from concurrent requests, one per
shape, no larger than max_batch; an engine failure reaches its own batch only; admission is bounded."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import numpy as np
import pytest

from segrt.serve.batcher import Batcher, QueueFull
from segrt.serve.model import Decoded


class FakeModel:
    """Logits = 2 * x; records each batch's size; fails a batch holding a NaN."""

    def __init__(self, delay: float = 0.02):
        self.session, self.sizes, self.delay = SimpleNamespace(in_flight=1), [], delay

    def run(self, batch: np.ndarray):
        self.sizes.append(len(batch))

        async def later():
            await asyncio.sleep(self.delay)
            if np.isnan(batch).any():
                raise RuntimeError("engine failed")
            return batch * 2

        return asyncio.ensure_future(later())


def item(value: float, shape=(1, 4, 4)) -> Decoded:
    return Decoded(np.full(shape, value, np.float32))


def test_concurrent_requests_share_batches_up_to_max_batch():
    model = FakeModel()
    seen = []
    batcher = Batcher(model, max_batch=4, max_delay_ms=50, on_batch=seen.append)

    async def main():
        return await asyncio.gather(*(batcher([item(i)]) for i in range(10)))

    results = asyncio.run(main())
    assert [float(r[0][0, 0, 0]) for r in results] == [2.0 * i for i in range(10)]
    assert max(model.sizes) == 4 and sum(model.sizes) == 10 and len(model.sizes) < 10
    assert seen == model.sizes or sum(seen) == 10


def test_one_batch_per_shape():
    model = FakeModel()
    batcher = Batcher(model, max_batch=8, max_delay_ms=50)

    async def main():
        return await asyncio.gather(batcher([item(1), item(2, (1, 8, 8))]), batcher([item(3)]))

    (a, b), (c,) = asyncio.run(main())
    assert a.shape == (1, 4, 4) and b.shape == (1, 8, 8) and c[0, 0, 0] == 6
    assert sorted(model.sizes) == [1, 2]


def test_an_engine_failure_reaches_its_batch_only():
    model = FakeModel()
    batcher = Batcher(model, max_batch=1, max_delay_ms=0)

    async def main():
        return await asyncio.gather(batcher([item(np.nan)]), batcher([item(1)]), return_exceptions=True)

    bad, good = asyncio.run(main())
    assert isinstance(bad, RuntimeError) and good[0][0, 0, 0] == 2


def test_admission_is_bounded():
    batcher = Batcher(FakeModel(), max_queue=3)
    with batcher.admit(2):
        with pytest.raises(QueueFull, match="--max-queue 3"):
            with batcher.admit(2):
                pass
        with batcher.admit(1):
            assert batcher.depth == 3
    assert batcher.depth == 0


def test_a_lone_request_does_not_wait_for_partners_that_are_not_coming():
    import time

    model = FakeModel(delay=0.0)
    batcher = Batcher(model, max_batch=8, max_delay_ms=2000)

    async def main():
        with batcher.admit(1):
            t0 = time.monotonic()
            await batcher([item(1)])
            return time.monotonic() - t0

    assert asyncio.run(main()) < 1.0  # not the 2 s max_delay: nothing else was on its way


def test_a_batch_waits_for_items_still_being_decoded():
    model = FakeModel(delay=0.0)
    batcher = Batcher(model, max_batch=8, max_delay_ms=2000)

    async def request(value, decode_s):
        with batcher.admit(1):
            await asyncio.sleep(decode_s)  # decoding
            return await batcher([item(value)])

    async def main():
        return await asyncio.gather(request(1, 0.0), request(2, 0.05), request(3, 0.1))

    asyncio.run(main())
    assert model.sizes == [3]  # the first waited for the two on their way
