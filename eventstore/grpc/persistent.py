"""The PersistentSubscriptions service, on the store's persistent subscriptions
(`eventstore.persistent`, `Database.persistent`): Create, Update, Delete, Read (a consumer,
with acks and nacks by event id), GetInfo, List, ReplayParked.

Registered only when the store has persistent subscriptions (see `available`). A consumer
runs as a task of the store's trio run, like a catch-up subscription's feed: it claims
events (the store's group dispatch) and hands them to the gRPC handler through a bounded
channel; a second thread reads the client's acks and nacks and passes them on.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any, Literal

import grpc
import trio

from node import errors as E

from .. import errors as store_errors
from . import mapping as M
from .portal import PortalClosed, StorePortal
from .protocol import persistent_pb2 as P
from .protocol import persistent_pb2_grpc, shared_pb2

log = logging.getLogger(__name__)

ALL = "$all"
POLL = 1.0
TICKS_PER_MS = 10_000


def available() -> bool:
    try:
        importlib.import_module("eventstore.persistent")
    except ImportError:
        return False
    return True


def _failure(exc: BaseException) -> M.Failure:
    exists = getattr(store_errors, "PersistentSubscriptionExists", ())
    missing = getattr(store_errors, "PersistentSubscriptionNotFound", ())
    if exists and isinstance(exc, exists):
        return M.Failure(grpc.StatusCode.ALREADY_EXISTS, str(exc))
    if missing and isinstance(exc, missing):
        return M.Failure(grpc.StatusCode.NOT_FOUND, str(exc))
    return M.failure(exc)


def _source(options: Any, field: str = "stream_option") -> str:
    kind = options.WhichOneof(field)
    if kind == "all":
        return ALL
    if kind == "stream":
        return M.stream_name(options.stream.stream_identifier)
    if kind == "stream_identifier":
        return M.stream_name(options.stream_identifier)
    return M.stream_name(options.stream_identifier)  # the deprecated field of old clients


def _start_from(options: Any) -> Literal["start", "end"] | int:
    """The settings' start: "start", "end", a version, or a store log position for $all."""
    if options.WhichOneof("stream_option") == "all":
        where = options.all.WhichOneof("all_option")
        if where == "position":
            return max(0, M.from_commit(options.all.position.commit_position))
        return "start" if where == "start" else "end"
    if options.WhichOneof("stream_option") == "stream":
        where = options.stream.WhichOneof("revision_option")
        if where == "revision":
            return int(options.stream.revision)
        return "start" if where == "start" else "end"
    return int(options.settings.revision) if options.settings.revision else "start"


