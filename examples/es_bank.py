"""A bank written with the `eventsourcing` library alone - its `Application`, `Aggregate`
and `@event` - knowing nothing of this project. It keeps its events in the network through
the persistence module (PERSISTENCE_MODULE=eventstore.eventsourcing_module); `safenet chaos
run app` runs it in the simulator under faults:

    safenet chaos run app --app examples.es_bank:app --seeds 1..20

A transfer debits one account and credits the other in one `save` - one atomic append of
both events - so money is never in flight, and the invariant is simply that the balances
add up to what the accounts were opened with.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event

from simulations.app_es import EsChaosApp
from simulations.app_spec import FinalState

NAMES = ("ann", "bob", "cat", "dan")
OPENING_BALANCE = 100


class InsufficientFunds(Exception):
    pass


class Account(Aggregate):
    @event("Opened")
    def __init__(self, name: str, balance: int) -> None:
        self.name = name
        self.balance = balance

    @staticmethod
    def create_id(name: str) -> UUID:
        return uuid5(NAMESPACE_URL, f"/es-bank/accounts/{name}")

    @event("Debited")
    def debit(self, amount: int) -> None:
        self.balance -= amount

    @event("Credited")
    def credit(self, amount: int) -> None:
        self.balance += amount


class Bank(Application):
    def open(self, name: str, balance: int) -> UUID:
        account = Account(name, balance)
        self.save(account)
        return account.id

    def transfer(self, source: str, target: str, amount: int) -> None:
        debtor = self.repository.get(Account.create_id(source))
        creditor = self.repository.get(Account.create_id(target))
        if debtor.balance < amount:
            raise InsufficientFunds(f"{source} holds {debtor.balance}, not {amount}")
        debtor.debit(amount)
        creditor.credit(amount)
        self.save(debtor, creditor)

    def balances(self) -> dict[str, int]:
        return {name: self.repository.get(Account.create_id(name)).balance for name in NAMES}


# ----------------------------------------------------------------------------- the chaos run


@dataclass(frozen=True)
class Transfer:
    """A command: a function of the application."""

    source: str
    target: str
    amount: int

    def __call__(self, bank: Bank) -> None:
        bank.transfer(self.source, self.target, self.amount)


@dataclass(frozen=True)
class Open:
    name: str

    def __call__(self, bank: Bank) -> None:
        bank.open(self.name, OPENING_BALANCE)


def commands(rng: random.Random) -> Iterator[Transfer]:
    while True:
        source, target = rng.sample(NAMES, 2)
        yield Transfer(source, target, rng.randint(1, 40))


def money_is_conserved(final: FinalState) -> list[str]:
    """Money is neither created nor destroyed: the balances add up to the opening balances."""
    balances = final.extra.get("state")
    if balances is None:
        return []  # a prefix of the log: nothing read
    total = sum(balances.values())
    opened = OPENING_BALANCE * len(NAMES)
    return [] if total == opened else [f"the accounts hold {total} ({balances}), but {opened} was opened with"]


def no_overdraft(final: FinalState) -> list[str]:
    """No account goes below zero."""
    return [f"{name} is at {b}" for name, b in (final.extra.get("state") or {}).items() if b < 0]


def app() -> EsChaosApp:
    return EsChaosApp(
        "es-bank",
        application=lambda env: Bank(env=env),
        commands=commands,
        setup=[Open(name) for name in NAMES],
        state=Bank.balances,
        invariants=[money_is_conserved, no_overdraft],
    )
