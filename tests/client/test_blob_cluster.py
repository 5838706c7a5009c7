"""A 50 MiB file through a real 8-node cluster: streamed in and out chunk by chunk, and a
1-byte range read from its middle that fetches exactly one content chunk."""

from __future__ import annotations

import hashlib
import random

import pytest
import trio

from client.network import NetworkClient

pytestmark = pytest.mark.cluster
MIB = 1024 * 1024
SIZE = 50 * MIB


MIDDLE = SIZE // 2 + 12345


def _write_file(path) -> tuple[str, bytes]:
    """50 MiB of seeded random bytes (incompressible, like real payloads); its SHA-256 and
    the byte at MIDDLE."""
    rng = random.Random(50)
    digest, at_middle = hashlib.sha256(), b""
    with open(path, "wb") as f:
        for i in range(SIZE // MIB):
            block = rng.randbytes(MIB)
            f.write(block)
            digest.update(block)
            if i == MIDDLE // MIB:
                at_middle = block[MIDDLE % MIB: MIDDLE % MIB + 1]
    return digest.hexdigest(), at_middle


async def test_fifty_mib_round_trip_and_a_one_byte_range_read(healthy_cluster, tmp_path):
    source, copy = tmp_path / "in.bin", tmp_path / "out.bin"
    expected, at_middle = _write_file(source)
    async with NetworkClient.open(healthy_cluster.addresses()) as client:
        with trio.fail_after(300):
            start = trio.current_time()
            name = await client.put_blob(str(source))
            put_s = trio.current_time() - start
            with open(copy, "wb") as sink:
                start = trio.current_time()
                assert await client.get_blob_to(name, sink) == SIZE
                get_s = trio.current_time() - start
        with open(copy, "rb") as f:
            assert hashlib.file_digest(f, "sha256").hexdigest() == expected

        fetched = []
        original = client.get_idata

        async def counting(chunk_name):
            fetched.append(bytes(chunk_name))
            return await original(chunk_name)

        client.get_idata = counting  # type: ignore[method-assign]
        assert await client.read_blob(name, MIDDLE, 1) == at_middle
        content_chunks = [n for n in fetched if n != bytes(name)]
        assert len(content_chunks) == 1
    print(f"\n[blob] 50 MiB put {SIZE / put_s / 1e6:.1f} MB/s, get {SIZE / get_s / 1e6:.1f} MB/s")
