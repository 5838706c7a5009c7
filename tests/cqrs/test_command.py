"""Aggregates, the repository and commands: the declared command -> stream mapping,
causation and correlation ids, retries on lost races (bounded), snapshots, and a command
sent twice taking effect once."""

from __future__ import annotations

import uuid

import pytest
from domain_testing import Account, Deposit, Open, Withdraw
from es_testing_cqrs import events_of

from eventstore.api import NO_STREAM, WrongExpectedVersion
from eventstore.cqrs import (
    AggregateNotFound,
    CommandHandler,
    ConcurrencyConflict,
    Repository,
    Snapshots,
    UnknownEvent,
    snapshot_stream,
)
from eventstore.cqrs.repository import event_id
from eventstore.events import EventData
from eventstore.safe import RETRIES
from node import errors as E
from node.requests import MutateEntries


def test_a_command_type_declares_its_stream():
    assert Deposit("alice", 5).stream == "account@alice"
    assert Account.stream_for("bob") == "account@bob"


async def test_events_carry_the_command_as_cause_and_its_correlation(db, autojump_clock):
    handler = CommandHandler(Repository(db))
    opened = await handler.execute(Open("alice", "Alice"))
    conversation = uuid.uuid4()
    deposit = Deposit("alice", 10, correlation_id=conversation)
    result = await handler.execute(deposit)
    assert (opened.version, result.version, result.changed, result.attempts) == (0, 1, True, 1)
    events = await db.read_stream("account@alice")
    assert [e.type for e in events] == ["Opened", "Deposited"]
    assert events[0].causation_id == events[0].correlation_id == opened.command_id  # it began a conversation
    assert events[1].causation_id == deposit.id and events[1].correlation_id == conversation
    assert events[1].id == event_id(deposit.id, 0)  # derived: a retried append is recognised
    assert result.position == events[1].position
    account = await Repository(db).get(Account, "alice")
    assert (account.owner, account.balance, account.version) == ("Alice", 10, 1)


async def test_a_lost_race_is_retried_on_the_newer_state(db, make_store, autojump_clock):
    await CommandHandler(Repository(db)).execute(Open("alice", "Alice"))
    rival = CommandHandler(Repository(make_store().database("cqrs")))  # another process

    class Racing(Repository):
        raced = False

        async def load(self, cls, id):
            aggregate = await super().load(cls, id)
            if not self.raced:  # between our load and our save, the rival commits
                self.raced = True
                await rival.execute(Deposit("alice", 7))
            return aggregate

    result = await CommandHandler(Racing(db)).execute(Deposit("alice", 5))
    assert (result.attempts, result.version) == (2, 2)
    assert (await Repository(db).get(Account, "alice")).balance == 12


async def test_retries_are_bounded_and_a_loser_writes_nothing(db, make_store, autojump_clock):
    await CommandHandler(Repository(db)).execute(Open("alice", "Alice"))
    rival = CommandHandler(Repository(make_store().database("cqrs")))

    class AlwaysLate(Repository):
        async def load(self, cls, id):
            aggregate = await super().load(cls, id)
            await rival.execute(Deposit("alice", 1))
            return aggregate

    command = Deposit("alice", 100)
    with pytest.raises(ConcurrencyConflict) as info:
        await CommandHandler(AlwaysLate(db), max_attempts=3).execute(command)
    assert (info.value.attempts, info.value.stream) == (3, "account@alice")
    events = await db.read_stream("account@alice")
    assert all(e.causation_id != command.id for e in events)
    assert (await Repository(db).get(Account, "alice")).balance == 3


async def test_a_stale_expected_version_is_refused_not_retried(db, autojump_clock):
    handler = CommandHandler(Repository(db))
    await handler.execute(Open("alice", "Alice", expected_version=NO_STREAM))
    await handler.execute(Deposit("alice", 5, expected_version=0))
    with pytest.raises(WrongExpectedVersion) as info:
        await handler.execute(Deposit("alice", 5, expected_version=0))
    assert (info.value.expected, info.value.actual) == (0, 1)