def _settings(options: Any) -> Any:
    from ..persistent import PersistentSettings

    s = options.settings
    timeout_ms = (s.message_timeout_ms if s.WhichOneof("message_timeout") == "message_timeout_ms"
                  else s.message_timeout_ticks // TICKS_PER_MS)
    after_ms = (s.checkpoint_after_ms if s.WhichOneof("checkpoint_after") == "checkpoint_after_ms"
                else s.checkpoint_after_ticks // TICKS_PER_MS)
    defaults = PersistentSettings()
    # Create carries the strategy by name; Update only as a deprecated enum, which the
    # gateway ignores (Update keeps the group's strategy, see PersistentService.Update).
    strategy = getattr(s, "consumer_strategy", "") or defaults.consumer_strategy
    return PersistentSettings(
        start_from=_start_from(options),
        resolve_links=s.resolve_links,
        message_timeout=timeout_ms / 1000 if timeout_ms > 0 else defaults.message_timeout,
        max_retry_count=s.max_retry_count,
        live_buffer_size=s.live_buffer_size or defaults.live_buffer_size,
        read_batch_size=s.read_batch_size or defaults.read_batch_size,
        history_buffer_size=s.history_buffer_size or defaults.history_buffer_size,
        checkpoint_after=after_ms / 1000 if after_ms > 0 else defaults.checkpoint_after,
        min_checkpoint_count=s.min_checkpoint_count or defaults.min_checkpoint_count,
        max_checkpoint_count=s.max_checkpoint_count or defaults.max_checkpoint_count,
        max_subscriber_count=s.max_subscriber_count,
        consumer_strategy=strategy,
        extra_statistics=s.extra_statistics,
    )


def _position_text(stream: str, checkpoint: int | None) -> str:
    if checkpoint is None:
        return ""
    if stream == ALL:
        commit = M.to_commit(checkpoint)
        return f"C:{commit}/P:{commit}"
    return str(checkpoint)


def _info(group: Any) -> P.SubscriptionInfo:
    s = group.settings
    start = s.start_from
    if isinstance(start, int) and group.stream == ALL:
        start = f"C:{M.to_commit(start)}/P:{M.to_commit(start)}"
    elif start == "start":
        start = "C:0/P:0" if group.stream == ALL else "0"
    elif start == "end":
        start = "C:-1/P:-1" if group.stream == ALL else "-1"
    return P.SubscriptionInfo(
        event_source=group.stream, group_name=group.group, status=group.status.capitalize(),
        connections=[P.SubscriptionInfo.ConnectionInfo(
            **{"from": c.name}, connection_name=c.name, in_flight_messages=c.in_flight, total_items=c.acked)
            for c in group.consumers],
        total_items=group.delivered,
        last_checkpointed_event_position=_position_text(group.stream, group.last_checkpoint),
        last_known_event_position=_position_text(group.stream, group.last_known), resolve_link_tos=s.resolve_links,
        start_from=str(start), message_timeout_milliseconds=int(s.message_timeout * 1000),
        extra_statistics=s.extra_statistics, max_retry_count=s.max_retry_count, live_buffer_size=s.live_buffer_size,
        buffer_size=s.history_buffer_size, read_batch_size=s.read_batch_size,
        check_point_after_milliseconds=int(s.checkpoint_after * 1000), min_check_point_count=s.min_checkpoint_count,
        max_check_point_count=s.max_checkpoint_count, total_in_flight_messages=group.in_flight,
        outstanding_messages_count=group.in_flight, named_consumer_strategy=s.consumer_strategy,
        max_subscriber_count=s.max_subscriber_count, parked_message_count=group.parked,
        retry_buffer_count=group.replaying,
    )


class Consumer:
    """One gRPC consumer of a group: the store's consumer as a task, its events on a channel."""

    def __init__(self, subscription: Any) -> None:
        self.subscription = subscription
        self.send, self.receive = trio.open_memory_channel[Any](64)
        self.scope = trio.CancelScope()
        self.joined = threading.Event()
        self.error: BaseException | None = None

    async def run(self) -> None:
        with self.scope:
            try:
                async with self.send, self.subscription as sub:
                    self.joined.set()
                    while True:
                        try:
                            message = await sub.__anext__()
                        except StopAsyncIteration:
                            return
                        except E.NetworkError as exc:
                            log.warning("persistent consumer: a read failed (%s); retrying", exc)
                            await trio.sleep(POLL / 4)
                            continue
                        await self.send.send(message)
            except Exception as exc:  # not found, dropped after an update or delete, ...
                self.error = exc
            finally:
                self.joined.set()

    async def pull(self, wait: float) -> tuple[list[Any], bool]:
        out: list[Any] = []
        try:
            with trio.move_on_after(wait):
                out.append(await self.receive.receive())
            while len(out) < 64:
                out.append(self.receive.receive_nowait())
        except trio.WouldBlock:
            pass
        except trio.EndOfChannel:
            return out, True
        return out, False

    async def close(self) -> None:
        self.scope.cancel()


def _ids(message: Any) -> list[uuid.UUID]:
    return [M.uuid_from_proto(i) for i in message.ids]


class PersistentService(persistent_pb2_grpc.PersistentSubscriptionsServicer):
    def __init__(self, portal: StorePortal) -> None:
        self.portal = portal

    @property
    def subs(self) -> Any:
        assert self.portal.db is not None
        return self.portal.db.persistent  # type: ignore[attr-defined]  # eventstore.persistent (kurrent branch)

    def _unary(self, context: grpc.ServicerContext, fn: Any, *args: Any) -> Any:
        try:
            return self.portal.call(fn, *args)
        except Exception as exc:
            _failure(exc).abort(context)
            raise

    def Create(self, request: P.CreateReq, context: grpc.ServicerContext) -> P.CreateResp:
        try:
            settings = _settings(request.options)
        except Exception as exc:
            _failure(exc).abort(context)
            raise
        self._unary(context, self.subs.create, _source(request.options), request.options.group_name, settings)
        return P.CreateResp()

    def Update(self, request: P.UpdateReq, context: grpc.ServicerContext) -> P.UpdateResp:
        try:
            settings = _settings(request.options)
        except Exception as exc:
            _failure(exc).abort(context)
            raise
        source, group = _source(request.options), request.options.group_name
        current = self._unary(context, self.subs.info, source, group)
        settings = replace(settings, consumer_strategy=current.settings.consumer_strategy)
        self._unary(context, self.subs.update, source, group, settings)
        return P.UpdateResp()

    def Delete(self, request: P.DeleteReq, context: grpc.ServicerContext) -> P.DeleteResp:
        self._unary(context, self.subs.delete, _source(request.options), request.options.group_name)
        return P.DeleteResp()

    def GetInfo(self, request: P.GetInfoReq, context: grpc.ServicerContext) -> P.GetInfoResp:
        group = self._unary(context, self.subs.info, _source(request.options), request.options.group_name)
        return P.GetInfoResp(subscription_info=_info(group))

    def List(self, request: P.ListReq, context: grpc.ServicerContext) -> P.ListResp:
        options = request.options
        stream = None
        if options.WhichOneof("list_option") == "list_for_stream":
            which = options.list_for_stream
            stream = ALL if which.WhichOneof("stream_option") == "all" else M.stream_name(which.stream)
        groups = self._unary(context, self.subs.list, stream)
        if stream is not None and not groups:
            M.Failure(grpc.StatusCode.NOT_FOUND, f"no persistent subscriptions on {stream!r}").abort(context)
        return P.ListResp(subscriptions=[_info(g) for g in groups])

    def ReplayParked(self, request: P.ReplayParkedReq, context: grpc.ServicerContext) -> P.ReplayParkedResp:
        options = request.options
        stop_at = options.stop_at if options.WhichOneof("stop_at_option") == "stop_at" else None
        self._unary(context, self.subs.replay_parked, _source(options), options.group_name, stop_at)
        return P.ReplayParkedResp()

    def RestartSubsystem(self, request: shared_pb2.Empty, context: grpc.ServicerContext) -> shared_pb2.Empty:
        return shared_pb2.Empty()  # there is no subsystem: every consumer runs the dispatch itself

    def Read(self, request_iterator: Iterator[P.ReadReq], context: grpc.ServicerContext) -> Iterator[P.ReadResp]:
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("content") != "options":
            M.Failure(grpc.StatusCode.INVALID_ARGUMENT, "a persistent read starts with its options").abort(context)
            return
        options = first.options
        structured = options.uuid_option.WhichOneof("content") == "structured"
        try:
            stream = ALL if options.WhichOneof("stream_option") == "all" else M.stream_name(options.stream_identifier)
            subscription = self.subs.subscribe(stream, options.group_name, context.peer() or "grpc",
                                               buffer_size=max(1, options.buffer_size or 10))
        except Exception as exc:
            _failure(exc).abort(context)
            return
        consumer = Consumer(subscription)
        self.portal.spawn(consumer.run)
        consumer.joined.wait()
        if consumer.error is not None:
            _failure(consumer.error).abort(context)
            return
        acks = threading.Thread(target=self._acks, args=(request_iterator, consumer, context), daemon=True)
        acks.start()
        try:
            yield P.ReadResp(subscription_confirmation=P.ReadResp.SubscriptionConfirmation(
                subscription_id=f"{stream}::{options.group_name}"))
            while context.is_active():
                messages, ended = self.portal.call(consumer.pull, POLL)
                for message in messages:
                    yield _persistent_event(message, structured)
                if ended:
                    if consumer.error is not None:
                        _failure(consumer.error).abort(context)
                    return
        finally:
            with contextlib.suppress(PortalClosed):
                self.portal.call(consumer.close)

    def _acks(self, requests: Iterator[P.ReadReq], consumer: Consumer, context: grpc.ServicerContext) -> None:
        """The client's acks and nacks, passed on as they come (a thread of its own: the
        handler's thread is busy sending events)."""
        from ..persistent import NackAction

        actions = {P.ReadReq.Nack.Park: NackAction.PARK, P.ReadReq.Nack.Retry: NackAction.RETRY,
                   P.ReadReq.Nack.Skip: NackAction.SKIP, P.ReadReq.Nack.Stop: NackAction.STOP}
        try:
            for request in requests:
                kind = request.WhichOneof("content")
                if kind == "ack":
                    self.portal.call(consumer.subscription.ack, *_ids(request.ack))
                elif kind == "nack":
                    action = actions.get(request.nack.action, NackAction.UNKNOWN)
                    self.portal.call(consumer.subscription.nack, action, request.nack.reason, *_ids(request.nack))
        except Exception as exc:  # the call ended, or the store refused: the consumer's timeout covers it
            if context.is_active():
                log.warning("persistent consumer: an ack or nack failed (%s)", exc)


def _persistent_event(message: Any, structured: bool) -> P.ReadResp:
    read = M.recorded_event(message.event, structured)
    event = P.ReadResp.ReadEvent(commit_position=read.commit_position, retry_count=message.retry_count)
    event.event.ParseFromString(read.event.SerializeToString())
    return P.ReadResp(event=event)
