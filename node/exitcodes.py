"""The exit codes of every `safenet` command, and which error means which (docs/cli.md).

One table for the whole command line, so a script can tell "try again later" from "you
asked for something that is not there" whichever group it calls. Errors are matched by the
names of their classes, walking the class's MRO: the table can then name the event store's
and the NoteBook's errors without `node` importing the packages built on top of it.
`tests/test_cli_broken_inputs.py` checks that every name here is a real class.
"""

from __future__ import annotations

OK = 0
FAILED = 1  # it ran and failed: an invariant broke, a check failed, an unexpected error
USAGE = 2  # bad usage or bad input: an unknown option, a malformed name, bad JSON, a bad file
REFUSED = 3  # the network or the store said no: a conflict, a version, a rule, a permission
NOT_FOUND = 4  # what was named is not there: no cluster, no such data, database, stream, node
UNAVAILABLE = 5  # no answer: no node running, a timeout, no quorum; trying again may work
INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT

MEANING = {
    OK: "done",
    FAILED: "failed",
    USAGE: "bad usage or bad input",
    REFUSED: "refused (conflict, wrong version, a rule or a permission said no)",
    NOT_FOUND: "not found",
    UNAVAILABLE: "unavailable (no node answered, timeout, quorum not reached)",
    INTERRUPTED: "interrupted",
}

# Class name -> exit code. The most specific class in an error's MRO wins, so a subclass
# needs a line only when it differs from its parent.
BY_ERROR: dict[str, int] = {
    # click and Python
    "UsageError": USAGE,  # click: BadParameter, NoSuchOption, MissingParameter ...
    "Abort": FAILED,
    "KeyboardInterrupt": INTERRUPTED,
    "ValueError": USAGE,  # includes json.JSONDecodeError and UnicodeDecodeError
    "FileNotFoundError": NOT_FOUND,
    "IsADirectoryError": USAGE,
    "NotADirectoryError": USAGE,
    "PermissionError": REFUSED,
    "OSError": FAILED,
    # node.clusterfile
    "ClusterError": FAILED,
    "NoCluster": NOT_FOUND,
    "NoSuchNode": NOT_FOUND,
    "BadClusterFile": USAGE,
    "BadClusterRequest": USAGE,
    "ClusterBusy": REFUSED,
    "ClusterUnavailable": UNAVAILABLE,
    # node.errors
    "SafeError": FAILED,
    "ClientError": REFUSED,  # a data rule said no and nothing changed
    "NoSuchAccount": NOT_FOUND,
    "NoSuchData": NOT_FOUND,
    "NoSuchEntry": NOT_FOUND,
    "NoSuchKey": NOT_FOUND,
    "NetworkOther": FAILED,
    "NetworkFull": UNAVAILABLE,
    "NetworkError": UNAVAILABLE,  # RequestTimeout, QuorumNotReached, NotReady
    "ProtocolError": FAILED,
    "InvalidSignature": FAILED,
    "CorruptRecord": FAILED,
    # client.selfenc: a data map or chunk failed its checks (or the name is not a data map)
    "SelfEncryptionError": FAILED,
    # eventstore.errors
    "EventStoreError": FAILED,
    "WrongExpectedVersion": REFUSED,
    "DatabaseExists": REFUSED,
    "DatabaseNotFound": NOT_FOUND,
    "StreamNotFound": NOT_FOUND,
    "StreamDeleted": NOT_FOUND,
    "InvalidEvent": USAGE,
    "CorruptData": FAILED,
    # eventstore.cqrs and the NoteBook
    "DomainError": REFUSED,  # a domain rule said no (an empty note, a taken name)
    "NoSuchNoteBook": NOT_FOUND,
}


def exit_code(exc: BaseException) -> int:
    """The exit code for `exc`: its own `exit_code` if it carries one (click's exceptions
    and ours do), else the table's entry for the nearest class in its MRO, else FAILED."""
    own = getattr(exc, "exit_code", None)
    if isinstance(own, int) and not isinstance(own, bool):
        return own
    for cls in type(exc).__mro__:
        code = BY_ERROR.get(cls.__name__)
        if code is not None:
            return code
    return FAILED
