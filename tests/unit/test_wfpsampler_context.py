"""decode_wfpsampler_context on every platform, against contexts built here
byte by byte in Windows layout (AF_INET 2, AF_INET6 23)."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from wfpredirect import decode_wfpsampler_context

STORAGE = 128


def sockaddr_in(host: str, port: int) -> bytes:
    packed = ipaddress.IPv4Address(host).packed
    return (struct.pack("<H", 2) + struct.pack(">H", port) + packed).ljust(STORAGE, b"\0")


def sockaddr_in6(host: str, port: int, flowinfo: int = 0, scope_id: int = 0) -> bytes:
    packed = ipaddress.IPv6Address(host).packed
    body = struct.pack("<H", 23) + struct.pack(">HI", port, flowinfo) + packed
    return (body + struct.pack("<I", scope_id)).ljust(STORAGE, b"\0")


def test_ipv4_context() -> None:
    context = sockaddr_in("192.0.2.7", 443) + sockaddr_in("127.0.0.1", 15001)
    assert decode_wfpsampler_context(context) == (("192.0.2.7", 443), ("127.0.0.1", 15001))


def test_ipv6_context_from_any_buffer() -> None:
    context = sockaddr_in6("2001:db8::1", 8443, 5, 3) + sockaddr_in6("::1", 15001)
    expected = (("2001:db8::1", 8443, 5, 3), ("::1", 15001, 0, 0))
    assert decode_wfpsampler_context(bytearray(context)) == expected
    assert decode_wfpsampler_context(memoryview(context)) == expected


def test_what_a_real_driver_stores() -> None:
    """WFPSampler copies the kernel's whole SOCKADDR_STORAGE: bytes past the
    address (sin_zero, the storage's tail) are not read. A UDP flow's local
    half may be all zeros: 0.0.0.0 port 0."""
    remote = bytearray(sockaddr_in("192.0.2.7", 53))
    remote[8:16] = b"\xde\xad\xbe\xef" * 2
    remote[100] = 0x7F
    local = bytearray(sockaddr_in6("::1", 15001, 0, 2))
    local[28:] = b"\x01" * (STORAGE - 28)
    assert decode_wfpsampler_context(bytes(remote + local)) == (
        ("192.0.2.7", 53),
        ("::1", 15001, 0, 2),
    )
    assert decode_wfpsampler_context(bytes(remote) + bytes(STORAGE)) == (
        ("192.0.2.7", 53),
        ("0.0.0.0", 0),
    )


@pytest.mark.parametrize(
    ("context", "problem"),
    [
        (b"", "WFPSampler context is not 256 bytes (two SOCKADDR_STORAGE)"),
        (sockaddr_in("127.0.0.1", 1), "WFPSampler context is not 256 bytes (two SOCKADDR_STORAGE)"),
        (
            sockaddr_in("127.0.0.1", 1) * 2 + b"\0",
            "WFPSampler context is not 256 bytes (two SOCKADDR_STORAGE)",
        ),
        # Linux's AF_INET6 (10) is not a Windows family.
        (
            struct.pack("<H", 10).ljust(STORAGE, b"\0") + sockaddr_in("127.0.0.1", 1),
            "WFPSampler context: remote address has unknown family",
        ),
        (
            # AF_UNSPEC, but not the all-zero unspecified local address.
            sockaddr_in("127.0.0.1", 1) + struct.pack("<HH", 0, 80).ljust(STORAGE, b"\0"),
            "WFPSampler context: local address has unknown family",
        ),
        # All zeros stands for an unspecified local address, never a remote.
        (
            bytes(STORAGE) + sockaddr_in("127.0.0.1", 1),
            "WFPSampler context: remote address has unknown family",
        ),
    ],
)
def test_invalid_contexts(context: bytes, problem: str) -> None:
    with pytest.raises(ValueError) as caught:
        decode_wfpsampler_context(context)
    assert str(caught.value) == f"decode_wfpsampler_context: {problem}"


def test_not_bytes_like() -> None:
    with pytest.raises(TypeError) as caught:
        decode_wfpsampler_context("context")  # type: ignore[arg-type]
    assert str(caught.value) == (
        "decode_wfpsampler_context: context must be a bytes-like object, not str"
    )
