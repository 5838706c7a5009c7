"""The Streams service: append, batch append, read, catch-up subscriptions, delete, tombstone.

Each handler runs in a thread of grpcio's pool and does its store work through the portal
(eventstore/grpc/portal.py), a page at a time, so a long read streams out as it is read and
a cancelled call stops within a page. A catch-up subscription is the store's own catch-up
loop, run as a task in the store's trio run (`Feed`); the handler takes what it has handed
over, waiting at most a second each time, and in between checks that the client is still
there.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import grpc
import trio

from node import errors as E

from ..database import Database
from ..errors import StreamNotFound, WrongExpectedVersion
from ..events import END, METADATA_STREAM_PREFIX, AppendResult, EventData, RecordedEvent, position, split_position
from ..subscriptions import Subscription
from . import mapping as M
from .portal import PortalClosed, StorePortal
from .protocol import shared_pb2, streams_pb2, streams_pb2_grpc

log = logging.getLogger(__name__)

PAGE = 256  # events per store call
POLL = 1.0  # seconds a subscription waits for news before looking at its client again
BACKWARD_WINDOW = 8  # log slots a backward $all read looks at first (doubling as needed)
FOREVER = (1 << 64) - 1  # what clients send as "no limit"

ReadResp = streams_pb2.ReadResp


def _timeout(context: grpc.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None or remaining > 1e8 else remaining


class StreamsService(streams_pb2_grpc.StreamsServicer):
    def __init__(self, portal: StorePortal) -> None:
        self.portal = portal

    @property
    def db(self) -> Database:
        assert self.portal.db is not None
        return self.portal.db

    def _call(self, context: grpc.ServicerContext, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return self.portal.call(partial(fn, *args, **kwargs), timeout=_timeout(context))

    # ------------------------------------------------------------------ writing

    def Append(self, request_iterator: Iterator[streams_pb2.AppendReq],
               context: grpc.ServicerContext) -> streams_pb2.AppendResp:
        try:
            first = next(request_iterator, None)
            if first is None or first.WhichOneof("content") != "options":
                raise M.Failure(grpc.StatusCode.INVALID_ARGUMENT, "an append starts with its options")
            options = first.options
            stream = M.stream_name(options.stream_identifier)
            expected = M.expected_version(options, "expected_stream_revision", "revision")
            events = [M.event_data(r.proposed_message.id, r.proposed_message.metadata,
                                   r.proposed_message.custom_metadata, r.proposed_message.data)
                      for r in request_iterator]
            try:
                result = self._call(context, _append, self.db, stream, events, expected)
            except WrongExpectedVersion as error:
                return M.append_wrong_version(error)
            commit = M.to_commit(result.log_position)
            return streams_pb2.AppendResp(success=streams_pb2.AppendResp.Success(
                current_revision=result.next_expected_version,
                position=streams_pb2.AppendResp.Position(commit_position=commit, prepare_position=commit)))
        except Exception as exc:
            M.failure(exc).abort(context)
            raise  # not reached: abort raises

    def BatchAppend(self, request_iterator: Iterator[streams_pb2.BatchAppendReq],
                    context: grpc.ServicerContext) -> Iterator[streams_pb2.BatchAppendResp]:
        """Requests sharing a correlation id build one append; the one marked final sends it.
        Each append gets its own answer (success or a Status), in the order they complete."""
        pending: dict[str, tuple[streams_pb2.BatchAppendReq.Options, list[Any]]] = {}
        for request in request_iterator:
            key = request.correlation_id.SerializeToString()
            if request.HasField("options"):
                pending[key] = (request.options, [])
            if key not in pending:
                M.Failure(grpc.StatusCode.INVALID_ARGUMENT, "a batch append's first request carries its options")\
                    .abort(context)
            pending[key][1].extend(request.proposed_messages)
            if request.is_final:
                options, messages = pending.pop(key)
                yield self._batch(context, request.correlation_id, options, messages)

    def _batch(self, context: grpc.ServicerContext, correlation: shared_pb2.UUID,
               options: streams_pb2.BatchAppendReq.Options, messages: list[Any]) -> streams_pb2.BatchAppendResp:
        reply = streams_pb2.BatchAppendResp(correlation_id=correlation, stream_identifier=options.stream_identifier)
        try:
            stream = M.stream_name(options.stream_identifier)
            expected = M.expected_version(options, "expected_stream_position", "stream_position")
            if expected >= 0:
                reply.stream_position = expected
            else:
                getattr(reply, {-1: "no_stream", -2: "any", -4: "stream_exists"}[expected]).SetInParent()
            events = [M.event_data(m.id, m.metadata, m.custom_metadata, m.data) for m in messages]
            timeout = _timeout(context)
            if options.WhichOneof("deadline_option") == "deadline":
                timeout = min(timeout or 1e9, options.deadline.ToTimedelta().total_seconds())
            result = self.portal.call(_append, self.db, stream, events, expected, timeout=timeout)
        except Exception as exc:
            reply.error.CopyFrom(M.batch_error(exc))
            return reply
        commit = M.to_commit(result.log_position)
        reply.success.current_revision = result.next_expected_version
        reply.success.position.commit_position = commit
        reply.success.position.prepare_position = commit
        return reply

    def Delete(self, request: streams_pb2.DeleteReq, context: grpc.ServicerContext) -> streams_pb2.DeleteResp:
        position_ = self._delete(request.options, context, hard=False)
        if position_ is None:
            return streams_pb2.DeleteResp(no_position=shared_pb2.Empty())
        return streams_pb2.DeleteResp(position=streams_pb2.DeleteResp.Position(
            commit_position=position_, prepare_position=position_))

    def Tombstone(self, request: streams_pb2.TombstoneReq, context: grpc.ServicerContext) -> streams_pb2.TombstoneResp:
        position_ = self._delete(request.options, context, hard=True)
        if position_ is None:
            return streams_pb2.TombstoneResp(no_position=shared_pb2.Empty())
        return streams_pb2.TombstoneResp(position=streams_pb2.TombstoneResp.Position(
            commit_position=position_, prepare_position=position_))

    def _delete(self, options: Any, context: grpc.ServicerContext, *, hard: bool) -> int | None:
        """The commit position of the delete's record, or None when there was nothing to do
        (a soft delete of a stream with no events, expecting no particular version)."""
        try:
            stream = M.stream_name(options.stream_identifier)
            expected = M.expected_version(options, "expected_stream_revision", "revision")
            try:
                result = self._call(context, self.db.delete_stream, stream, expected, hard=hard)
            except StreamNotFound:
                if expected in (-2, -1):  # ANY, NO_STREAM: nothing there, nothing to hide
                    return None
                raise WrongExpectedVersion(stream, expected, -1) from None
            return M.to_commit(result.log_position)
        except Exception as exc:
            M.failure(exc).abort(context)
            raise

    # ------------------------------------------------------------------ reading

    def Read(self, request: streams_pb2.ReadReq, context: grpc.ServicerContext) -> Iterator[ReadResp]:
        try:
            options = request.options
            structured = options.uuid_option.WhichOneof("content") == "structured"
            wanted, window = M.read_filter(options)
            backward = options.read_direction == streams_pb2.ReadReq.Options.Backwards
            kind = options.WhichOneof("stream_option")
            if kind not in ("stream", "all"):
                raise M.Failure(grpc.StatusCode.INVALID_ARGUMENT, "a read names a stream or $all")
            if options.WhichOneof("count_option") == "subscription":
                yield from self._subscribe(context, options, kind, wanted, window, structured)
                return
            count = options.count if options.count < FOREVER else None
            if kind == "stream":
                events = self._read_stream(context, options.stream, backward, count)
            else:
                events = self._read_all(context, options.all, backward, count, wanted)
            for event in events:
                if not context.is_active():
                    return
                yield ReadResp(event=M.recorded_event(event, structured))
        except StreamNotFound as missing:
            yield ReadResp(stream_not_found=ReadResp.StreamNotFound(
                stream_identifier=shared_pb2.StreamIdentifier(stream_name=missing.stream.encode())))
        except Exception as exc:
            M.failure(exc).abort(context)

    def _read_stream(self, context: grpc.ServicerContext, options: Any, backward: bool,
                     count: int | None) -> Iterator[RecordedEvent]:
        stream = M.stream_name(options.stream_identifier)
        where = options.WhichOneof("revision_option")
        version = options.revision if where == "revision" else (END if where == "end" or backward else 0)
        if where == "end" and not backward:
            return  # forwards from the end: nothing yet
        left = count
        while left is None or left > 0:
            want = PAGE if left is None else min(PAGE, left)
            page = self._call(context, self.db.read_stream, stream, version, backward=backward, count=want)
            yield from page
            if left is not None:
                left -= len(page)
            if len(page) < want:
                return
            version = page[-1].version + (-1 if backward else 1)
            if version < 0:
                return

    def _read_all(self, context: grpc.ServicerContext, options: Any, backward: bool, count: int | None,
                  wanted: Callable[[RecordedEvent], bool] | None) -> Iterator[RecordedEvent]:
        where = options.WhichOneof("all_option")
        left = count
        if backward:
            # Before the position named (exclusive), newest first.
            upper = None if where != "position" else M.from_commit(options.position.commit_position)
            if where == "start":
                return
            while left is None or left > 0:
                page = self._call(context, _all_before, self.db, upper, PAGE)
                for event in page:
                    if wanted is None or wanted(event):
                        yield event
                        if left is not None:
                            left -= 1
                            if left == 0:
                                return
                if len(page) < PAGE:
                    return
                upper = page[-1].position
            return
        if where == "end":
            return
        at = 0 if where != "position" else max(0, M.from_commit(options.position.commit_position))
        while left is None or left > 0:
            page = self._call(context, self.db.read_all, at, PAGE)
            for event in page:
                if wanted is None or wanted(event):
                    yield event
                    if left is not None:
                        left -= 1
                        if left == 0:
                            return
            if len(page) < PAGE:
                return
            at = page[-1].position + 1

    # ------------------------------------------------------------------ subscribing

    def _subscribe(self, context: grpc.ServicerContext, options: Any, kind: str,
                   wanted: Callable[[RecordedEvent], bool] | None, window: int,
                   structured: bool) -> Iterator[ReadResp]:
        db = self.db
        if kind == "stream":
            stream = M.stream_name(options.stream.stream_identifier)
            where = options.stream.WhichOneof("revision_option")
            if where == "revision":
                checkpoint: int | None = options.stream.revision
            elif where == "end":
                checkpoint = self._call(context, _stream_end, db, stream)
            else:
                checkpoint = None
            subscription = db.subscribe_to_stream(stream, checkpoint)
        else:
            where = options.all.WhichOneof("all_option")
            if where == "position":
                checkpoint = M.from_commit(options.all.position.commit_position)
                checkpoint = None if checkpoint < 0 else checkpoint
            elif where == "end":
                checkpoint = self._call(context, db.log_end)
            else:
                checkpoint = None
            subscription = db.subscribe_to_all(checkpoint)
        feed = Feed(subscription)
        self.portal.spawn(feed.run)
        try:
            yield ReadResp(confirmation=ReadResp.SubscriptionConfirmation(subscription_id=str(uuid.uuid4())))
            yield from self._follow(context, feed, kind, checkpoint, wanted, window, structured)
        finally:
            with contextlib.suppress(PortalClosed):
                self.portal.call(feed.close)

    def _follow(self, context: grpc.ServicerContext, feed: Feed, kind: str, last: int | None,
                wanted: Callable[[RecordedEvent], bool] | None, window: int,
                structured: bool) -> Iterator[ReadResp]:
        """Relay the feed; `last` is the checkpoint of the last event relayed (or skipped by
        the filter), reported in checkpoints and in the caught-up message."""
        caught_up = False
        scanned = 0
        while context.is_active():
            events, now_caught_up, ended = self.portal.call(feed.pull, POLL)
            for event in events:
                scanned += 1
                last = event.version if kind == "stream" else event.position
                if wanted is None or wanted(event):
                    yield ReadResp(event=M.recorded_event(event, structured))
                elif kind == "all" and window and scanned % window == 0:
                    yield _checkpoint(event.position)
            if now_caught_up and not caught_up:
                caught_up = True
                if kind == "all" and wanted is not None and last is not None:
                    yield _checkpoint(last)
                yield _caught_up(kind, last)
            if ended:
                return  # a stream ending in a tombstone


def _checkpoint(store_position: int) -> ReadResp:
    commit = M.to_commit(store_position)
    reply = ReadResp(checkpoint=ReadResp.Checkpoint(commit_position=commit, prepare_position=commit))
    reply.checkpoint.timestamp.GetCurrentTime()
    return reply


def _caught_up(kind: str, checkpoint: int | None) -> ReadResp:
    reply = ReadResp(caught_up=ReadResp.CaughtUp())
    reply.caught_up.timestamp.GetCurrentTime()
    if checkpoint is not None:
        if kind == "stream":
            reply.caught_up.stream_revision = checkpoint
        else:
            commit = M.to_commit(checkpoint)
            reply.caught_up.position.commit_position = commit
            reply.caught_up.position.prepare_position = commit
    return reply


# ----------------------------------------------------------------------------- trio side


class Feed:
    """A catch-up subscription running as a task of the store's trio run, handing its
    events to the gRPC handler through a bounded channel (a slow client holds the
    subscription back rather than piling events up).

    The subscription is never cancelled in the middle of a read: a read cut short could
    have moved the subscription past events it had not handed over yet. The handler's
    waiting is done on the channel instead, where a cancelled receive takes nothing. A
    network failure under a read (a node down) is retried after a pause: the subscription
    had not moved, so nothing is skipped and nothing is delivered twice.
    """

    def __init__(self, subscription: Subscription) -> None:
        self.subscription = subscription
        self.send, self.receive = trio.open_memory_channel[RecordedEvent](2 * PAGE)
        self.scope = trio.CancelScope()

    async def run(self) -> None:
        with self.scope:
            async with self.send:
                while True:
                    try:
                        event = await self.subscription.__anext__()
                    except StopAsyncIteration:
                        return  # a stream ending in a tombstone: the channel closes
                    except E.NetworkError as exc:
                        log.warning("subscription: a read failed (%s); retrying", exc)
                        await trio.sleep(self.subscription.db.store.poll_interval)
                        continue
                    await self.send.send(event)

    async def pull(self, wait: float) -> tuple[list[RecordedEvent], bool, bool]:
        """What has arrived (waiting up to `wait` seconds for the first event), whether the
        subscription has reached the live part, and whether it has ended."""
        out: list[RecordedEvent] = []
        try:
            with trio.move_on_after(wait):
                out.append(await self.receive.receive())
            while len(out) < PAGE:
                out.append(self.receive.receive_nowait())
        except trio.WouldBlock:
            pass
        except trio.EndOfChannel:
            return out, self.subscription.caught_up, True
        return out, self.subscription.caught_up and len(out) < PAGE, False

    async def close(self) -> None:
        self.scope.cancel()


async def _append(db: Database, stream: str, events: list[EventData], expected: int) -> AppendResult:
    """An append; or, for `$metadata` events to a `$$stream`, setting that stream's
    metadata (the store keeps it in the same place, in its own format)."""
    if M.is_metadata_write(stream, events):
        meta = M.metadata_from_protocol(events[-1].data)
        return await db.set_stream_metadata(stream[len(METADATA_STREAM_PREFIX):], meta, expected)
    return await db.append(stream, events, expected)


async def _stream_end(db: Database, stream: str) -> int | None:
    version = await db.stream_version(stream)
    return None if version < 0 else version


async def _all_before(db: Database, upper: int | None, want: int) -> list[RecordedEvent]:
    """Up to `want` events of the log before store position `upper` (its end if None),
    newest first. The log is read forwards, so this reads a window of slots below `upper`,
    doubling it until it holds enough events or reaches the log's start."""
    if upper is None:
        upper = await db.log_end() + 1
    if upper <= 0:
        return []
    top_slot = split_position(upper - 1)[0]
    span = BACKWARD_WINDOW
    while True:
        low = max(0, top_slot - span + 1)
        found: list[RecordedEvent] = []
        at = position(low, 0)
        while at < upper:
            page = await db.read_all(at, PAGE)
            found.extend(e for e in page if e.position < upper)
            if len(page) < PAGE or page[-1].position >= upper - 1:
                break
            at = page[-1].position + 1
        if len(found) >= want or low == 0:
            return found[::-1][:want]
        span *= 2