async def test_a_command_sent_twice_takes_effect_once(db, make_store, autojump_clock):
    handler = CommandHandler(Repository(db))
    await handler.execute(Open("alice", "Alice"))
    deposit = Deposit("alice", 10)
    first = await handler.execute(deposit)
    again = await CommandHandler(Repository(make_store().database("cqrs"))).execute(deposit)
    assert (first.changed, again.changed, again.duplicate) == (True, False, True)
    assert (await Repository(db).get(Account, "alice")).balance == 10


async def test_a_save_whose_reply_is_lost_is_recognised_on_reload(db, net, autojump_clock):
    handler = CommandHandler(Repository(db), retry_delay=0.1)
    await handler.execute(Open("alice", "Alice"))
    segment = db.layout.stream_segment("account@alice", 0)

    def to_stream(request) -> bool:
        return isinstance(request.op, MutateEntries) and request.op.address == segment

    # The deposit lands, then every reply to the stream write is lost: the store gives up
    # (outcome unknown), the handler reloads and finds the command's own event.
    net.fail_next(applied=True, when=to_stream)
    net.fail_next(count=RETRIES, when=to_stream)
    result = await handler.execute(Deposit("alice", 10))
    assert result.duplicate and result.attempts == 2
    assert (await Repository(db).get(Account, "alice")).balance == 10
    # With the network down for good, the handler gives up after its attempts.
    net.fail_next(count=10_000, when=lambda r: True)
    with pytest.raises(E.RequestTimeout):
        await CommandHandler(Repository(db), max_attempts=2, retry_delay=0.1).execute(Deposit("alice", 1))
    net.faults.injections.clear()


async def test_domain_errors_write_nothing(db, autojump_clock):
    handler = CommandHandler(Repository(db))
    await handler.execute(Open("alice", "Alice"))
    from domain_testing import Overdrawn

    with pytest.raises(Overdrawn):
        await handler.execute(Withdraw("alice", 1))
    assert await db.stream_version("account@alice") == 0


async def test_snapshots_are_taken_every_n_events_and_used(db, net, autojump_clock):
    repository = Repository(db, snapshots=Snapshots(db, every=5))
    handler = CommandHandler(repository)
    await handler.execute(Open("alice", "Alice"))
    commands = [Deposit("alice", i) for i in range(1, 12)]
    for command in commands:
        await handler.execute(command)
    # Versions 0..11: snapshots at 4 (5 events) and 9 (10 events).
    snapshots = await db.read_stream(snapshot_stream("account@alice"))
    assert [s.data["version"] for s in snapshots] == [4, 9]
    account = await repository.get(Account, "alice")
    assert (account.version, account.balance) == (11, sum(range(1, 12)))
    # Loading reads the snapshot and only the two events after it.
    before = net.requests["GetIData"]
    await repository.get(Account, "alice")
    payloads = net.requests["GetIData"] - before
    assert payloads <= 3, payloads  # the snapshot and two events (the cache may spare some)
    # The snapshot remembers the commands: an old command sent again is still recognised.
    again = await CommandHandler(repository).execute(commands[0])
    assert again.duplicate and (await repository.get(Account, "alice")).balance == sum(range(1, 12))


async def test_a_snapshot_of_another_schema_is_ignored(db, autojump_clock):
    repository = Repository(db, snapshots=Snapshots(db, every=1))
    await CommandHandler(repository).execute(Open("alice", "Alice"))
    await db.append(snapshot_stream("account@alice"),
                    [EventData("Snapshot", {"schema": 99, "version": 0, "state": {}})])
    account = await repository.get(Account, "alice")
    assert account.owner == "Alice"  # rebuilt from the events


async def test_missing_aggregates_and_foreign_events(db, autojump_clock):
    repository = Repository(db)
    with pytest.raises(AggregateNotFound):
        await repository.get(Account, "nobody")
    assert (await repository.load(Account, "nobody")).version == NO_STREAM
    await db.append("account@odd", [EventData("Renamed", {})])
    with pytest.raises(UnknownEvent) as info:
        await repository.load(Account, "odd")
    assert info.value.event_type == "Renamed"
    assert await events_of(db, "account@odd") == ["Renamed"]
