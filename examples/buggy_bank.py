"""The bank of examples/bank.py with one bug: its command handler is not idempotent under
retry. It loads the account, runs the command and saves - but never asks whether this
command already took effect. When the process manager is killed after a command landed but
before it recorded that, it sends the command again on restart, and this handler deposits
(or withdraws) a second time. `safenet chaos run app` catches it:

    safenet chaos run app --app examples.buggy_bank:app --seeds 1..10
"""

from __future__ import annotations

from eventstore.cqrs import Command, CommandHandler, CommandResult
from simulations.app_spec import ChaosApp

from . import bank


class NaiveHandler(CommandHandler):
    """The bug: no `has_handled` check before running the command again."""

    async def _attempt(self, command: Command, attempt: int) -> CommandResult:
        aggregate = await self.repository.load(command.aggregate, command.target())
        command.handle(aggregate)
        result = await self.repository.save(aggregate, command_id=command.id, correlation_id=command.correlation)
        changed = result is not None
        return CommandResult(command.id, aggregate.stream, aggregate.version, changed, False, attempt,
                             None if result is None else result.log_position)


def app() -> ChaosApp:
    return bank.app(handler=NaiveHandler, name="buggy-bank")
