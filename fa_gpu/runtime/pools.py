"""Process-wide host pools: a compute and an I/O thread pool, and one asyncio event loop.

All three are created on first use and shared by every engine and run in the process:

- ``compute_pool(threads=None)``: ``pool_sizes().compute_threads`` workers (usable physical
  cores), for CPU-bound host work that releases the GIL (the numba backend's kernel ranges); an
  engine asking for another thread count gets a pool of that size, also shared;
- ``io_pool()``: ``pool_sizes().io_threads`` workers, for blocking I/O (user ``host_fn`` calls);
- ``event_loop()`` / ``run_coroutine(coro)``: ONE long-lived asyncio loop on a daemon thread.
  Coroutines from any thread are scheduled on it with ``asyncio.run_coroutine_threadsafe``;
  creating a loop per step would cost more than most steps and break clients (HTTP sessions,
  connections) bound to one loop.

``shutdown()`` stops all three (it runs at exit); a later call to any getter creates fresh ones.
"""
from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import os
import threading

from .topology import pool_sizes

__all__ = ["compute_pool", "io_pool", "event_loop", "run_coroutine", "shutdown"]

_lock = threading.Lock()
_compute: dict[int, concurrent.futures.ThreadPoolExecutor] = {}
_io: concurrent.futures.ThreadPoolExecutor | None = None
_loop: asyncio.AbstractEventLoop | None = None
_loop_thread: threading.Thread | None = None


def compute_pool(threads: int | None = None) -> concurrent.futures.ThreadPoolExecutor:
    """The shared compute pool with ``threads`` workers (default ``pool_sizes().compute_threads``)."""
    size = pool_sizes().compute_threads if threads is None else int(threads)
    with _lock:
        pool = _compute.get(size)
        if pool is None:
            pool = _compute[size] = concurrent.futures.ThreadPoolExecutor(
                size, thread_name_prefix="fa_gpu-compute")
        return pool


def io_pool() -> concurrent.futures.ThreadPoolExecutor:
    """The shared I/O pool (``pool_sizes().io_threads`` threads)."""
    global _io
    with _lock:
        if _io is None:
            _io = concurrent.futures.ThreadPoolExecutor(pool_sizes().io_threads,
                                                        thread_name_prefix="fa_gpu-io")
        return _io


def _serve(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        # Cancel what is still scheduled so no coroutine is destroyed while pending.
        tasks = asyncio.all_tasks(loop)
        for task in tasks:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()


def event_loop() -> asyncio.AbstractEventLoop:
    """The shared asyncio loop, running on the daemon thread ``fa_gpu-asyncio``."""
    global _loop, _loop_thread
    with _lock:
        if _loop is None:
            _loop = asyncio.new_event_loop()
            # Daemon: a coroutine blocked forever must not keep the interpreter alive at exit.
            _loop_thread = threading.Thread(target=_serve, args=(_loop,), name="fa_gpu-asyncio",
                                            daemon=True)
            _loop_thread.start()
        return _loop


def run_coroutine(coro) -> concurrent.futures.Future:
    """Schedule ``coro`` on the shared loop from any thread (not from the loop's own thread,
    which would deadlock on ``.result()``); returns a ``concurrent.futures.Future``."""
    return asyncio.run_coroutine_threadsafe(coro, event_loop())


def shutdown(wait: bool = True) -> None:
    """Stop the pools and the loop (idempotent). ``wait``: finish queued work first; the loop
    cancels coroutines still pending."""
    global _compute, _io, _loop, _loop_thread
    with _lock:
        pools, (loop, thread) = (*_compute.values(), _io), (_loop, _loop_thread)
        _compute, _io, _loop, _loop_thread = {}, None, None, None
    for pool in pools:
        if pool is not None:
            pool.shutdown(wait=wait, cancel_futures=not wait)
    if loop is not None:
        loop.call_soon_threadsafe(loop.stop)
        if wait:
            thread.join()


def _forget_after_fork() -> None:
    # A forked child has none of the parent's threads: drop the dead objects, create anew on use.
    global _lock, _compute, _io, _loop, _loop_thread
    _lock = threading.Lock()
    _compute, _io, _loop, _loop_thread = {}, None, None, None


atexit.register(shutdown)
os.register_at_fork(after_in_child=_forget_after_fork)
