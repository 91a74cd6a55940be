"""Writing to a campaign's store (fsspec: a local directory by default, ``s3://`` and the like on a cluster), for both
layers that write there: the campaign's records (``pipelines/store.py``) and the renderer that stores its own images
(``serving/images.py``). It lives in serving/ because imports point agents <- serving <- pipelines.

- **One whole-or-absent writer**, :func:`serving.files.write_atomic` (and ``open_atomic`` for a stream), which lives
  with the project's other "write beside, then rename" rule: on a local disk a temporary file renamed over the target
  (a crash leaves the old file or none, and a failed write leaves no temporary behind); on an object store one PUT,
  which is whole by itself.
- **One judgement of a failure**, :func:`guarded`: one try of a store operation, its failure turned into
  :class:`StoreUnavailable` when another try may succeed (a 5xx, a refused or reset connection, a timeout) or
  :class:`StoreWriteError` when it cannot (permission denied, a full or read-only disk, bad input); both name the path.
  ``FileNotFoundError`` passes unchanged: reading what is not there is an answer, not a failure.
- **One retry policy**, the project's (``serving/retry.py``): :func:`call_store_async` retries only
  :class:`StoreUnavailable`, awaiting each backoff on the event loop (the try itself runs in a worker thread, which
  never sleeps), and turns the last one into :class:`StoreWriteError`; :func:`call_store` is the same for blocking
  code (the renderer's encoder threads). A :class:`StoreWriteError` is final: nothing retries it again, and an
  operation made of several tries is retried as a whole, never around tries that retry themselves.
"""

from __future__ import annotations

import errno
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fsspec.implementations.local import LocalFileSystem

from serving.retry import RetryPolicy, call_async, call_sync

T = TypeVar("T")

STORE_RETRY = RetryPolicy(attempts=8, backoff_s=0.5, max_backoff_s=20.0)
"""The campaign's store operations: 0.5 s doubling to 20 s, 8 tries, ~75 s of waiting in all, so an object store that
restarts or throttles for a minute costs no intent."""

PERMANENT_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.ENAMETOOLONG})
"""OS errors another try cannot fix."""

NOT_TRANSIENT = (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError, NotADirectoryError, ValueError,
                 TypeError, LookupError, AttributeError, NotImplementedError, AssertionError)
"""Failures of the request or of the code, never of the store's availability."""


class StoreUnavailable(OSError):
    """One try of a store operation failed in a way another try may fix (the message names the path and why)."""


class StoreWriteError(OSError):
    """A store operation failed for good: permission, a full disk, or the store down past the retry policy. The message
    names the path and why; nothing half-written is left there. Final: never retried again (a later run resumes)."""


def is_transient_store_error(exc: BaseException) -> bool:
    """Worth another try: the store or the network failed, not the request. Permission, a full or read-only disk, a
    missing file or bucket, bad input and a failure already judged final (:class:`StoreWriteError`) are not."""
    if isinstance(exc, (StoreWriteError, *NOT_TRANSIENT)):
        return False
    if isinstance(exc, OSError) and exc.errno in PERMANENT_ERRNOS:
        return False
    return isinstance(exc, Exception)


def user_path(fs, path: str) -> str:
    """``path`` as a user names it: with its scheme (``s3://...``) on an object store, as it is on a local disk."""
    if isinstance(fs, LocalFileSystem):
        return path
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return f"{protocol}://{path}"


def guarded(verb: str, where: str, operation: Callable[[], T]) -> T:
    """One try of ``operation()``; a failure becomes :class:`StoreUnavailable` or :class:`StoreWriteError` saying
    ``cannot <verb> <where>: <error>``. FileNotFoundError and failures already judged pass unchanged."""
    try:
        return operation()
    except (FileNotFoundError, StoreUnavailable, StoreWriteError):
        raise
    except Exception as exc:
        kind = StoreUnavailable if is_transient_store_error(exc) else StoreWriteError
        raise kind(f"cannot {verb} {where}: {type(exc).__name__}: {exc}") from exc


def _is_unavailable(exc: BaseException) -> bool:
    return isinstance(exc, StoreUnavailable)


async def call_store_async(operation: Callable[[], Awaitable[T]], policy: RetryPolicy, *,
                           on_retry: Callable[[BaseException, int, float], None] | None = None,
                           sleep: Callable[[float], Awaitable[None]] | None = None, what: str = "store") -> T:
    """``await operation()`` (one guarded try, e.g. ``asyncio.to_thread(...)``), retried per ``policy`` while it raises
    :class:`StoreUnavailable`, each wait awaited (``sleep``, default ``asyncio.sleep``); the last
    :class:`StoreUnavailable` becomes :class:`StoreWriteError`. Any other error propagates at once."""
    kwargs: dict[str, Any] = {} if sleep is None else {"sleep": sleep}
    try:
        return await call_async(operation, policy, retry_if=_is_unavailable, on_retry=on_retry, what=what, **kwargs)
    except StoreUnavailable as exc:
        raise StoreWriteError(f"{exc} (gave up after {policy.attempts} tries)") from exc


def call_store(operation: Callable[[], T], policy: RetryPolicy, *,
               sleep: Callable[[float], None] | None = None, log_retries: bool = True) -> T:
    """``operation()`` (one guarded try), retried per ``policy`` while it raises :class:`StoreUnavailable`; the last
    :class:`StoreUnavailable` becomes :class:`StoreWriteError`. Any other error propagates at once."""
    kwargs: dict[str, Any] = {} if sleep is None else {"sleep": sleep}
    try:
        return call_sync(operation, policy, retry_if=_is_unavailable, log_retries=log_retries, what="store write",
                         **kwargs)
    except StoreUnavailable as exc:
        raise StoreWriteError(f"{exc} (gave up after {policy.attempts} tries)") from exc
