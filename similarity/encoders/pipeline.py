"""The encode pipeline of one indexing batch: decode, text and image forward passes overlapped.

``index_products`` hands a batch's texts and image bytes to :func:`encode_batch`, which runs

- JPEG (and other) decoding + preprocessing in a small thread pool (Pillow releases the GIL);
- the image forward passes on one long-lived model thread, a micro-batch at a time, each as soon
  as its images are decoded (so decoding overlaps the forward pass);
- the text forward pass (tokenisation included) on another model thread, at the same time.

On a CPU each model thread gets its own share of the cores for torch's intra-op threads
(:func:`model_threads`): two models side by side on one thread each keep two cores busy without
the barrier waits of one model spread over both. That is the lever that measured largest on the
shared 2-core machine (docs/benchmarks.md, "Indexing throughput"). On a GPU the threads only
overlap the host work; torch's thread settings are left alone.

Torch releases the GIL inside its ops, so plain threads are enough; no worker processes (they
would compete with the models for the same cores and need the models loaded twice).
"""

from __future__ import annotations

import contextvars
import functools
import io
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..exceptions import EncodingError
from .image_decoding import open_image

#: the pipeline can be switched off (everything then runs in the calling thread, one step after
#: the other, with torch's default threads): the benchmark's "plain" baseline and its ablation
CONCURRENT = True
#: decode threads; decoding is 10-20x faster than the image model, so a few are plenty
DECODE_WORKERS = 2


