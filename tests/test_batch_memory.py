"""Where batches are written: reused buffers never reused while in use, shared memory, a kept heap.

Speed is the benchmarks' business (scripts/bench_vs_talknet.py); here the behaviour each of these
promises: a pooled buffer is handed out again only once nothing made from it is alive, and a tensor
from it is an ordinary tensor of exactly its shape; a worker's faces are in shared memory; the
worker heap settings do stop freed arrays from being faulted in again (page faults counted, not
timed).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from loaders.batch_memory import BufferPool, shared_tensor

ROOT = Path(__file__).resolve().parents[1]


def test_a_pooled_buffer_is_reused_only_once_released():
    pool = BufferPool(keep=2)
    a = pool.tensor((3, 4, 5), torch.float32)
    a.fill_(1)
    b = pool.tensor((3, 4, 5), torch.float32)  # a is alive: another buffer
    assert a.data_ptr() != b.data_ptr()
    b.fill_(2)
    held = pool.tensor((2, 2), torch.float32)  # both pooled buffers alive: a fresh one, not kept
    assert {held.data_ptr()}.isdisjoint({a.data_ptr(), b.data_ptr()})
    assert a.eq(1).all() and b.eq(2).all()  # nothing handed out twice wrote over them
    ptr = a.data_ptr()
    view = a.numpy()[1:]  # something made from a keeps its buffer in use
    del a
    c = pool.tensor((3, 4, 5), torch.float32)
    assert c.data_ptr() != ptr
    del view
    d = pool.tensor((2, 3, 5), torch.float32)  # smaller: a's buffer again
    assert d.data_ptr() == ptr and (pool.reused, pool.made) == (1, 4)


def test_a_pooled_tensor_is_exactly_its_shape_and_grows_when_needed():
    pool = BufferPool(keep=1)
    small = pool.tensor((2, 3), torch.uint8)
    assert small.untyped_storage().nbytes() == 6 and small.is_contiguous() and small.dtype == torch.uint8
    ptr = small.data_ptr()
    del small
    big = pool.tensor((10, 10), torch.uint8)  # the free buffer is too small: replaced by a larger one
    assert big.untyped_storage().nbytes() == 100 and big.shape == (10, 10)
    big.fill_(7)
    del big
    again = pool.tensor((5, 5), torch.uint8)
    assert again.untyped_storage().nbytes() == 25 and pool.made == 2 and again.data_ptr() != ptr


def test_a_copied_pool_starts_empty():
    import copy
    import pickle

    pool = BufferPool(keep=3)
    held = pool.tensor((4,), torch.float32)
    for other in (copy.deepcopy(pool), pickle.loads(pickle.dumps(pool))):
        assert other.keep == 3 and other.tensor((4,), torch.float32).data_ptr() != held.data_ptr()


def test_shared_tensor_is_in_shared_memory():
    t = shared_tensor((4, 112, 112), torch.uint8)
    assert t.is_shared() and t.shape == (4, 112, 112) and t.dtype == torch.uint8 and t.is_contiguous()
    t.numpy()[:] = 9
    assert int(t.sum()) == 9 * 4 * 112 * 112


# a track's arrays vary in size (each here a little larger than the last), under numpy's 4 MB huge-page request
SIZES = [(1 << 20) + i * (150 << 10) for i in range(20)]


FAULTS_CHILD = r"""
import resource, sys
import numpy as np
from loaders.worker_memory import keep_heap
sizes = [int(s) for s in sys.argv[2:]]
if sys.argv[1] == "tune":
    assert keep_heap()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for size in sizes:
    a = np.ones(size, np.uint8)
    del a
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults_in_child(tune: bool) -> int:
    """Page faults of allocate-touch-free rounds of arrays of :data:`SIZES`, in a fresh interpreter (not a
    fork of this one: glibc's mmap threshold moves as blocks are freed, so a forked child would inherit
    whatever the tests before this one left)."""
    out = subprocess.run([sys.executable, "-c", FAULTS_CHILD, "tune" if tune else "plain", *map(str, SIZES)],
                         capture_output=True, text=True, check=True, cwd=ROOT, timeout=120)
    return int(out.stdout.strip().splitlines()[-1])


def has_mallopt() -> bool:
    import ctypes
    import ctypes.util

    try:
        return hasattr(ctypes.CDLL(ctypes.util.find_library("c")), "mallopt")
    except OSError:
        return False


@pytest.mark.skipif(not has_mallopt(), reason="glibc malloc settings")
def test_a_kept_heap_does_not_fault_freed_arrays_in_again():
    plain, kept = faults_in_child(False), faults_in_child(True)  # (each in a child: this process is left as it is)
    assert plain > sum(SIZES) // 4096 // 2  # glibc maps each anew (above its threshold) and unmaps it when freed
    assert kept < plain // 5  # kept: the heap grows by what the next array adds
