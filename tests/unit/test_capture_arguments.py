"""A capture's targets in their text form (the command line's SPEC), and the
arguments Capture refuses before anything is installed."""

from __future__ import annotations

import errno
import ipaddress

import pytest

import wfpredirect
from wfpredirect import Capture, CaptureTarget, _nftables

FORM = "(the form is [tcp:|udp:]ADDRESS[/PREFIX][:PORTS])"


@pytest.mark.parametrize(
    ("spec", "protocol", "network", "ports"),
    [
        ("tcp:127.0.0.2:8080", "tcp", "127.0.0.2/32", ((8080, 8080),)),
        ("127.0.0.2:8080", "tcp", "127.0.0.2/32", ((8080, 8080),)),
        ("tcp:0.0.0.0/0:80,443", "tcp", "0.0.0.0/0", ((80, 80), (443, 443))),
        ("tcp:10.0.0.0/8:1000-2000,22", "tcp", "10.0.0.0/8", ((1000, 2000), (22, 22))),
        ("tcp:[::1]:8080", "tcp", "::1/128", ((8080, 8080),)),
        ("tcp:[::]/0:80", "tcp", "::/0", ((80, 80),)),
        ("[2001:db8::]/32", "tcp", "2001:db8::/32", ()),
        ("udp:127.0.0.3:5353", "udp", "127.0.0.3/32", ((5353, 5353),)),
        ("udp:127.0.0.3", "udp", "127.0.0.3/32", ()),
        ("tcp:1.2.3.4:65535", "tcp", "1.2.3.4/32", ((65535, 65535),)),
    ],
)
def test_a_spec_is_read(
    spec: str, protocol: str, network: str, ports: tuple[tuple[int, int], ...]
) -> None:
    target = CaptureTarget.parse(spec)
    assert (target.protocol, target.network, target.ports) == (
        protocol,
        ipaddress.ip_network(network),
        ports,
    )
    assert CaptureTarget.parse(str(target)) == target


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("", "no address"),
        ("tcp:", "no address"),
        ("tcp:::1:80", "an IPv6 address goes in brackets, as in [::1]:8080"),
        ("tcp:[::1", "no ']' after the IPv6 address"),
        ("tcp:[127.0.0.1]:80", "'127.0.0.1' in brackets is not an IPv6 address"),
        ("tcp:[::1]x:80", "'x' after the address"),
        ("tcp:127.0.0.1/8:80", "127.0.0.1/8 has host bits set"),
        ("tcp:127.0.0.1/33", "'127.0.0.1/33' does not appear to be an IPv4 or IPv6 network"),
        ("icmp:127.0.0.1", "'icmp' is neither tcp, udp nor an address"),
        ("udp:tcp:127.0.0.1", "'tcp' is neither tcp, udp nor an address"),
        ("abc", "'abc' does not appear to be an IPv4 or IPv6 network"),
        ("tcp:127.0.0.1:0", "port '0' is not within 1-65535"),
        ("tcp:127.0.0.1:65536", "port '65536' is not within 1-65535"),
        ("tcp:127.0.0.1:", "'' is not a port or a range N-M"),
        ("tcp:127.0.0.1:80,", "'' is not a port or a range N-M"),
        ("tcp:127.0.0.1:http", "'http' is not a port or a range N-M"),
        ("tcp:127.0.0.1:9-8", "range '9-8' ends before it starts"),
        ("tcp:127.0.0.1:1-2-3", "'1-2-3' is not a port or a range N-M"),
    ],
)
def test_a_bad_spec_says_what_is_wrong(spec: str, problem: str) -> None:
    with pytest.raises(ValueError) as refused:
        CaptureTarget.parse(spec)
    assert str(refused.value) == f"capture {spec!r}: {problem} {FORM}"


@pytest.mark.parametrize(
    ("arguments", "kind", "problem"),
    [
        ({"targets": []}, ValueError, "a capture needs at least one target"),
        (
            {"targets": ["tcp:127.0.0.2:80"]},
            ValueError,
            "tcp_port is needed: a capture target has that protocol",
        ),
        (
            {"targets": ["udp:127.0.0.2:53"], "tcp_port": 15001},
            ValueError,
            "udp_port is needed: a capture target has that protocol",
        ),
        (
            {"targets": ["tcp:127.0.0.2:80"], "tcp_port": 0},
            ValueError,
            "tcp_port 0 is not within 1-65535",
        ),
        (
            {"targets": ["tcp:127.0.0.2:80"], "tcp_port": "15001"},
            TypeError,
            "tcp_port must be an int, not str",
        ),
        (
            {"targets": ["tcp:127.0.0.2:80"], "tcp_port": 15001, "udp_port": 70000},
            ValueError,
            "udp_port 70000 is not within 1-65535",
        ),
        (
            {"targets": ["tcp:127.0.0.2:80"], "tcp_port": 15001, "interface": "a" * 16},
            ValueError,
            f"interface {'a' * 16!r} is not an interface name",
        ),
        (
            {"targets": ["tcp:127.0.0.2:80"], "tcp_port": 15001, "interface": 'e"th0'},
            ValueError,
            "interface 'e\"th0' is not an interface name",
        ),
        (
            {"targets": ["tcp:127.0.0.2:80"], "tcp_port": 15001, "loop_mark": 0},
            ValueError,
            "loop_mark 0 is not a mark (1 to 0xffffffff)",
        ),
        (
            {"targets": ["tcp:127.0.0.2:80"], "tcp_port": 15001, "loop_mark": 0x41},
            ValueError,
            "loop_mark 0x41 shares bit 0x1 with the route mark of UDP captures",
        ),
        (
            {"targets": ["tcp:127.0.0.2:80:90"], "tcp_port": 15001},
            ValueError,
            "capture 'tcp:127.0.0.2:80:90': an IPv6 address goes in brackets, as in "
            f"[::1]:8080 {FORM}",
        ),
    ],
)
def test_capture_refuses_bad_arguments_before_installing(
    arguments: dict[str, object], kind: type[Exception], problem: str
) -> None:
    with pytest.raises(kind) as refused:
        Capture(**arguments)  # type: ignore[arg-type]
    assert str(refused.value) == problem


