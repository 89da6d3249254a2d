"""An independent reader of the netfilter record format (see
csrc/core/netfilter/record.hpp) to cross-check what the native code writes."""

from __future__ import annotations

import ipaddress
import struct


def decode(record: bytes) -> dict[str, object]:
    magic, version, ip_version, flags, zero, mark, port = struct.unpack_from(">4sBBBBIH", record)
    assert (magic, version, zero) == (b"WFPR", 1, 0)
    size = 4 if ip_version == 4 else 16
    host = str(ipaddress.ip_address(record[14 : 14 + size]))
    destination: tuple[object, ...] = (host, port)
    if ip_version == 6:
        destination += struct.unpack_from(">II", record, 30)
    assert len(record) == (18 if ip_version == 4 else 38)
    return {"destination": destination, "mark": mark, "transparent": bool(flags & 1)}


def encode(destination: tuple[object, ...], mark: int = 0, transparent: bool = False) -> bytes:
    address = ipaddress.ip_address(destination[0])
    header = struct.pack(
        ">4sBBBBIH", b"WFPR", 1, address.version, int(transparent), 0, mark, destination[1]
    )
    tail = b""
    if address.version == 6:
        tail = struct.pack(">II", destination[2], destination[3])
    return header + address.packed + tail
