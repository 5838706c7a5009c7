"""A small bank for the CQRS tests: accounts whose deposits are NOT idempotent by nature
(depositing twice doubles the money), so any command applied twice shows in a balance,
and a transfer saga across them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eventstore.cqrs import Aggregate, Command, DomainError, DomainEvent, Reaction, applies
from eventstore.cqrs.streams import split_stream
from eventstore.events import RecordedEvent


class Overdrawn(DomainError):
    pass


@dataclass(frozen=True)
class Opened(DomainEvent):
    owner: str


@dataclass(frozen=True)
class Deposited(DomainEvent):
    amount: int


@dataclass(frozen=True)
class Withdrawn(DomainEvent):
    amount: int
    transfer: str | None = None


class Account(Aggregate):
    category = "account"

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.owner = ""
        self.balance = 0

    def open(self, owner: str) -> None:
        self.raise_event(Opened(owner))

    def deposit(self, amount: int) -> None:
        self.raise_event(Deposited(amount))

    def withdraw(self, amount: int, transfer: str | None = None) -> None:
        if amount > self.balance:
            raise Overdrawn(f"{self.id}: {amount} > {self.balance}")
        self.raise_event(Withdrawn(amount, transfer))

    @applies(Opened)
    def _opened(self, event: Opened) -> None:
        self.owner = event.owner

    @applies(Deposited)
    def _deposited(self, event: Deposited) -> None:
        self.balance += event.amount

    @applies(Withdrawn)
    def _withdrawn(self, event: Withdrawn) -> None:
        self.balance -= event.amount


@dataclass(frozen=True)
class Open(Command):
    aggregate = Account
    account: str
    owner: str

    def target(self) -> str:
        return self.account

    def handle(self, account: Account) -> None:
        account.open(self.owner)


@dataclass(frozen=True)
class Deposit(Command):
    aggregate = Account
    account: str
    amount: int

    def target(self) -> str:
        return self.account

    def handle(self, account: Account) -> None:
        account.deposit(self.amount)


@dataclass(frozen=True)
class Withdraw(Command):
    aggregate = Account
    account: str
    amount: int
    transfer: str | None = None

    def target(self) -> str:
        return self.account

    def handle(self, account: Account) -> None:
        account.withdraw(self.amount, self.transfer)


# ----------------------------------------------------------------------------- transfers


@dataclass(frozen=True)
class Requested(DomainEvent):
    source: str
    target: str
    amount: int


@dataclass(frozen=True)
class Completed(DomainEvent):
    pass


class Transfer(Aggregate):
    category = "transfer"

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.done = False

    @applies(Requested)
    def _requested(self, event: Requested) -> None:
        pass

    @applies(Completed)
    def _completed(self, event: Completed) -> None:
        self.done = True


@dataclass(frozen=True)
class RequestTransfer(Command):
    aggregate = Transfer
    transfer: str
    source: str
    target_account: str
    amount: int

    def target(self) -> str:
        return self.transfer

    def handle(self, transfer: Transfer) -> None:
        transfer.raise_event(Requested(self.source, self.target_account, self.amount))


@dataclass(frozen=True)
class Complete(Command):
    aggregate = Transfer
    transfer: str

    def target(self) -> str:
        return self.transfer

    def handle(self, transfer: Transfer) -> None:
        if not transfer.done:
            transfer.raise_event(Completed())


def transfer_saga(state: dict[str, Any], event: RecordedEvent) -> Reaction:
    """Requested -> withdraw from the source -> deposit to the target -> complete."""
    category, ident = split_stream(event.stream)
    if category == "transfer" and event.type == "Requested":
        d = event.data
        state[ident] = {"target": d["target"], "amount": d["amount"], "step": "withdrawing"}
        return Reaction(state, [Withdraw(d["source"], d["amount"], transfer=ident)])
    if category == "account" and event.type == "Withdrawn" and event.data.get("transfer") in state:
        transfer = state[event.data["transfer"]]
        transfer["step"] = "depositing"
        return Reaction(state, [Deposit(transfer["target"], transfer["amount"]),
                                Complete(event.data["transfer"])])
    if category == "transfer" and event.type == "Completed" and ident in state:
        state[ident]["step"] = "done"
        return Reaction(state)
    return Reaction(state)
