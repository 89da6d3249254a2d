"""The doctor's reading of rulesets for diversions without the loop-mark
exemption, on ruleset texts as nft and iptables-save print them."""

from __future__ import annotations

import pytest

from support import linux_only

pytestmark = linux_only

NFT = """table ip wfpr {
\tchain out {
\t\ttype nat hook output priority -100; policy accept;
\t\tmeta mark & 0x00000040 == 0x00000040 return
\t\tip daddr 127.0.0.2 tcp dport 8080 redirect to :15001
\t}
\tchain pre {
\t\ttype nat hook prerouting priority -100; policy accept;
\t\tip daddr 10.0.0.0/8 tcp dport 80 redirect to :15001
\t}
\tchain chained {
\t\tmeta mark & 0x00000080 != 0x00000080 ip daddr 127.0.0.2 tcp dport 8080 redirect to :15002
\t}
}
"""

IPTABLES = """*nat
:OUTPUT ACCEPT [0:0]
:PREROUTING ACCEPT [0:0]
-A OUTPUT -m mark --mark 0x40/0x40 -j RETURN
-A OUTPUT -d 127.0.0.2/32 -p tcp -m tcp --dport 8080 -j REDIRECT --to-ports 15001
-A PREROUTING -p tcp -m tcp --dport 80 -j REDIRECT --to-ports 15001
COMMIT
*mangle
-A PREROUTING -p udp -m udp --dport 53 -j TPROXY --on-port 15353 --tproxy-mark 0x1/0x1
COMMIT
"""


@pytest.mark.parametrize(
    ("tool", "text", "expected"),
    [
        # The exempted chain and the chain whose rule tests a mark itself
        # pass; the prerouting chain has no exemption.
        ("nft", NFT, ["ip daddr 10.0.0.0/8 tcp dport 80 redirect to :15001"]),
        (
            "iptables-save",
            IPTABLES,
            [
                "-A PREROUTING -p tcp -m tcp --dport 80 -j REDIRECT --to-ports 15001",
                "-A PREROUTING -p udp -m udp --dport 53 -j TPROXY --on-port 15353 "
                "--tproxy-mark 0x1/0x1",
            ],
        ),
    ],
)
def test_unexempted_diversions(tool: str, text: str, expected: list[str]) -> None:
    from wfpredirect.cli._doctor_netfilter import unexempted_diversions

    assert unexempted_diversions(tool, text, 0x40) == expected
