"""A DataLoader worker's heap kept mapped between tracks and batches (glibc malloc settings).

A worker making asd-tracks batches allocates and frees the same large arrays over and over — a
track's crops (~1.5 MB for 120 frames), its augmented copy, Pillow's resampling passes, the MFCC's
spectrum (~2 MB), a batch's buffers. glibc serves an allocation above its mmap threshold (128 KB
at first, adjusted as blocks are freed) with a fresh mmap and returns it to the kernel when freed,
and trims the top of its heap past 128 KB free: so the next track's arrays fault their pages in
again. Measured on the 1080p ``--derive crops`` benchmark epoch in one worker: ~100k page faults
and 0.27 s of system time, 55k and 0.15 s with the settings below (the rest are mostly the batches'
shared memory, fresh for each batch by design: the consumer holds it).

:func:`keep_heap` raises the mmap threshold to glibc's maximum (32 MB: the per-track arrays come
from the heap and are reused) and lets 256 MB of freed heap stay mapped. It runs in the worker
processes only (``worker_init_fn``), which end with their epoch; the training process is left as
it is. Elsewhere than glibc it does nothing. The cost: a worker may keep up to ~270 MB of freed heap
mapped (the trim threshold and top pad) instead of handing it back — bounded by what it really
allocated at its peak, but counted per worker: in the worst case 8 ranks × 8 workers hold ~17 GB more
than without it (in practice what a worker's largest batch needed).
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # glibc's mallopt parameters (malloc.h)
MMAP_THRESHOLD = 32 << 20  # glibc's upper bound for it on 64-bit
TRIM_THRESHOLD = 256 << 20
TOP_PAD = 16 << 20


def keep_heap(worker_id: int | None = None) -> bool:
    """Tune this process's glibc malloc as the module says; False where there is no glibc ``mallopt``.
    (``worker_id``: what a DataLoader passes to its ``worker_init_fn``.)"""
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    return all(mallopt(param, value) == 1 for param, value in
               ((M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_TOP_PAD, TOP_PAD)))