@dataclass
class BatchVectors:
    """What :func:`encode_batch` returns: one text row per text; image rows with their owners."""

    text: np.ndarray | None
    #: (owner, vector) per decoded image, in the order of the jobs
    images: list[tuple[int, np.ndarray]] = field(default_factory=list)
    #: (owner, error sentence) per image that could not be decoded
    errors: list[tuple[int, str]] = field(default_factory=list)


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def model_threads(cores: int | None = None) -> tuple[int, int]:
    """Intra-op threads for the (text, image) model threads on a CPU: the cores split in two,
    at least one each. A label-free rule: it depends only on the cores this process may use."""
    cores = usable_cores() if cores is None else cores
    text = max(1, cores // 2)
    return text, max(1, cores - text)


class _Executors:
    """Two single-thread model executors (torch's per-thread settings stick to long-lived
    threads) and a decode pool, made lazily per process: threads do not survive a fork."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid = -1
        self._cpu = False
        self.text: ThreadPoolExecutor | None = None
        self.image: ThreadPoolExecutor | None = None
        self.decode: ThreadPoolExecutor | None = None

    def get(self, cpu: bool) -> tuple[ThreadPoolExecutor, ThreadPoolExecutor, ThreadPoolExecutor]:
        with self._lock:
            if self._pid != os.getpid() or self._cpu != cpu or self.text is None:
                self._close()
                self._start(cpu)
            assert self.text is not None and self.image is not None and self.decode is not None
            return self.text, self.image, self.decode

    def _start(self, cpu: bool) -> None:
        text_threads, image_threads = model_threads()
        default = _torch_threads() if cpu else 0
        self.text = ThreadPoolExecutor(1, "similarity-text", _thread_setup(cpu, text_threads))
        self.image = ThreadPoolExecutor(1, "similarity-image", _thread_setup(cpu, image_threads))
        # Decoding runs the preprocessing's small tensor ops: one thread each, no OpenMP team.
        self.decode = ThreadPoolExecutor(DECODE_WORKERS, "similarity-decode", _thread_setup(cpu, 1))
        if cpu:
            # Start every thread now, so that their initializers have run before the reset below.
            for pool, size in ((self.text, 1), (self.image, 1), (self.decode, DECODE_WORKERS)):
                barrier = threading.Barrier(size)
                for started in [pool.submit(barrier.wait, 60) for _ in range(size)]:
                    started.result()
            # torch.set_num_threads also sets the default of threads started later: put the
            # process's own back (the calling thread keeps it; OpenMP's count is per thread).
            _torch_threads(default)
        self._pid, self._cpu = os.getpid(), cpu

    def _close(self) -> None:
        if self._pid == os.getpid():  # a forked child's copies have no threads to join
            for pool in (self.text, self.image, self.decode):
                if pool is not None:
                    pool.shutdown(wait=False)
        self.text = self.image = self.decode = None


_executors = _Executors()


def _torch_threads(value: int = 0) -> int:
    """torch's intra-op threads of the calling thread; with ``value``, set them first."""
    import torch

    if value:
        torch.set_num_threads(value)
    return int(torch.get_num_threads())


def _thread_setup(cpu: bool, threads: int) -> Callable[[], None]:
    def setup() -> None:
        if cpu:
            _torch_threads(threads)  # OpenMP's thread count is per thread: this one's

    return setup


def _submit(pool: ThreadPoolExecutor, fn: Callable[..., Any], *args: Any) -> Future[Any]:
    """Run in ``pool`` with the caller's context variables (a pinned adapter, for one)."""
    return pool.submit(contextvars.copy_context().run, fn, *args)


def encode_batch(
    text_encoder: Any, texts: Sequence[str], image_encoder: Any,
    images: Sequence[tuple[int, str, bytes]], *, max_pixels: int,
) -> BatchVectors:
    """Encode ``texts`` and ``images`` ((owner, name, bytes) triples) of one batch.

    A broken image becomes an error for its owner, never an exception; encoder failures
    propagate. With :data:`CONCURRENT` off, the same steps run one after the other here.
    """
    return submit_batch(text_encoder, texts, image_encoder, images, max_pixels=max_pixels)()


@dataclass
class SubmittedBatch:
    """A batch handed to the encode threads: call it to wait for its vectors (or the encoder's
    error); :meth:`cancel` drops the work that has not started (a rebuild that failed)."""

    wait: Callable[[], BatchVectors]
    futures: list[Future[Any]] = field(default_factory=list)

    def __call__(self) -> BatchVectors:
        return self.wait()

    def cancel(self) -> None:
        for future in self.futures:  # the model passes first, then the decodes they wait for
            future.cancel()


def submit_batch(
    text_encoder: Any, texts: Sequence[str], image_encoder: Any,
    images: Sequence[tuple[int, str, bytes]], *, max_pixels: int,
) -> SubmittedBatch:
    """:func:`encode_batch` started: returns at once (the work queued on the model and decode
    threads, behind any batch submitted before) with a handle that waits for the vectors and
    returns them (or raises the encoder's error). A rebuild submits the next batch before it
    writes the previous one, so the models never wait for the writes. With :data:`CONCURRENT`
    off, the batch is encoded here, before this returns."""

    def decode(job: tuple[int, str, bytes]) -> tuple[int, Any, str]:
        owner, name, data = job
        try:
            image = open_image(io.BytesIO(data), name=name, max_pixels=max_pixels)
            return owner, image_encoder.preprocess(image), ""
        except EncodingError as exc:
            return owner, None, str(exc)

    def encode_images(decoded: Sequence[Callable[[], tuple[int, Any, str]]]) -> BatchVectors:
        out = BatchVectors(text=None)
        step = max(1, int(image_encoder.micro_batch)) if decoded else 1
        chunk: list[tuple[int, Any]] = []

        def flush() -> None:
            if chunk:
                matrix = image_encoder.encode_tensors([tensor for _owner, tensor in chunk])
                out.images.extend((owner, row) for (owner, _t), row in zip(chunk, matrix, strict=True))
                chunk.clear()

        for result in decoded:  # in job order: a micro-batch runs as soon as its images are ready
            owner, tensor, error = result()
            if error:
                out.errors.append((owner, error))
                continue
            chunk.append((owner, tensor))
            if len(chunk) >= step:
                flush()
        flush()
        return out

    def encode_texts() -> np.ndarray | None:
        return text_encoder.encode(list(texts)) if texts else None

    if not CONCURRENT:
        text_matrix = encode_texts()
        done = encode_images([functools.partial(decode, job) for job in images]) if images else BatchVectors(None)
        done.text = text_matrix
        return SubmittedBatch(lambda: done)

    cpu = not str(image_encoder.device_name if images else text_encoder.device_name).startswith("cuda")
    text_pool, image_pool, decode_pool = _executors.get(cpu)
    text_future = _submit(text_pool, encode_texts) if texts else None
    decoding = [_submit(decode_pool, decode, job) for job in images]
    image_future = _submit(image_pool, encode_images, [future.result for future in decoding])

    def result() -> BatchVectors:
        vectors: BatchVectors = image_future.result()
        vectors.text = text_future.result() if text_future is not None else None
        return vectors

    return SubmittedBatch(result, [image_future, *([text_future] if text_future else []), *decoding])
