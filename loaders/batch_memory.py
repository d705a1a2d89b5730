"""Where a batch's faces are written: memory that costs no page faults, or no extra copy.

A float32 batch of 2,500 faces is 125 MB. Written into fresh memory it costs more than the writing:
every 4 KB page faults in, and numpy asks for transparent huge pages on large arrays, which on a
machine whose memory is fragmented makes the kernel compact memory on the fault — measured here, on
the shared 2-core VM (THP ``defrag=madvise``): 6 ms to convert 2,500 uint8 faces into a float32
buffer already mapped, 16-38 ms into fresh memory, and 170-340 ms when the compaction stalls, which
in an epoch of five batches happened every epoch. So:

* in the process that consumes the batches, the faces go into a :class:`BufferPool`: a few buffers
  reused once nothing made from them is alive (the training loop let go of that batch), so their
  pages stay mapped; a loop that keeps its batches simply gets fresh buffers. A fresh buffer is
  torch's (plain 4 KB pages: a steady ~38 ms for 125 MB), not numpy's (huge pages: 16 ms, or a stall);
* in a DataLoader worker, the uint8 faces are written straight into shared memory
  (:func:`shared_tensor`), as torch's default collate does: the batch then crosses to the consumer
  without being copied into shared memory first.
"""

from __future__ import annotations

import math
import weakref

import numpy as np
import torch


class BufferPool:
    """Up to ``keep`` buffers per dtype, each handed out again once the tensor made from it is gone.

    A tensor from :meth:`tensor` is an ordinary tensor of exactly its shape (its storage is its own
    bytes, not the whole buffer); the pool holds only a weak reference to what it handed out.
    """

    def __init__(self, keep: int = 2):
        self.keep = int(keep)
        self._buffers: dict[torch.dtype, list[list]] = {}  # dtype -> [flat buffer, weakref to the array handed out]
        self.reused = self.made = 0

    def __getstate__(self) -> dict:  # a copy (pickled, deep-copied) starts with no buffers: they are this process's
        return {"keep": self.keep}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["keep"])

    def tensor(self, shape: tuple, dtype: torch.dtype) -> torch.Tensor:
        """An uninitialised ``shape`` tensor of ``dtype`` (float32 or uint8), in a buffer already mapped if one is free."""
        n = math.prod(shape)
        entries = self._buffers.setdefault(dtype, [])
        for entry in entries:
            if entry[1] is None or entry[1]() is None:  # nothing made from this buffer is alive
                if entry[0].size < n:
                    entry[0] = _fresh(n, dtype)
                    self.made += 1
                else:
                    self.reused += 1
                view = entry[0][:n].reshape(shape)
                entry[1] = weakref.ref(view)
                return torch.from_numpy(view)
        flat = _fresh(n, dtype)
        self.made += 1
        view = flat.reshape(shape)
        if len(entries) < self.keep:
            entries.append([flat, weakref.ref(view)])
        return torch.from_numpy(view)


def _fresh(n: int, dtype: torch.dtype) -> np.ndarray:
    """``n`` elements of new memory, as numpy sees it, allocated by torch (no huge-page request: see the module)."""
    return torch.empty(n, dtype=dtype).numpy()


def shared_tensor(shape: tuple, dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised ``shape`` tensor in shared memory (what a DataLoader worker's batch is moved into anyway)."""
    storage = torch.UntypedStorage._new_shared(math.prod(shape) * torch.empty(0, dtype=dtype).element_size())
    return torch.empty(0, dtype=dtype).set_(storage, 0, shape)
