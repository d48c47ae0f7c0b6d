"""The one exception type whose message is meant for the user, and how to recognise OOM."""

from __future__ import annotations

import torch


class UserError(Exception):
    """A problem with the user's input, stated in one line with what to do about it.

    Entry points print ``str(err)`` alone (no traceback); inside a sweep it becomes the
    ``error`` of a ``failed`` record.
    """


# What PyTorch's CPU and CUDA allocators say when an allocation fails. (A CPU allocation
# failure is a plain RuntimeError; a CUDA one is torch.OutOfMemoryError, older releases
# raised a RuntimeError with the same text.)
_OOM_TEXT = ("DefaultCPUAllocator: can't allocate memory", "CUDA out of memory",
             "out of memory")


def is_out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is a failed memory allocation, on the CPU or an accelerator."""
    if isinstance(err, torch.OutOfMemoryError | MemoryError):
        return True
    return isinstance(err, RuntimeError) and any(text in str(err) for text in _OOM_TEXT)
