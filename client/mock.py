"""The in-process mock network: the real rules engine behind the client's data API,
in memory or persisted to a file, with hooks to inject delays and failures.

It is what the higher layers test on and what users use for fast unit tests of their own
apps, as SAFE's mock vault was. Every request still goes through the wire encoding and the
signature check, and every decision through `node.rules` — only the network is missing.

    net = MockNetwork()                     # or MockNetwork(path="vault.mock")
    alice = net.client()                    # a DataClient with a fresh key
    name = await alice.put_idata(b"hello")

Hooks (all optional; see `FaultPlan`): a delay per request (virtual time under trio's
MockClock), failures injected for the next N matching requests — either before the
request is applied or *after* it (the reply is lost: the caller sees a timeout although
the mutation took effect, the case safe retries exist for) — and a disconnect switch.
"""

from __future__ import annotations

import os
import random
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import trio

from node import errors as E
from node import rules
from node.accounts import (
    AccountInfo,
    CreateAccount,
    DelAuthKey,
    InsAuthKey,
    account_address,
    authorise,
)
from node.data import ImmutableData, MDataAddress, MutableData
from node.keys import Keypair, PublicKey
from node.requests import (
    REQUEST_ID_LEN,
    SIGNING_DOMAIN,
    GetIData,
    Op,
    PutIData,
    Request,
    apply_mutation,
    read_mdata,
)
from node.xorname import sha3_256

from .api import DataClient

Predicate = Callable[[Request], bool]

_NO_STATE = rules.MDataState()  # an MD nobody made yet (immutable, so one serves all)
# The mock's memo of its own clients' signatures (MockNetwork._own_signatures): at most this
# many requests, holding at most this many bytes of signed fields between them.
_OWN_SIGNATURES = 4096
_OWN_SIGNATURE_BYTES = 8 << 20


@dataclass
class _Injection:
    remaining: int
    error: Callable[[], Exception]
    applied: bool
    when: Predicate


@dataclass
class FaultPlan:
    """What the mock does to requests besides answering them."""

    delay: Callable[[Request], float] | None = None
    disconnected: bool = False
    injections: list[_Injection] = field(default_factory=list)

    def take(self, request: Request) -> _Injection | None:
        for inj in self.injections:
            if inj.remaining > 0 and inj.when(request):
                inj.remaining -= 1
                if inj.remaining == 0:
                    self.injections.remove(inj)
                return inj
        return None


