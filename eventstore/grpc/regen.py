"""Regenerate the protocol modules in eventstore/grpc/protocol from the .proto files there.

    .venv/bin/python -m eventstore.grpc.regen        (needs grpcio-tools, a dev dependency)

The .proto files describe KurrentDB's public client protocol (the Streams, Gossip and
PersistentSubscriptions services, their shared messages, google.rpc.Status). The
kurrentdbclient package ships only generated modules of them, no .proto sources, so these
were printed from the file descriptors those modules embed (the protocol's own message,
field and service definitions), with imports pointed at this directory;
serverfeatures.proto, which that package lacks, was written by hand. The generated
modules are committed, so running the gateway needs only grpcio and protobuf.

One change is made to protoc's output: every module registers its descriptors in a pool of
its own (`protocol/_pool.py`) instead of protobuf's process-wide default pool. The message
names are the protocol's (`event_store.client.streams.ReadReq`), the same names that the
kurrentdbclient package registers; in the default pool the second registration would fail,
so a process could not hold the gateway and a client at once (our tests do).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent / "protocol"


def main() -> int:
    from grpc_tools import protoc  # a dev dependency: imported only here

    protos = sorted(str(p.relative_to(ROOT)) for p in HERE.glob("*.proto"))
    include = str(Path(protoc.__file__).resolve().parent / "_proto")
    code = protoc.main(["protoc", f"-I{ROOT}", f"-I{include}", f"--python_out={ROOT}", f"--pyi_out={ROOT}",
                        f"--grpc_python_out={ROOT}",
                        *protos])
    if code:
        return code
    for module in HERE.glob("*_pb2.py"):
        text = module.read_text()
        text = text.replace("from google.protobuf import descriptor_pool as _descriptor_pool\n",
                            "from eventstore.grpc.protocol._pool import POOL\n")
        text = text.replace("_descriptor_pool.Default().AddSerializedFile(", "POOL.AddSerializedFile(")
        # Well-known types come from the private pool too (it holds copies of them).
        text = re.sub(r"^from google\.protobuf import (\w+)_pb2 as .*$", "", text, flags=re.M)
        module.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
