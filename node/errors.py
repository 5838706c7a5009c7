"""Typed errors: SAFE's ClientError catalogue (docs/data-model.md §1.6) plus the network's own.

Every error a user can meet is a class they can catch, carrying the facts needed to act on
it (`InvalidSuccessor.current`, `InvalidEntryActions.errors`). Each one round-trips through
`to_wire` / `error_from_wire`, so a node's answer becomes the same exception in the client.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar


class SafeError(Exception):
    """Root of every error this project raises on purpose."""

    code: ClassVar[int] = -1

    def __init__(self, message: str = "") -> None:
        super().__init__(message or self.default_message())

    def default_message(self) -> str:
        return type(self).__name__

    def payload(self) -> dict[str, Any]:
        return {}

    def to_wire(self) -> dict[str, Any]:
        return {"code": self.code, "msg": str(self), **self.payload()}


# --------------------------------------------------------------------- entry errors (§1.3)


class EntryErrorKind(enum.IntEnum):
    NO_SUCH_ENTRY = 0
    ENTRY_EXISTS = 1
    INVALID_SUCCESSOR = 2


@dataclass(frozen=True, slots=True)
class EntryError:
    """Why one key of a MutateMDataEntries batch failed; `version` is the current entry version."""

    kind: EntryErrorKind
    version: int | None = None

    @classmethod
    def no_such_entry(cls) -> EntryError:
        return cls(EntryErrorKind.NO_SUCH_ENTRY)

    @classmethod
    def exists(cls, version: int) -> EntryError:
        return cls(EntryErrorKind.ENTRY_EXISTS, version)

    @classmethod
    def invalid_successor(cls, version: int) -> EntryError:
        return cls(EntryErrorKind.INVALID_SUCCESSOR, version)

    def __str__(self) -> str:
        names = {
            EntryErrorKind.NO_SUCH_ENTRY: "NoSuchEntry",
            EntryErrorKind.ENTRY_EXISTS: "EntryExists",
            EntryErrorKind.INVALID_SUCCESSOR: "InvalidSuccessor",
        }
        return names[self.kind] + ("" if self.version is None else f"({self.version})")


# ------------------------------------------------------------- the ClientError catalogue


class ClientError(SafeError):
    """An error the data rules return; the request changed nothing."""

    code = -199  # its own code, so that a bare ClientError is still one after the wire


class AccessDenied(ClientError):
    code = -100


class NoSuchAccount(ClientError):
    code = -101


class AccountExists(ClientError):
    code = -102


class NoSuchData(ClientError):
    code = -103


class DataExists(ClientError):
    code = -104


class DataTooLarge(ClientError):
    code = -105


class NoSuchEntry(ClientError):
    code = -106


class InvalidEntryActions(ClientError):
    """Per-key failures of an entry batch; nothing of the batch was applied."""

    code = -107

    def __init__(self, errors: dict[bytes, EntryError], message: str = "") -> None:
        self.errors = dict(errors)
        super().__init__(message)

    def default_message(self) -> str:
        shown = ", ".join(f"{k!r}: {e}" for k, e in list(sorted(self.errors.items()))[:5])
        more = "" if len(self.errors) <= 5 else f", ... ({len(self.errors)} keys)"
        return f"InvalidEntryActions({{{shown}{more}}})"

    def payload(self) -> dict[str, Any]:
        return {"errors": [[k, int(e.kind), e.version] for k, e in sorted(self.errors.items())]}


class TooManyEntries(ClientError):
    code = -108


class NoSuchKey(ClientError):
    code = -109


class InvalidOwners(ClientError):
    code = -110


class InvalidSuccessor(ClientError):
    """The supplied version was not exactly current + 1; `current` is the stored version."""

    code = -111

    def __init__(self, current: int, message: str = "") -> None:
        self.current = current
        super().__init__(message)

    def default_message(self) -> str:
        return f"InvalidSuccessor(current={self.current})"

    def payload(self) -> dict[str, Any]:
        return {"current": self.current}


class InvalidOperation(ClientError):
    code = -112


class LowBalance(ClientError):
    code = -113


class NetworkFull(ClientError):
    code = -114


class NetworkOther(ClientError):
    code = -115


class InvalidInvitation(ClientError):
    code = -116


class InvitationAlreadyClaimed(ClientError):
    code = -117


# ---------------------------------------------------------------- the network's own errors


class NetworkError(SafeError):
    """The network could not give an answer; unlike a ClientError, the outcome may be unknown."""

    code = -200


class RequestTimeout(NetworkError):
    """No answer before the deadline. A mutation may or may not have taken effect."""

    code = -201


class QuorumNotReached(NetworkError):
    """Too few members of the close group answered, or their answers did not agree."""

    code = -202


class ProtocolError(NetworkError):
    """A frame or message broke the wire protocol (malformed, oversized, wrong version)."""

    code = -203


class InvalidSignature(NetworkError):
    """A request's signature is missing, malformed or does not verify."""

    code = -204


class NotReady(NetworkError):
    """The node is not (yet) a caught-up member of the item's close group."""

    code = -205


class CorruptRecord(SafeError):
    """A stored record failed its checksum; it is never served."""

    code = -300


_BY_CODE: dict[int, type[SafeError]] = {}


def _register() -> None:
    stack: list[type[SafeError]] = [SafeError]
    while stack:
        cls = stack.pop()
        _BY_CODE.setdefault(cls.code, cls)
        stack.extend(cls.__subclasses__())


def error_from_wire(obj: Any) -> SafeError:
    """Rebuild the exception a peer sent; unknown codes become NetworkOther, never a crash."""
    if not isinstance(obj, dict):
        return ProtocolError(f"malformed error object: {obj!r:.80}")
    code = obj.get("code")
    msg = obj.get("msg", "")
    msg = msg if isinstance(msg, str) else ""
    if isinstance(code, int) and code not in _BY_CODE:
        _register()  # error classes defined by later imports join lazily
    cls = _BY_CODE.get(code) if isinstance(code, int) else None
    try:
        if cls is InvalidSuccessor:
            current = obj["current"]
            if not isinstance(current, int) or isinstance(current, bool):
                raise ValueError("InvalidSuccessor carries an integer")
            return InvalidSuccessor(current, msg)
        if cls is InvalidEntryActions:
            errors = {}
            for k, kind, v in obj["errors"]:
                if not isinstance(k, bytes) or not isinstance(kind, int) or not (
                    v is None or (isinstance(v, int) and not isinstance(v, bool))
                ):
                    raise ValueError("an entry error is [key bytes, kind, version or nil]")
                errors[k] = EntryError(EntryErrorKind(kind), v)
            return InvalidEntryActions(errors, msg)
        if cls is not None:
            return cls(msg)
    except (KeyError, TypeError, ValueError, OverflowError):
        return ProtocolError(f"malformed error payload for code {code}")
    return NetworkOther(msg or f"unknown error code {code!r}")


def _leaves(group: BaseExceptionGroup) -> Iterator[BaseException]:  # type: ignore[type-arg]
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc


@contextlib.contextmanager
def single_errors() -> Iterator[None]:
    """Re-raise a lone exception out of trio's exception groups.

    A context manager that runs background tasks in a nursery would otherwise hand its user
    an ExceptionGroup for an ordinary `AccessDenied` raised in their own `async with` body.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        leaves = list(_leaves(group))
        if len(leaves) == 1:
            raise leaves[0] from None
        raise
