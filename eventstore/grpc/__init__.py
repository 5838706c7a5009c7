"""A KurrentDB-compatible gRPC front door to the event store (docs/grpc.md).

`portal` runs the trio event store in a thread of its own; `streams` implements the
Streams service on it; `server` adds Gossip and ServerFeatures and serves them; `mapping`
converts between the protocol's messages and the store's; `protocol` holds the modules
generated from the protocol's .proto files (`regen` regenerates them).
"""
