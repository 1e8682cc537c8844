"""Micro-batching: concurrent requests share model calls, and each gets its own answer."""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image
from serve_samples import png_bytes, sample_image

from pixelwise.serve.batching import MicroBatcher


def run_batches(batcher: MicroBatcher, images: list[torch.Tensor]) -> list:
    """Submit all images at once on a fresh event loop; the outputs in order."""
    async def main():
        await batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit(image) for image in images),
                                        return_exceptions=True)
        finally:
            await batcher.stop()

    return asyncio.run(main())


def recording(batches: list) -> Callable:
    """A run function that records each batch it gets and answers 0 per image."""
    def run(images):
        batches.append(list(images))
        return [0] * len(images)
    return run


def test_concurrent_images_run_as_one_batch_each_with_its_own_output():
    calls = []

    def total(images):
        calls.append(len(images))
        return [float(image.sum()) for image in images]

    images = [torch.full((1, 2, 2), float(i)) for i in range(6)]
    outputs = run_batches(MicroBatcher(total, max_batch=8, max_wait_ms=50), images)
    assert outputs == [4.0 * i for i in range(6)]
    assert calls == [6]


@pytest.mark.parametrize(("max_batch", "images", "sizes"), [(4, 10, [4, 4, 2]),
                                                           (1, 3, [1, 1, 1])])  # 1: no batching
def test_batches_hold_at_most_max_batch_images(max_batch, images, sizes):
    batches = []
    run_batches(MicroBatcher(recording(batches), max_batch=max_batch, max_wait_ms=50),
                [torch.zeros(1, 2, 2)] * images)
    assert [len(batch) for batch in batches] == sizes


def test_only_same_size_images_share_a_batch():
    batches = []
    images = [torch.zeros(1, 2, 2), torch.zeros(1, 3, 3), torch.zeros(1, 2, 2)]
    run_batches(MicroBatcher(recording(batches), max_batch=8, max_wait_ms=50), images)
    assert [[tuple(i.shape) for i in batch] for batch in batches] == [[(1, 2, 2), (1, 2, 2)],
                                                                     [(1, 3, 3)]]


def test_a_failing_batch_fails_its_requests_and_the_batcher_carries_on():
    def run(images):
        if images[0].sum() < 0:
            raise RuntimeError("boom")
        return [1] * len(images)

    async def main():
        batcher = MicroBatcher(run, max_batch=1, max_wait_ms=0)
        await batcher.start()
        first = await asyncio.gather(batcher.submit(-torch.ones(1)), return_exceptions=True)
        second = await batcher.submit(torch.ones(1))
        await batcher.stop()
        return first[0], second

    error, answer = asyncio.run(main())
    assert isinstance(error, RuntimeError) and answer == 1


def test_inference_runs_off_the_event_loop():
    loop_thread = []

    def run(images):
        loop_thread.append(threading.current_thread().name)
        return [0] * len(images)

    run_batches(MicroBatcher(run), [torch.zeros(1)])
    assert loop_thread[0].startswith("pixelwise-inference")


@pytest.fixture
def counted_forwards(segmenter):
    """How many times the segmenter's model has run (a forward hook), reset per test."""
    calls = []
    handle = segmenter.model.register_forward_hook(lambda module, args, out: calls.append(
        args[0].shape[0]))
    yield calls
    handle.remove()


def test_concurrent_http_requests_share_model_calls(segmenter, counted_forwards):
    from fastapi.testclient import TestClient

    from pixelwise.serve import ServeSettings, create_app

    images = [sample_image(seed=seed) for seed in range(6)]
    app = create_app(segmenter, ServeSettings(max_batch=6, max_wait_ms=1000))
    start = threading.Barrier(len(images))

    def post(image):
        start.wait()
        return client.post("/predict?format=png", content=png_bytes(image)).content

    with TestClient(app) as client, ThreadPoolExecutor(len(images)) as pool:
        answers = list(pool.map(post, images))
    assert len(counted_forwards) < len(images), counted_forwards
    assert sum(counted_forwards) == len(images)
    for image, answer in zip(images, answers, strict=True):
        proba = segmenter.predict_proba(image)
        top2 = np.sort(proba, 0)[-2:]
        clear = top2[1] - top2[0] > 1e-4  # batched and single runs may differ at float ties
        with Image.open(io.BytesIO(answer)) as png:
            np.testing.assert_array_equal(np.asarray(png)[clear], proba.argmax(0)[clear])
