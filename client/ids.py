"""Random ids without a system call each.

`os.urandom` is one `getrandom` call per id; on a loaded machine that call costs several
microseconds, and an event-store append on the mock network wants three ids (the request's,
the log intent's, the event's). `random_bytes` hands out slices of one larger `os.urandom`
read instead: the same randomness, one call per few hundred ids. The buffer is dropped in a
forked child (which must not repeat its parent's ids) and taken under a lock (threads must
not share a slice). Whoever replaces `os.urandom` (the simulator does, to replay a seed) gets
every id straight from the replacement, in the same calls as before this module existed.
"""

from __future__ import annotations

import os
import threading
import uuid

_POOL_BYTES = 4096
_system_urandom = os.urandom


class _Pool:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buffer = b""
        self._at = 0

    def take(self, n: int) -> bytes:
        if n > _POOL_BYTES or os.urandom is not _system_urandom:
            return os.urandom(n)
        with self._lock:
            at = self._at
            if at + n > len(self._buffer):
                self._buffer, at = os.urandom(_POOL_BYTES), 0
            self._at = at + n
            return self._buffer[at:at + n]

    def forget(self) -> None:
        self._lock = threading.Lock()  # a lock held by another thread at fork stays held
        self._buffer, self._at = b"", 0


_pool = _Pool()
os.register_at_fork(after_in_child=_pool.forget)


def random_bytes(n: int) -> bytes:
    """`n` bytes from the operating system's generator, as `os.urandom(n)` gives them."""
    return _pool.take(n)


def uuid4() -> uuid.UUID:
    """A random UUID, as `uuid.uuid4()` makes it."""
    return uuid.UUID(bytes=_pool.take(16), version=4)
