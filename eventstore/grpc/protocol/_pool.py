"""The descriptor pool of the gateway's protocol modules (see eventstore/grpc/regen.py):
private, so that these message names do not clash with another copy of the protocol (the
kurrentdbclient package's) in the same process. It starts with the well-known types the
protocol uses."""

from google.protobuf import any_pb2, descriptor_pool, duration_pb2, empty_pb2, struct_pb2, timestamp_pb2

POOL = descriptor_pool.DescriptorPool()
for _module in (any_pb2, duration_pb2, empty_pb2, struct_pb2, timestamp_pb2):
    POOL.AddSerializedFile(_module.DESCRIPTOR.serialized_pb)