def test_a_target_object_is_checked() -> None:
    with pytest.raises(ValueError) as refused:
        CaptureTarget("sctp", ipaddress.ip_network("127.0.0.1"))  # type: ignore[arg-type]
    assert str(refused.value) == "protocol 'sctp' is not 'tcp' or 'udp'"
    with pytest.raises(ValueError) as refused:
        CaptureTarget("tcp", ipaddress.ip_network("127.0.0.1"), ((10, 5),))
    assert str(refused.value) == "port range 10-5 is not within 1-65535"


def test_each_capture_has_its_own_table() -> None:
    first = Capture("tcp:127.0.0.2:80", tcp_port=15001)
    second = Capture("tcp:127.0.0.2:80", tcp_port=15001)
    assert first.table != second.table
    assert first.table.startswith("wfpredirect_") and not first.installed


@pytest.mark.skipif(
    wfpredirect.BACKEND != "netfilter", reason="Linux: elsewhere no library is loaded"
)
def test_a_missing_libnftables_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    # A library name that no system has, as when libnftables1 is not installed.
    monkeypatch.setattr(_nftables, "LIBRARY", "libnftables.so.0-missing")
    monkeypatch.setattr(_nftables, "_library", None)
    with pytest.raises(wfpredirect.UnsupportedError) as refused:
        Capture("tcp:127.0.0.2:80", tcp_port=15001).install()
    assert refused.value.errno == errno.ENOENT
    assert str(refused.value) == (
        "[Errno 2] a capture needs libnftables.so.0-missing (nftables' library), which cannot "
        "be loaded (libnftables.so.0-missing: cannot open shared object file: No such file or "
        "directory): apt-get install libnftables1"
    )


def test_the_ruleset_starts_every_chain_with_the_exemption() -> None:
    """The table a capture loads (the integration tests load it into the
    kernel): TCP by redirect, UDP by TPROXY with the route mark, the
    interface's chains with --capture-interface."""
    capture = Capture(
        ["tcp:127.0.0.2:8080", "tcp:[::]/0:80,443", "udp:127.0.0.3:5353", "udp:10.0.0.0/8"],
        tcp_port=15001,
        udp_port=15353,
        loop_mark=0x80,
        interface="eth1",
    )
    assert capture.ruleset.replace(capture.table, "NAME") == (
        "table inet NAME {\n"
        "  flags owner\n"
        "  chain tcp_output {\n"
        "    type nat hook output priority -100; policy accept;\n"
        "    meta mark & 0x80 == 0x80 return\n"
        "    ip daddr 127.0.0.2 tcp dport 8080 redirect to :15001\n"
        "    meta nfproto ipv6 tcp dport { 80, 443 } redirect to :15001\n"
        "  }\n"
        "  chain tcp_prerouting {\n"
        "    type nat hook prerouting priority -100; policy accept;\n"
        "    meta mark & 0x80 == 0x80 return\n"
        '    iifname { "eth1" } ip daddr 127.0.0.2 tcp dport 8080 redirect to :15001\n'
        '    iifname { "eth1" } meta nfproto ipv6 tcp dport { 80, 443 } redirect to :15001\n'
        "  }\n"
        "  chain udp_output {\n"
        "    type route hook output priority -150; policy accept;\n"
        "    meta mark & 0x80 == 0x80 return\n"
        "    ip daddr 127.0.0.3 udp dport 5353 meta mark set meta mark | 0x1\n"
        "    ip daddr 10.0.0.0/8 meta l4proto udp meta mark set meta mark | 0x1\n"
        "  }\n"
        "  chain udp_prerouting {\n"
        "    type filter hook prerouting priority -150; policy accept;\n"
        "    meta mark & 0x80 == 0x80 return\n"
        '    iifname { "lo", "eth1" } ip daddr 127.0.0.3 udp dport 5353 tproxy ip to :15353 '
        "meta mark set meta mark | 0x1 accept\n"
        '    iifname { "lo", "eth1" } ip daddr 10.0.0.0/8 meta l4proto udp tproxy ip to :15353 '
        "meta mark set meta mark | 0x1 accept\n"
        "  }\n"
        "}\n"
    )
