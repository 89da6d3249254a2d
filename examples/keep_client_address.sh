#!/bin/sh
# The routing `wfpredirect proxy --keep-client-address` needs on the proxy's
# host (Linux, as root). Each upstream connection leaves from its client's
# address, so the origin's replies are addressed to the client: they must
# be routed to this host, and here delivered to the proxy's socket instead
# of being forwarded to the client. Packets of a socket with IP_TRANSPARENT
# get a mark that a routing rule sends to a table where every address is
# local (as for TPROXY). Run by tests/integration/test_keep_client_address.py.
#
#   sh examples/keep_client_address.sh           # add it
#   sh examples/keep_client_address.sh remove    # take it away
#
# A mark and a routing table this host does not use otherwise:
MARK=${KEEP_CLIENT_MARK:-0x1}
TABLE=${KEEP_CLIENT_TABLE:-100}
set -eu

if [ "${1:-add}" = remove ]; then
    nft delete table inet wfpredirect_keep_client
    ip rule del fwmark "$MARK" lookup "$TABLE"
    ip route del local 0.0.0.0/0 dev lo table "$TABLE"
    ip -6 rule del fwmark "$MARK" lookup "$TABLE"
    ip -6 route del local ::/0 dev lo table "$TABLE"
    exit 0
fi

# [rules]
nft -f - <<NFT
table inet wfpredirect_keep_client {
  chain prerouting {
    type filter hook prerouting priority mangle; policy accept;
    # A reply to an upstream bound to a client's address: for this host.
    meta l4proto tcp socket transparent 1 meta mark set $MARK
  }
}
NFT
ip rule add fwmark "$MARK" lookup "$TABLE"
ip route add local 0.0.0.0/0 dev lo table "$TABLE"
ip -6 rule add fwmark "$MARK" lookup "$TABLE"
ip -6 route add local ::/0 dev lo table "$TABLE"
# [end rules]
