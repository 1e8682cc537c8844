"""`MicroBatcher`: concurrent requests grouped into batches, inference off the event loop.

Each request `await`s :meth:`MicroBatcher.submit` with one image. One background task takes the
first waiting image, then keeps collecting for at most ``max_wait_ms`` or until ``max_batch``
images wait, groups them by shape (only same-size images stack into one tensor) and hands each
group to ``run`` in a single worker thread, so the event loop keeps accepting requests while the
model computes and the model never runs twice at once. Under load the queue fills while a batch
runs, so the next batch is full at once: throughput grows with load, and a lone request waits
at most ``max_wait_ms`` extra. ``max_batch=1`` turns batching off.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

import torch

from pixelwise.errors import ConfigError

Output = TypeVar("Output")
RunBatch = Callable[[Sequence[torch.Tensor]], Sequence[Output]]


@dataclass
class _Job:
    image: torch.Tensor
    future: asyncio.Future


class MicroBatcher(Generic[Output]):
    """Batches :meth:`submit` calls for ``run(images) -> outputs`` (see the module docs).

    Args:
        run: maps a list of same-shape images to one output each, in order.
        max_batch: most images per call of ``run``.
        max_wait_ms: longest wait for more images after the first one arrives.
        on_batch: called with the size of every batch run (metrics).
    """

    def __init__(self, run: RunBatch, max_batch: int = 8, max_wait_ms: float = 5.0,
                 on_batch: Callable[[int], None] | None = None) -> None:
        if max_batch < 1 or max_wait_ms < 0:
            raise ConfigError(f"max_batch must be >= 1 and max_wait_ms >= 0, got {max_batch} and "
                              f"{max_wait_ms}; try max_batch=8, max_wait_ms=5")
        self.run, self.max_batch, self.max_wait = run, max_batch, max_wait_ms / 1000
        self.on_batch = on_batch
        self._queue: asyncio.Queue[_Job] | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        """Start the collecting task on the running event loop (the app's lifespan does it)."""
        self._queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="pixelwise-inference")
        self._task = asyncio.create_task(self._serve_forever())

    async def stop(self) -> None:
        """Stop collecting and let the worker thread finish its batch."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        self._task = self._executor = None

    async def submit(self, image: torch.Tensor) -> Output:
        """The output of ``run`` for ``image``, computed in some batch."""
        if self._queue is None:
            raise RuntimeError("MicroBatcher.submit needs start() first; try the app's lifespan "
                               "(TestClient used as a context manager)")
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Job(image, future))
        return await future

    async def _serve_forever(self) -> None:
        while True:
            jobs = await self._collect()
            for group in _same_shape_groups(jobs):
                await self._run_group(group)

    async def _collect(self) -> list[_Job]:
        """The first waiting job, and those arriving within ``max_wait`` (up to max_batch)."""
        loop = asyncio.get_running_loop()
        jobs = [await self._queue.get()]
        deadline = loop.time() + self.max_wait
        while len(jobs) < self.max_batch:
            if not self._queue.empty():
                jobs.append(self._queue.get_nowait())
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                jobs.append(await asyncio.wait_for(self._queue.get(), remaining))
            except asyncio.TimeoutError:
                break
        return jobs

    async def _run_group(self, jobs: list[_Job]) -> None:
        jobs = [job for job in jobs if not job.future.done()]  # a client may have gone away
        if not jobs:
            return
        loop = asyncio.get_running_loop()
        try:
            outputs = await loop.run_in_executor(self._executor, self.run,
                                                 [job.image for job in jobs])
        except Exception as error:  # the requests fail, the batcher carries on
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(error)
            return
        if self.on_batch is not None:
            self.on_batch(len(jobs))
        for job, output in zip(jobs, outputs, strict=True):
            if not job.future.done():
                job.future.set_result(output)


def _same_shape_groups(jobs: list[_Job]) -> list[list[_Job]]:
    """Jobs grouped by image shape, in order of first arrival."""
    groups: dict[tuple[int, ...], list[_Job]] = {}
    for job in jobs:
        groups.setdefault(tuple(job.image.shape), []).append(job)
    return list(groups.values())
