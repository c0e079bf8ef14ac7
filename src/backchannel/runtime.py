"""Process-wide tuning of the interpreter for a long-running server (``serve``).

Garbage collection: the cyclic collector pauses the whole process, and a full (generation 2)
collection walks every tracked object: after start-up that is the whole of FastAPI,
pydantic's schemas, phonenumbers' metadata and the app, hundreds of thousands of objects
that live as long as the process. Measured by ``./dev bench ingest`` at 1000 req/s: 8 full
collections a minute of up to 250 ms each, which every request in flight waited for.
``gc.freeze()`` after start-up moves those objects to a permanent generation that no
collection walks again, so later collections only look at what requests created; the
first threshold is raised so the short-lived garbage of a request is looked at in fewer,
still short, passes.
"""

from __future__ import annotations

import gc

#: generation-0 allocations between collections (CPython's default is 700)
GEN0_THRESHOLD = 10_000


def freeze_startup_objects() -> None:
    """Collect once, then exempt every object alive now from later collections."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)
