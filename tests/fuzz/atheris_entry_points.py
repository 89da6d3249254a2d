"""atheris harnesses on the Python entry points that parse caller bytes.

Usage: python atheris_entry_points.py TARGET [libFuzzer options] [CORPUS...]

TARGET is one of:
  context      decode_wfpsampler_context: a ValueError naming the problem, or
               two addresses whose fields re-encode (independently, here) to
               the input;
  set_records  set_redirect_records with arbitrary records on a fresh socket:
               a ValueError, or (a valid record) the upstream mark;
  send_records sendmsg_redirect's record parsing: the same answer as
               set_redirect_records gives for the same bytes.

The native module is not built for coverage, so libFuzzer's feedback comes
from this file alone: the mutations are close to random, seeded by the
corpus in tests/fuzz/corpus/.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import sys

import atheris

with atheris.instrument_imports():
    import wfpredirect

SO_MARK = 36  # asm-generic/socket.h
WINDOWS_AF_INET = 2
WINDOWS_AF_INET6 = 23
STORAGE = 128
DISCARD = ("127.0.0.1", 9)


def windows_sockaddr(address: tuple[object, ...]) -> bytes:
    """SOCKADDR_IN / SOCKADDR_IN6 in a zero-padded SOCKADDR_STORAGE."""
    host = ipaddress.ip_address(address[0])
    if host.version == 4:
        body = struct.pack("<H", WINDOWS_AF_INET) + struct.pack(">H", address[1]) + host.packed
    else:
        _, port, flowinfo, scope_id = address
        body = (
            struct.pack("<H", WINDOWS_AF_INET6)
            + struct.pack(">HI", port, flowinfo)
            + host.packed
            + struct.pack("<I", scope_id)
        )
    return body.ljust(STORAGE, b"\0")


def context_target(data: bytes) -> None:
    try:
        remote, local = wfpredirect.decode_wfpsampler_context(data)
    except ValueError as error:
        assert str(error).startswith("decode_wfpsampler_context: WFPSampler context"), error
        return
    # Each half's address fields re-encode to the input; what follows them
    # (a copied kernel structure's bytes) is not read, and an all-zero local
    # half is 0.0.0.0 port 0.
    for address, half in ((remote, data[:STORAGE]), (local, data[STORAGE:])):
        fields = 8 if len(address) == 2 else 28
        if address == ("0.0.0.0", 0) and half == bytes(STORAGE):
            continue
        assert windows_sockaddr(address)[:fields] == half[:fields]


def record_answer(call: object) -> tuple[str, str]:
    try:
        call()  # type: ignore[operator]
    except ValueError as error:
        return ("ValueError", str(error).split(": ", 1)[1])
    except wfpredirect.RedirectPermissionError:
        return ("RedirectPermissionError", "")
    return ("ok", "")


def set_records_target(data: bytes) -> None:
    with socket.socket() as fresh:
        answer = record_answer(lambda: wfpredirect.set_redirect_records(fresh, data))
        mark = fresh.getsockopt(socket.SOL_SOCKET, SO_MARK)
    if answer[0] != "ok":
        assert mark == 0, mark
        return
    # Accepted: a well-formed record whose mark, masked, travelled.
    assert data[:5] == b"WFPR\x01" and len(data) in (18, 38), data
    (record_mark,) = struct.unpack_from(">I", data, 8)
    expected = (record_mark & wfpredirect.MARK_MASK) | wfpredirect.LOOP_MARK
    assert mark == expected, (mark, expected)


def send_records_target(data: bytes) -> None:
    with socket.socket() as fresh, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        reference = record_answer(lambda: wfpredirect.set_redirect_records(fresh, data))
        answer = record_answer(lambda: wfpredirect.sendmsg_redirect(sender, b"x", DISCARD, data))
    assert answer == reference, (answer, reference)


TARGETS = {
    "context": context_target,
    "set_records": set_records_target,
    "send_records": send_records_target,
}


def main() -> None:
    target = TARGETS[sys.argv[1]]
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
