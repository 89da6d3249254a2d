"""nft rule sets for the integration tests (docs/design.md, "The loop that
records prevent"). nft 1.0.6 wants a newline before each closing brace."""

from __future__ import annotations


def redirect(family: str, daddr: str, dport: int, to_port: int, loop_mark: int = 0x40) -> str:
    """A nat-output rule sending `daddr:dport` to local port `to_port`,
    skipping connections that carry `loop_mark`."""
    address_match = "ip daddr" if family == "ip" else "ip6 daddr"
    return f"""table {family} wfpr {{
  chain out {{
    type nat hook output priority -100;
    meta mark & {loop_mark:#x} == {loop_mark:#x} return
    {address_match} {daddr} tcp dport {dport} redirect to :{to_port}
  }}
}}
"""


def chain(daddr: str, dport: int, proxies: list[tuple[int, int]]) -> str:
    """One redirect per (loop_mark, port), in order: a chain of proxies."""
    lines = "\n".join(
        f"    meta mark & {mark:#x} != {mark:#x} ip daddr {daddr} tcp dport {dport} "
        f"redirect to :{port}"
        for mark, port in proxies
    )
    return f"""table ip wfpr {{
  chain out {{
    type nat hook output priority -100;
{lines}
  }}
}}
"""


# The redirect above without its loop-mark exemption: the most common first
# mistake, which sends the proxy's own upstream back into it.
LOOPING_RULES = """table ip wfpr {
  chain out {
    type nat hook output priority -100;
    ip daddr 127.0.0.2 tcp dport 8080 redirect to :15001
  }
}
"""