class MockNetwork:
    """One simulated network: every client made by `client()` sees the same data."""

    def __init__(self, path: str | os.PathLike[str] | None = None, *, seed: int | None = None,
                 verify_signatures: bool = True) -> None:
        self.path = Path(path) if path is not None else None
        # Only benchmarks turn this off, to measure the layers above without ed25519's cost.
        self.verify_signatures = verify_signatures
        self.chunks: dict[bytes, bytes] = {}
        self.mdata: dict[MDataAddress, rules.MDataState] = {}
        self.faults = FaultPlan()
        self.requests: Counter[str] = Counter()
        self.rng = random.Random(seed)
        # Requests signed in this process by this network's own clients, by signature. A
        # signature made by the key over a request's signing bytes always verifies, so a
        # decoded request *equal* to one of these (every field, the signature included: the
        # same signing bytes) gets the verifier's answer without its cost; anything else (a
        # forged, altered or foreign request) is verified in full. An operation that signs a
        # digest of what it carries (PutIData) is kept as the requester and a digest of its
        # signing bytes instead, so that no chunk stays in memory for it. Each entry with the
        # bytes it holds; bounded in count and bytes, oldest out.
        self._own_signatures: OrderedDict[bytes, tuple[Request | bytes, int]] = OrderedDict()
        self._own_bytes = 0
        # account_address(owner) hashes the key on every call; it never changes.
        self._account_addresses: dict[PublicKey, MDataAddress] = {}
        if self.path is not None and self.path.exists():
            self._load()

    # ----------------------------------------------------------------- clients

    def client(self, keys: Keypair | None = None, *, owner: PublicKey | None = None) -> MockClient:
        return MockClient(self, keys, owner=owner)

    # ----------------------------------------------------------------- hooks

    def set_delay(self, seconds: float | Callable[[Request], float] | None) -> None:
        """Delay every request (a number, or a function of the request; None for none)."""
        if seconds is None or callable(seconds):
            self.faults.delay = seconds
        else:
            self.faults.delay = lambda _r, s=float(seconds): s

    def fail_next(
        self,
        count: int = 1,
        *,
        error: Callable[[], Exception] = lambda: E.RequestTimeout("injected by the mock network"),
        applied: bool = False,
        when: Predicate = lambda _r: True,
    ) -> None:
        """Make the next `count` requests matching `when` fail with `error`.

        With `applied=True` the request takes effect first and only the reply is lost.
        """
        self.faults.injections.append(_Injection(count, error, applied, when))

    def disconnect(self) -> None:
        self.faults.disconnected = True

    def reconnect(self) -> None:
        self.faults.disconnected = False

    # ----------------------------------------------------------------- serving

    async def handle(self, wire_request: dict[str, Any]) -> Any:
        """Serve one request in its wire form; return its result in wire form."""
        request = Request.from_obj(wire_request)
        self.requests[request.op.KIND] += 1
        if self.faults.disconnected:
            raise E.RequestTimeout("the mock network is disconnected")
        if self.faults.delay is not None:
            await trio.sleep(self.faults.delay(request))
        injection = self.faults.take(request)
        if injection is not None and not injection.applied:
            raise injection.error()
        result = self._apply(request)
        if injection is not None:
            raise injection.error()
        return result

    def _note_signed(self, request: Request) -> None:
        """A client of this network signed `request` here (see `_own_signatures`)."""
        assert request.requester is not None
        signing = request.signing_bytes()
        entry: Request | bytes
        if type(request.op).signed_args is Op.signed_args:
            entry, size = request, len(signing)  # every field of it is in those bytes
        else:
            entry = bytes(request.requester) + sha3_256(signing)
            size = len(entry)
        self._forget_signed(request.signature)  # (the same request signed again)
        self._own_signatures[request.signature] = (entry, size)
        self._own_bytes += size
        while len(self._own_signatures) > _OWN_SIGNATURES or self._own_bytes > _OWN_SIGNATURE_BYTES:
            _signature, (_entry, old) = self._own_signatures.popitem(last=False)
            self._own_bytes -= old

    def _forget_signed(self, signature: bytes) -> Request | bytes | None:
        found = self._own_signatures.pop(signature, None)
        if found is None:
            return None
        self._own_bytes -= found[1]
        return found[0]

    def _verify(self, request: Request) -> None:
        op = request.op
        if op.MUTATES and not op.INTERNAL and request.requester is not None and request.signature:
            made = self._forget_signed(request.signature)
            if made is not None and len(request.request_id) == REQUEST_ID_LEN:
                if isinstance(made, Request):
                    if made == request:
                        # The same fields give the same signing bytes: hand the decoded
                        # request the ones already made, so the rules engine's replay window
                        # does not encode them again (the cache a frozen request keeps for
                        # exactly this; see Request.signed).
                        cache = getattr(request, "__dict__", None)
                        if cache is not None:
                            cache.setdefault("_signing", made.signing_bytes())
                        return
                elif made == bytes(request.requester) + sha3_256(request.signing_bytes()):
                    return
        request.verify()

    def _apply(self, request: Request) -> Any:
        if self.verify_signatures:
            self._verify(request)
        op = request.op
        if op.INTERNAL:
            raise E.InvalidOperation(f"{op.KIND} is made by nodes, not clients")
        charge = self._authorise(request)
        result = self._run(request)
        if charge is not None:
            state = self.mdata[charge]
            assert state.md is not None  # `_authorise` charges only an account whose MD it read
            self.mdata[charge] = rules.MDataState(AccountInfo.of(state.md).charged().to_md(), state.recent)
        return result

    def _authorise(self, request: Request) -> MDataAddress | None:
        """The account checks a ClientManager group makes; returns the account to charge."""
        op = request.op
        if not op.MUTATES or isinstance(op, CreateAccount | InsAuthKey | DelAuthKey):
            return None
        owner, requester = request.account_owner, request.requester
        assert owner is not None and requester is not None
        address = self._account_addresses.get(owner)
        if address is None:
            if len(self._account_addresses) > 4096:
                self._account_addresses.clear()
            address = self._account_addresses[owner] = account_address(owner)
        state = self.mdata.get(address)
        info = AccountInfo.of(state.md) if state and state.md else None
        authorise(info, owner, requester)
        return address if info is not None else None

    def _run(self, request: Request) -> Any:
        op = request.op
        if isinstance(op, PutIData):
            rules.check_idata(op.data)
            if op.data.name not in self.chunks:
                self.chunks[op.data.name] = op.data.value
                self._save()
            return None
        if isinstance(op, GetIData):
            value = self.chunks.get(op.chunk)
            if value is None:
                raise E.NoSuchData(f"no IData {op.chunk.hex()}")
            return op.encode_result(ImmutableData(value))
        address: MDataAddress = op.address  # type: ignore[attr-defined]
        if op.MUTATES:
            state = self.mdata.get(address) or _NO_STATE
            new = apply_mutation(state, request)
            if new is not state:
                self.mdata[address] = new
                self._save()
            return None
        found = self.mdata.get(address)
        return op.encode_result(read_mdata(found.md if found else None, op))

    # ----------------------------------------------------------------- persistence

    def _save(self) -> None:
        if self.path is None:
            return
        blob = msgpack.packb(
            {
                "chunks": [[k, v] for k, v in self.chunks.items()],
                "mdata": [[s.md.to_obj(), list(s.recent)] for s in self.mdata.values() if s.md],
            },
            use_bin_type=True,
        )
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self.path)

    def _load(self) -> None:
        assert self.path is not None
        try:
            obj = msgpack.unpackb(self.path.read_bytes(), raw=False, strict_map_key=False)
            for name, value in obj["chunks"]:
                self.chunks[rules.check_idata_name(name, value).name] = value
            for md_obj, recent in obj["mdata"]:
                md = MutableData.from_obj(md_obj)
                self.mdata[md.address] = rules.MDataState(md, tuple(recent))
        except (OSError, ValueError, KeyError, TypeError, E.SafeError) as exc:
            raise E.CorruptRecord(f"{self.path}: not a readable mock network file ({exc})") from None


