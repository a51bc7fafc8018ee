"""One model load at a time in this process.

diffusers, transformers and peft build models under accelerate's
`init_empty_weights`, which swaps `torch.nn.Module.register_parameter` for the whole
process (not the thread) while a model is built, and puts the old method back
afterwards. Two loads on two threads at once (two local workers, or a worker loading
a checkpoint while another loads a ControlNet) can interleave so that the swapped
method is "restored" last: from then on every model built in the process gets its
weights on the meta device ("Cannot copy out of meta tensor"). So every load in the
server holds this lock; the denoising itself still runs in parallel.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import ParamSpec, TypeVar

#: Held while a model, adapter, embedding or VAE is built or loaded (re-entrant: a
#: load may load its parts).
LOAD_LOCK = threading.RLock()

P = ParamSpec("P")
R = TypeVar("R")


def one_load_at_a_time(load: Callable[P, R]) -> Callable[P, R]:
    """Run `load` while holding `LOAD_LOCK`."""

    @functools.wraps(load)
    def locked(*args: P.args, **kwargs: P.kwargs) -> R:
        with LOAD_LOCK:
            return load(*args, **kwargs)

    return locked
