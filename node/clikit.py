"""What every `safenet` command group shares: one error format, one exit-code table, the
common options.

Every group (and `safenet` itself) is a `SafenetGroup`: whatever a command raises ends as
one line on stderr, `safenet: error: MESSAGE`, and the exit code `node.exitcodes` gives for
it - a usage error, a typed error of the network or the store, a missing file, an error
inside a trio nursery alike. With `--json` on the command line the error is a JSON object
instead, `{"error": ..., "type": ..., "exit": ...}`, so scripts parse both outcomes. No
traceback reaches the user; `SAFENET_DEBUG=1` prints one after the line, for bug reports.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, NoReturn

import click
import trio

from . import exitcodes
from .errors import SafeError

DEBUG_ENV = "SAFENET_DEBUG"
PREFIX = "safenet: error: "


class CommandError(click.ClickException):
    """A failure already put in words for the user; `exit_code` comes from the table and
    `extra` adds facts to the --json form of the error (e.g. a conflict's versions)."""

    def __init__(self, message: str, code: int = exitcodes.FAILED, *, kind: str | None = None,
                 extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.exit_code = code  # type: ignore[misc]  # click declares it on the class
        self.kind = kind or "CommandError"
        self.extra = dict(extra or {})


def fail(message: str, code: int = exitcodes.FAILED, **extra: Any) -> NoReturn:
    """Stop the command with `message` and `code` (see `node.exitcodes`)."""
    raise CommandError(message, code, extra=extra)


def explained(exc: BaseException, message: str, **extra: Any) -> CommandError:
    """`exc` in the user's words, keeping the exit code and type name that `exc` has."""
    return CommandError(message, exitcodes.exit_code(exc), kind=type(exc).__name__, extra=extra)


def leaf(exc: BaseException) -> BaseException:
    """The error inside trio's exception groups: the lone one, or the first that is not a
    cancellation (the others are usually echoes of it)."""
    while isinstance(exc, BaseExceptionGroup):
        inner = [e for e in exc.exceptions if not isinstance(e, trio.Cancelled)] or list(exc.exceptions)
        exc = inner[0]
    return exc


def describe(exc: BaseException) -> str:
    """A plain one-line description of an error nobody explained more specifically."""
    if isinstance(exc, click.ClickException):
        return exc.format_message()
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}{': ' + str(exc.filename) if exc.filename else ''}"
    if isinstance(exc, SafeError):
        text = str(exc)
        name = type(exc).__name__
        return text if text.startswith(name) else f"{name}: {text}"
    text = str(exc)
    return text or type(exc).__name__


def _command_path(ctx: click.Context) -> str:
    """`safenet GROUP COMMAND`, whether the root or a group was invoked (tests invoke groups)."""
    names: list[str] = []
    root: click.Context | None = ctx
    while root is not None:
        names.insert(0, root.info_name or "")
        if root.parent is None and getattr(root.command, "is_root", False):
            names[0] = "safenet"
            return " ".join(names)
        root = root.parent
    return " ".join(["safenet", *names])


def _known(exc: BaseException) -> bool:
    return hasattr(exc, "exit_code") or any(c.__name__ in exitcodes.BY_ERROR for c in type(exc).__mro__[:-2])


def report_error(exc: BaseException, *, as_json: bool = False) -> int:
    """Print `exc` as the one-line error (or JSON object) on stderr; return its exit code."""
    exc = leaf(exc)
    if isinstance(exc, click.UsageError) and type(exc).__name__ == "NoArgsIsHelpError":
        exc.show()  # a bare group (`safenet cluster`): its help, as click shows it, is the answer
        return int(exc.exit_code)
    extra: dict[str, Any] = {}
    kind = type(exc).__name__
    if isinstance(exc, click.Abort):
        interrupted = isinstance(exc.__context__, KeyboardInterrupt | EOFError)
        code = exitcodes.INTERRUPTED if isinstance(exc.__context__, KeyboardInterrupt) else exitcodes.FAILED
        message = "interrupted" if interrupted else "aborted"
    elif isinstance(exc, KeyboardInterrupt):
        code, message = exitcodes.INTERRUPTED, "interrupted"
    elif isinstance(exc, CommandError):
        code, message, kind, extra = exc.exit_code, exc.format_message(), exc.kind, exc.extra
    elif isinstance(exc, click.UsageError):
        code, message = exc.exit_code, exc.format_message()
        if exc.ctx is not None:
            message += f" (see `{_command_path(exc.ctx)} --help`)"
    else:
        code, message = exitcodes.exit_code(exc), describe(exc)
        if not _known(exc):
            message = f"unexpected {kind}: {message} (set {DEBUG_ENV}=1 for the traceback)"
    message = " ".join(message.split())  # one line, whatever the message held
    if as_json:
        click.echo(json.dumps({"error": message, "type": kind, "exit": code, **extra}), err=True)
    else:
        click.echo(PREFIX + message, err=True)
    if os.environ.get(DEBUG_ENV):
        traceback.print_exception(exc, file=sys.stderr)
    return code


class _ReportsErrors(click.Command):
    """`main` that runs click without its own error printing and reports every failure
    with `report_error` (click's own `main` prints `Error:` and lets other errors out)."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        argv = list(sys.argv[1:] if args is None else args)
        try:
            result = super().main(argv, prog_name, complete_var, False, **extra)
        except SystemExit:
            raise
        except BrokenPipeError:  # `safenet data cat NAME | head`: the reader left; say nothing
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - the interpreter's exit flush needs a sink
            sys.exit(exitcodes.FAILED)
        except BaseException as exc:  # noqa: BLE001 - every failure becomes one line
            sys.exit(report_error(exc, as_json="--json" in argv))
        sys.exit(result if isinstance(result, int) and not isinstance(result, bool) else exitcodes.OK)


class SafenetGroup(_ReportsErrors, click.Group):
    """A command group whose errors all take the one format (see the module docstring)."""


class SafenetCommand(_ReportsErrors, click.Command):
    """A lone command (`safenet ui`) with the same error handling."""


def run_async(fn: Callable[..., Any], *args: Any,
              explain: Callable[[BaseException], str | None] | None = None, **kwargs: Any) -> Any:
    """Run `fn(*args, **kwargs)` under trio. An error `explain` has words for becomes a
    CommandError with those words (its exit code still from the table); others go up as
    they are, to be reported by the group."""
    try:
        return trio.run(partial(fn, *args, **kwargs))
    except Exception as exc:  # exception groups included
        error = leaf(exc)
        message = explain(error) if explain is not None else None
        if message is None:
            raise error from None
        raise explained(error, message) from None


CONTEXT = {"help_option_names": ["-h", "--help"]}

cluster_option = click.option(
    "--cluster", "cluster", type=click.Path(path_type=str), default=None, metavar="PATH",
    help="The cluster's cluster.json or its dir [default: $SAFENET_CLUSTER, else ./.safenet].")
mock_option = click.option(
    "--mock", "mock", type=click.Path(dir_okay=False, path_type=str), default=None, metavar="FILE",
    help="Use a mock network kept in FILE instead of a cluster (made on first use).")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON (a stable shape for scripts).")
