"""The network: names, keys, the SAFE data types and their one rules engine, the wire
protocol, routing, the vault store, the node core and process, and the cluster launcher."""

from .data import (
    ANYONE,
    Action,
    Del,
    ImmutableData,
    Ins,
    MDataAddress,
    MutableData,
    PermissionSet,
    Update,
    Value,
)
from .keys import NO_OWNER_KEY, Keypair, PublicKey
from .xorname import XorName

__all__ = [
    "ANYONE",
    "NO_OWNER_KEY",
    "Action",
    "Del",
    "ImmutableData",
    "Ins",
    "Keypair",
    "MDataAddress",
    "MutableData",
    "PermissionSet",
    "PublicKey",
    "Update",
    "Value",
    "XorName",
]