class MockClient(DataClient):
    """A DataClient whose requests are served by a MockNetwork in this process."""

    def __init__(self, network: MockNetwork, keys: Keypair | None = None, *,
                 owner: PublicKey | None = None) -> None:
        super().__init__(keys, owner=owner)
        self.network = network

    async def call(self, op: Op, *, request_id: bytes | None = None) -> Any:
        if not op.MUTATES:
            return await self._send(Request(op, self.keys.public))
        request = self._sign(op, request_id)
        self.network._note_signed(request)
        return await self._send(request)

    async def _send(self, request: Request) -> Any:
        result = await self.network.handle(wire_form(request))
        await trio.lowlevel.checkpoint()
        if result is not None:  # (None, a mutation's reply, is the same on both sides of the wire)
            result = msgpack.unpackb(msgpack.packb(result, use_bin_type=True), raw=False)
        return request.op.decode_result(result)


def wire_form(request: Request) -> dict[str, Any]:
    """`request` as a node finds it after the wire: decoded from bytes, so the network never
    holds the client's own objects (and whatever does not survive msgpack fails here).

    A signed request's signing bytes already encode every field of its wire form but the
    signature, when its operation signs its arguments as they are (all but PutIData, which
    signs a hash): those bytes are decoded instead of encoding the request a second time.
    """
    op = request.op
    if request.signature and type(op).signed_args is Op.signed_args:
        signed = msgpack.unpackb(request.signing_bytes(), raw=False)
        if isinstance(signed, list) and len(signed) == 7 and signed[0] == SIGNING_DOMAIN:
            _domain, op_obj, rq, own, rid, net, exp = signed
            return {"op": op_obj, "rq": rq, "rid": rid, "own": own, "sig": request.signature, "net": net, "exp": exp}
    wire: dict[str, Any] = msgpack.unpackb(msgpack.packb(request.to_obj(), use_bin_type=True), raw=False)
    return wire
