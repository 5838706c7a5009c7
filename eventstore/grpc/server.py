"""The gateway's gRPC server: the Streams service, and what clients ask before using it —
Gossip (the cluster's members: here one, the gateway itself, always leader) and
ServerFeatures (which RPCs are there)."""

from __future__ import annotations

import time
import uuid
from concurrent import futures

import grpc

from . import mapping as M
from . import persistent
from .portal import StorePortal
from .protocol import (
    gossip_pb2,
    gossip_pb2_grpc,
    serverfeatures_pb2,
    serverfeatures_pb2_grpc,
    shared_pb2,
)
from .streams import StreamsService

# The protocol level the gateway speaks, reported to clients that adapt to the server's
# version (the .NET client does): the Streams RPCs as KurrentDB 24.x has them.
PROTOCOL_VERSION = "24.10.0"
MAX_WORKERS = 64  # concurrent calls; each live subscription holds one

STREAMS = "event_store.client.streams.streams"
PERSISTENT = "event_store.client.persistent_subscriptions.persistentsubscriptions"
PERSISTENT_METHODS = ("create", "update", "delete", "read", "getinfo", "list", "replayparked")
SUPPORTED = [
    ("read", STREAMS, ["position", "events"]),
    ("append", STREAMS, []),
    ("batchappend", STREAMS, ["deadline_duration"]),
    ("delete", STREAMS, []),
    ("tombstone", STREAMS, []),
    ("read", "event_store.client.gossip.gossip", []),
    ("getsupportedmethods", "event_store.client.server_features.serverfeatures", []),
]


class GossipService(gossip_pb2_grpc.GossipServicer):
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.instance = uuid.uuid4()

    def Read(self, request: shared_pb2.Empty, context: grpc.ServicerContext) -> gossip_pb2.ClusterInfo:
        member = gossip_pb2.MemberInfo(
            instance_id=M.uuid_to_proto(self.instance, structured=False),
            time_stamp=M.now_ticks(),
            state=gossip_pb2.MemberInfo.Leader,
            is_alive=True,
            http_end_point=gossip_pb2.EndPoint(address=self.host, port=self.port),
        )
        return gossip_pb2.ClusterInfo(members=[member])


class FeaturesService(serverfeatures_pb2_grpc.ServerFeaturesServicer):
    def GetSupportedMethods(self, request: shared_pb2.Empty,
                            context: grpc.ServicerContext) -> serverfeatures_pb2.SupportedMethods:
        return serverfeatures_pb2.SupportedMethods(
            event_store_server_version=PROTOCOL_VERSION,
            methods=[serverfeatures_pb2.SupportedMethod(method_name=m, service_name=s, features=f)
                     for m, s, f in SUPPORTED],
        )


class Gateway:
    """A gRPC server on `host:port` (0: any free port) in front of the portal's database."""

    def __init__(self, portal: StorePortal, host: str = "127.0.0.1", port: int = 2113,
                 tls: tuple[bytes, bytes] | None = None, max_workers: int = MAX_WORKERS) -> None:
        self.portal = portal
        self.host = host
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc"),
                                  maximum_concurrent_rpcs=max_workers * 4,
                                  # grpcio shares ports by default: a second server on a
                                  # port in use would quietly take half of its calls.
                                  options=[("grpc.so_reuseport", 0)])
        address = f"{host}:{port}"
        try:
            if tls is None:
                self.port = self.server.add_insecure_port(address)
            else:
                key, chain = tls
                self.port = self.server.add_secure_port(address, grpc.ssl_server_credentials([(key, chain)]))
        except RuntimeError:  # grpcio's way of saying the bind failed
            self.port = 0
        if self.port == 0:
            raise OSError(f"cannot listen on {address} (in use, or not an address of this machine?)")
        from .protocol import streams_pb2_grpc

        streams_pb2_grpc.add_StreamsServicer_to_server(StreamsService(portal), self.server)
        gossip_pb2_grpc.add_GossipServicer_to_server(GossipService(host, self.port), self.server)
        serverfeatures_pb2_grpc.add_ServerFeaturesServicer_to_server(FeaturesService(), self.server)
        if persistent.available():
            from .protocol import persistent_pb2_grpc

            persistent_pb2_grpc.add_PersistentSubscriptionsServicer_to_server(
                persistent.PersistentService(portal), self.server)
            SUPPORTED.extend((m, PERSISTENT, []) for m in PERSISTENT_METHODS)

    def start(self) -> Gateway:
        self.server.start()
        return self

    def stop(self, grace: float = 2.0) -> None:
        self.server.stop(grace).wait()


def wait_forever() -> None:
    while True:
        time.sleep(3600)
