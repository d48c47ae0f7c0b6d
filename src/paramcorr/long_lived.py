"""Long-lived objects kept out of the garbage collector's full scans.

A full (generation 2) collection scans every tracked object in the process: the modules and
caches of torch, timm, Lightning, pandas, scipy and matplotlib are hundreds of thousands of
them, and each full scan costs a few tenths of a second while it frees nothing of theirs.
``gc.freeze()`` moves every object that exists now into a permanent generation that
collections skip; ``gc.unfreeze()`` hands them back.

Frozen objects must be handed back before the interpreter exits: extension modules that
check for leaks at shutdown (triton's nanobind bindings, which torch._dynamo loads through
torchvision) otherwise report everything still frozen as leaked, about 30 lines on stderr
after the one-line error a user should see.
"""

from __future__ import annotations

import atexit
import gc
from collections.abc import Iterator
from contextlib import contextmanager

_frozen_until_exit = False


def freeze_until_exit() -> None:
    """Collect once, then freeze what survived for the rest of the process (set once).

    For a sweep's process after its first job: what survived that job's collection is
    long-lived (modules, caches), and later collections then scan only what later jobs
    create. Handed back at exit (see the module's docstring).
    """
    global _frozen_until_exit
    if not _frozen_until_exit:
        gc.collect()
        gc.freeze()
        atexit.register(gc.unfreeze)
        _frozen_until_exit = True


@contextmanager
def frozen_during() -> Iterator[None]:
    """Keep the objects that exist on entry out of the collections run inside the block.

    Nothing is collected on entry (that would be one more full scan); garbage that exists
    on entry is freed at the first full collection after the block. On exit the objects are
    handed back, unless the process had frozen objects already: then their owner (e.g.
    :func:`freeze_until_exit`) hands back everything at once.
    """
    owner = gc.get_freeze_count() == 0
    gc.freeze()
    try:
        yield
    finally:
        if owner:
            gc.unfreeze()
