"""A bank: accounts, and transfers between them run by a process manager (withdraw from
the source, deposit to the target, mark the transfer complete), with a balances projection.

Deposits and withdrawals are not idempotent by nature - depositing twice doubles the
money - so a command that takes effect twice shows in the money. The invariant
`money_is_conserved` says money is neither created nor destroyed.

    safenet chaos run app --app examples.bank:app --seeds 1..20
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from eventstore.cqrs import (
    Aggregate,
    Command,
    CommandHandler,
    DomainError,
    DomainEvent,
    ProcessManager,
    Projection,
    Reaction,
    applies,
)
from eventstore.cqrs.streams import split_stream
from eventstore.events import RecordedEvent
from simulations.app_spec import ChaosApp, FinalState

ACCOUNTS = ("ann", "bob", "cat", "dan")
OPENING_BALANCE = 100


class Overdrawn(DomainError):
    pass


class UnknownAccount(DomainError):
    pass


# ----------------------------------------------------------------------------- accounts


@dataclass(frozen=True)
class Opened(DomainEvent):
    balance: int  # money that enters the bank: the only way it does


@dataclass(frozen=True)
class Withdrawn(DomainEvent):
    amount: int
    transfer: str


@dataclass(frozen=True)
class Deposited(DomainEvent):
    amount: int
    transfer: str


class Account(Aggregate):
    category = "account"

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.open = False
        self.balance = 0

    @applies(Opened)
    def _opened(self, event: Opened) -> None:
        self.open, self.balance = True, event.balance

    @applies(Withdrawn)
    def _withdrawn(self, event: Withdrawn) -> None:
        self.balance -= event.amount

    @applies(Deposited)
    def _deposited(self, event: Deposited) -> None:
        self.balance += event.amount


@dataclass(frozen=True)
class OpenAccount(Command):
    aggregate = Account
    account: str
    balance: int

    def target(self) -> str:
        return self.account

    def handle(self, account: Account) -> None:
        if not account.open:
            account.raise_event(Opened(self.balance))


@dataclass(frozen=True)
class Withdraw(Command):
    aggregate = Account
    account: str
    amount: int
    transfer: str

    def target(self) -> str:
        return self.account

    def handle(self, account: Account) -> None:
        if not account.open:
            raise UnknownAccount(self.account)
        if self.amount > account.balance:
            raise Overdrawn(f"{self.account} holds {account.balance}, not {self.amount}")
        account.raise_event(Withdrawn(self.amount, self.transfer))


@dataclass(frozen=True)
class Deposit(Command):
    aggregate = Account
    account: str
    amount: int
    transfer: str

    def target(self) -> str:
        return self.account

    def handle(self, account: Account) -> None:
        if not account.open:
            raise UnknownAccount(self.account)
        account.raise_event(Deposited(self.amount, self.transfer))


# ----------------------------------------------------------------------------- transfers


@dataclass(frozen=True)
class TransferRequested(DomainEvent):
    source: str
    target: str
    amount: int


@dataclass(frozen=True)
class TransferCompleted(DomainEvent):
    pass


class Transfer(Aggregate):
    category = "transfer"

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.requested = False
        self.done = False

    @applies(TransferRequested)
    def _requested(self, event: TransferRequested) -> None:
        self.requested = True

    @applies(TransferCompleted)
    def _completed(self, event: TransferCompleted) -> None:
        self.done = True


@dataclass(frozen=True)
class RequestTransfer(Command):
    aggregate = Transfer
    transfer: str
    source: str
    destination: str
    amount: int

    def target(self) -> str:
        return self.transfer

    def handle(self, transfer: Transfer) -> None:
        if not transfer.requested:  # asking again for the same transfer changes nothing
            transfer.raise_event(TransferRequested(self.source, self.destination, self.amount))


@dataclass(frozen=True)
class CompleteTransfer(Command):
    aggregate = Transfer
    transfer: str

    def target(self) -> str:
        return self.transfer

    def handle(self, transfer: Transfer) -> None:
        if not transfer.done:
            transfer.raise_event(TransferCompleted())


def run_transfers(state: dict[str, Any], event: RecordedEvent) -> Reaction:
    """The saga: requested -> withdraw from the source -> deposit to the target, complete."""
    category, ident = split_stream(event.stream)
    data = event.data if isinstance(event.data, dict) else {}
    if category == "transfer" and event.type == "TransferRequested":
        state[ident] = {"target": data["target"], "amount": data["amount"], "step": "withdrawing"}
        return Reaction(state, [Withdraw(data["source"], data["amount"], ident)])
    if category == "account" and event.type == "Withdrawn" and data.get("transfer") in state:
        transfer = state[data["transfer"]]
        transfer["step"] = "depositing"
        return Reaction(state, [Deposit(transfer["target"], transfer["amount"], data["transfer"]),
                                CompleteTransfer(data["transfer"])])
    if category == "transfer" and event.type == "TransferCompleted" and ident in state:
        state[ident]["step"] = "done"
        return Reaction(state)
    return Reaction(state)


TRANSFERS = ProcessManager("transfers", run_transfers, commands=[Withdraw, Deposit, CompleteTransfer],
                           categories=["transfer", "account"])


def fold_balances(state: dict[str, int], event: RecordedEvent) -> dict[str, int]:
    _category, ident = split_stream(event.stream)
    data = event.data if isinstance(event.data, dict) else {}
    if event.type == "Opened":
        state[ident] = data["balance"]
    elif event.type == "Withdrawn":
        state[ident] = state.get(ident, 0) - data["amount"]
    elif event.type == "Deposited":
        state[ident] = state.get(ident, 0) + data["amount"]
    return state


BALANCES = Projection("balances", fold_balances, initial={}, categories=["account"])


# ----------------------------------------------------------------------------- the chaos run


def commands(rng: random.Random) -> Iterator[Command]:
    """Transfers of 1 to 40 between two different accounts (some will be refused for
    lack of money: that is the saga's business, not a bug)."""
    number = 0
    while True:
        number += 1
        source, destination = rng.sample(ACCOUNTS, 2)
        yield RequestTransfer(f"t{number}", source, destination, rng.randint(1, 40))


def money_is_conserved(final: FinalState) -> list[str]:
    """Money is neither created nor destroyed: each transfer withdraws its amount once at
    most, deposits no more than it withdrew, and the balances plus the money in flight
    equal what the accounts were opened with."""
    problems = []
    minted = sum(e.data["balance"] for e in final.category("account") if e.type == "Opened")
    withdrawn: dict[str, int] = defaultdict(int)
    deposited: dict[str, int] = defaultdict(int)
    amounts = {split_stream(e.stream)[1]: e.data["amount"] for e in final.category("transfer")
               if e.type == "TransferRequested"}
    for event in final.category("account"):
        if event.type == "Withdrawn":
            withdrawn[event.data["transfer"]] += event.data["amount"]
        elif event.type == "Deposited":
            deposited[event.data["transfer"]] += event.data["amount"]
    for transfer in sorted(set(withdrawn) | set(deposited)):
        amount = amounts.get(transfer)
        if withdrawn[transfer] not in (0, amount):
            problems.append(f"money destroyed: {transfer} withdrew {withdrawn[transfer]} for a transfer of {amount}")
        if deposited[transfer] > withdrawn[transfer]:
            problems.append(f"money created: {transfer} deposited {deposited[transfer]} "
                            f"but withdrew {withdrawn[transfer]}")
    balances = sum(a.balance for a in final.aggregates(Account).values())
    in_flight = sum(max(0, withdrawn[t] - deposited[t]) for t in withdrawn)
    if balances + in_flight != minted:
        problems.append(f"the accounts hold {balances} and {in_flight} is in flight, but {minted} was opened with")
    return problems


def no_overdraft(final: FinalState) -> list[str]:
    """No account goes below zero."""
    return [f"{name} is at {a.balance}" for name, a in final.aggregates(Account).items() if a.balance < 0]


def projection_agrees(final: FinalState) -> list[str]:
    """The saved balances projection equals the accounts' own balances."""
    saved = final.projections.get(BALANCES.name)
    if saved is None:
        return []  # a prefix of the log, or never saved
    actual = {name: a.balance for name, a in final.aggregates(Account).items()}
    return [] if saved == actual else [f"the projection says {saved}, the accounts {actual}"]


def app(handler: type[CommandHandler] = CommandHandler, name: str = "bank") -> ChaosApp:
    return ChaosApp(
        name,
        commands=commands,
        setup=[OpenAccount(a, OPENING_BALANCE) for a in ACCOUNTS],
        projections=[BALANCES],
        managers=[TRANSFERS],
        aggregates=[Account, Transfer],
        invariants=[money_is_conserved, no_overdraft, projection_agrees],
        handler=handler,
    )
