#!/usr/bin/env bash
# Build a throw-away network namespace with the redirect rules of one case,
# start an origin in it, print how to start `wfpredirect proxy` and the client
# command, and remove everything on exit or Ctrl-C. Loopback addresses only
# (127.0.0.0/8, ::1): no traffic leaves the machine.
#
# Usage: examples/namespace.sh [OPTIONS] [-- COMMAND...]     (as root)
#
#   --rules nft|iptables|capture
#                           the rule language (default nft; iptables is
#                           iptables-nft, Debian's `iptables` package), or
#                           capture: no rules here, the proxy's --capture
#                           installs its own while it runs (cases local,
#                           gateway and tproxy-udp, --exempt mark)
#   --family 4|6            IPv4 or IPv6 (default 4)
#   --case CASE             local       REDIRECT in OUTPUT: connections this host makes
#                           gateway     REDIRECT in PREROUTING: connections arriving
#                                       from a client namespace through a veth pair
#                           tproxy-tcp  TPROXY in PREROUTING, with its policy routing
#                           tproxy-udp  the same for UDP flows
#                           (default local)
#   --exempt mark|owner     how the proxy's own upstream traffic skips the rule:
#                           by the loop mark it carries (default), or by the uid
#                           of its socket (root's, with --case local only)
#   --loop-mark N           the proxy's LOOP_MARK (default 0x40)
#   --name NAME             the namespace's name (default wfpr; the gateway
#                           case adds NAME-client)
#
# Without COMMAND it waits until Ctrl-C (or SIGTERM). With COMMAND it runs
# COMMAND inside the namespace, removes everything and exits with COMMAND's
# status; COMMAND finds the case in its environment:
#   WFPR_NETNS         the namespace of the origin and the proxy
#   WFPR_CLIENT_NETNS  the namespace the client runs in (the same but for gateway)
#   WFPR_PROXY         the proxy's command line
#   WFPR_CLIENT        the client's command line (run it in WFPR_CLIENT_NETNS)
#
# Refused (exit status 2, with the reason): --family 6 --case gateway,
# --exempt owner with any case but local, and --rules capture with
# --case tproxy-tcp or --exempt owner. docs/recipes.md explains each case.
set -euo pipefail

readonly program=namespace.sh
readonly tcp_port=8080 udp_port=5353 proxy_port=15001 udp_proxy_port=15353
readonly body="hello from the origin (namespace.sh)"
readonly route_table=100 route_mark=0x1

usage() {
    sed -n '7,/^[^#]/s/^# \{0,1\}//p' "$0"
}

refuse() {
    echo "$program: $1" >&2
    exit 2
}

rules=nft family=4 case=local exempt=mark loop_mark=0x40 name=wfpr
command=()
while (($#)); do
    case $1 in
        --rules | --family | --case | --exempt | --loop-mark | --name)
            (($# >= 2)) || refuse "$1 needs a value (see --help)"
            option=${1#--} value=$2
            shift 2
            case $option in
                rules) rules=$value ;;
                family) family=$value ;;
                case) case=$value ;;
                exempt) exempt=$value ;;
                loop-mark) loop_mark=$value ;;
                name) name=$value ;;
            esac
            ;;
        -h | --help)
            usage
            exit 0
            ;;
        --)
            shift
            command=("$@")
            break
            ;;
        *) refuse "unknown argument '$1' (see --help)" ;;
    esac
done

[[ $rules =~ ^(nft|iptables|capture)$ ]] || refuse "--rules is nft, iptables or capture, not '$rules'"
[[ $family == 4 || $family == 6 ]] || refuse "--family is 4 or 6, not '$family'"
[[ $case =~ ^(local|gateway|tproxy-tcp|tproxy-udp)$ ]] ||
    refuse "--case is local, gateway, tproxy-tcp or tproxy-udp, not '$case'"
[[ $exempt == mark || $exempt == owner ]] || refuse "--exempt is mark or owner, not '$exempt'"
[[ $loop_mark =~ ^(0x[0-9a-fA-F]{1,8}|[1-9][0-9]{0,9})$ ]] ||
    refuse "--loop-mark is a number (decimal, or 0x and hex digits), not '$loop_mark'"
[[ $name =~ ^[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,40}$ ]] ||
    refuse "--name is letters, digits, '_', '.' and '-', not '$name'"
if [[ $family == 6 && $case == gateway ]]; then
    refuse "--family 6 --case gateway is refused: IPv6 has one loopback address, ::1, which\
 Linux keeps on lo (\"Cannot assign loopback address on this device\") and drops on any\
 other interface, so no loopback-only address can sit on the veth pair a gateway needs;\
 a real IPv6 gateway redirects on its real interfaces (docs/recipes.md)"
fi
if [[ $exempt == owner && $case != local ]]; then
    refuse "--exempt owner works with --case local only: in PREROUTING a packet has no\
 local socket, so there is no owner to match (meta skuid, -m owner); use --exempt mark"
fi
if [[ $rules == capture && $case == tproxy-tcp ]]; then
    refuse "--rules capture diverts TCP with REDIRECT (--case local or gateway) and UDP with\
 TPROXY (--case tproxy-udp): --case tproxy-tcp needs --rules nft or iptables"
fi
if [[ $rules == capture && $exempt == owner ]]; then
    refuse "--rules capture exempts the proxy's traffic by its loop mark: use --exempt mark"
fi
((EUID == 0)) || refuse "needs root (network namespaces and rules): sudo $0 $*"
needed=(ip nsenter python3)
case $rules in
    nft) needed+=(nft) ;;
    iptables) needed+=("$([[ $family == 4 ]] && echo iptables || echo ip6tables)") ;;
esac
[[ $exempt == owner ]] && needed+=(setpriv)
for tool in "${needed[@]}"; do
    command -v "$tool" >/dev/null || refuse "needs $tool, which is not on PATH"
done

# [addresses]
# The origin and the proxy's addresses. IPv4 has all of 127.0.0.0/8 on lo,
# so the origin gets an address of its own; IPv6 has ::1 alone, and the
# ports tell the origin and the proxy apart.
if [[ $family == 4 ]]; then
    origin=127.0.0.2 url_host=127.0.0.2
    listen=127.0.0.1 listen_any=0.0.0.0 any_address=0.0.0.0/0
    nft_family=ip daddr="ip daddr" iptables=iptables
else
    origin=::1 url_host="[::1]"
    listen="[::1]" listen_any="[::]" any_address=::/0
    nft_family=ip6 daddr="ip6 daddr" iptables=ip6tables
fi
# The gateway case's veth pair: one end in each namespace, with addresses
# from 127.0.0.0/8 too (route_localnet lets them leave lo).
gateway_end=to-client gateway_address=127.1.0.1
client_end=to-gateway client_address=127.1.0.2
# [/addresses]

# [exemption]
# The proxy's own upstream connections (and datagrams) must skip the
# diverting rule: by the loop mark that wfpredirect puts on them, or (only
# where a packet still has its socket: OUTPUT) by the uid that owns them,
# here root's, which runs the proxy.
nft_exemption() {
    if [[ $exempt == mark ]]; then
        echo "meta mark & $loop_mark == $loop_mark return"
    else
        echo "meta skuid 0 return"
    fi
}
iptables_exemption() { # $1: the table, $2: the chain
    if [[ $exempt == mark ]]; then
        echo "$iptables -t $1 -A $2 -m mark --mark $loop_mark/$loop_mark -j RETURN"
    else
        echo "$iptables -t $1 -A $2 -m owner --uid-owner 0 -j RETURN"
    fi
}
# [/exemption]

# [nft rules]
nft_rules() {
    case $case in
        local) cat <<NFT ;;
table $nft_family wfpr {
  chain output {
    type nat hook output priority -100;
    $(nft_exemption)
    $daddr $origin tcp dport $tcp_port redirect to :$proxy_port
  }
}
NFT
        gateway) cat <<NFT ;;
table ip wfpr {
  chain prerouting {
    type nat hook prerouting priority -100;
    $(nft_exemption)
    iifname "$gateway_end" ip daddr $origin tcp dport $tcp_port redirect to :$proxy_port
  }
}
NFT
        tproxy-tcp | tproxy-udp)
            local protocol=${case#tproxy-} port=$tcp_port to=$proxy_port
            [[ $protocol == udp ]] && port=$udp_port to=$udp_proxy_port
            cat <<NFT
table $nft_family wfpr {
  chain prerouting {
    type filter hook prerouting priority mangle;
    $(nft_exemption)
    $daddr $origin $protocol dport $port tproxy to :$to meta mark set meta mark | $route_mark accept
  }
}
NFT
            ;;
    esac
}
# [/nft rules]

# [iptables rules]
iptables_rules() {
    case $case in
        local)
            iptables_exemption nat OUTPUT
            echo "$iptables -t nat -A OUTPUT -d $origin -p tcp --dport $tcp_port -j REDIRECT --to-ports $proxy_port"
            ;;
        gateway)
            iptables_exemption nat PREROUTING
            echo "$iptables -t nat -A PREROUTING -i $gateway_end -d $origin -p tcp --dport $tcp_port -j REDIRECT --to-ports $proxy_port"
            ;;
        tproxy-tcp | tproxy-udp)
            local protocol=${case#tproxy-} port=$tcp_port to=$proxy_port
            [[ $protocol == udp ]] && port=$udp_port to=$udp_proxy_port
            iptables_exemption mangle PREROUTING
            echo "$iptables -t mangle -A PREROUTING -d $origin -p $protocol --dport $port -j TPROXY --on-port $to --tproxy-mark $route_mark/$route_mark"
            ;;
    esac
}
# [/iptables rules]

# [tproxy routing]
# TPROXY leaves the destination as it is: the packets it marked are routed
# to this host by a table whose one route makes every address local.
tproxy_routing() {
    echo "ip -$family rule add fwmark $route_mark/$route_mark lookup $route_table"
    echo "ip -$family route add local $any_address dev lo table $route_table"
}
# [/tproxy routing]

# [gateway links]
# The client namespace reaches the gateway through a veth pair. Its lo
# keeps 127.0.0.1 alone (not 127.0.0.0/8), so that the origin's address is
# routed out through the veth, from the veth's address. route_localnet lets
# 127.0.0.0/8 addresses be used on an interface other than lo: only this
# loopback-only demonstration needs it.
gateway_links() {
    echo "ip -n $name link add $gateway_end type veth peer name $client_end netns $client_ns"
    echo "ip -n $name addr add $gateway_address/30 dev $gateway_end"
    echo "ip -n $client_ns addr add $client_address/30 dev $client_end"
    echo "ip -n $client_ns addr del 127.0.0.1/8 dev lo"
    echo "ip -n $client_ns addr add 127.0.0.1/32 dev lo"
    echo "ip -n $name link set $gateway_end up"
    echo "ip -n $client_ns link set $client_end up"
    echo "ip -n $client_ns route add $origin/32 via $gateway_address dev $client_end src $client_address"
}
gateway_sysctls() {
    echo "$name net/ipv4/conf/$gateway_end/route_localnet"
    echo "$client_ns net/ipv4/conf/$client_end/route_localnet"
}
# [/gateway links]

client_ns=$name
[[ $case == gateway ]] && client_ns=$name-client
namespaces=()
started=()
workdir=

in_namespace() { # $1: the namespace, then the command
    nsenter --net="/run/netns/$1" -- "${@:2}"
}

run_lines() { # $1: the namespace; each line on stdin a command
    local line words
    while read -r line; do
        read -ra words <<<"$line"
        in_namespace "$1" "${words[@]}"
    done
}

cleanup() {
    local status=$? pid ns leftover
    # A child that bash forked and that is not yet its program inherits
    # this trap: the script's own shell alone cleans up.
    [[ $BASHPID == "$$" ]] || exit "$status"
    trap - EXIT INT TERM
    set +e
    for pid in "${started[@]}"; do kill "$pid" 2>/dev/null; done
    for pid in "${started[@]}"; do wait "$pid" 2>/dev/null; done
    for ns in "${namespaces[@]}"; do
        # What COMMAND (or you) started in there and left running.
        leftover=$(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ')
        if [[ -n ${leftover// /} ]]; then
            echo "$program: stopping what is still running in $ns: $leftover" >&2
            # shellcheck disable=SC2086 # one pid a word
            kill $leftover 2>/dev/null
            for _ in $(seq 50); do
                [[ -z $(ip netns pids "$ns" 2>/dev/null) ]] && break
                sleep 0.1
            done
            leftover=$(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ')
            # shellcheck disable=SC2086
            [[ -n ${leftover// /} ]] && kill -KILL $leftover 2>/dev/null
        fi
        ip netns del "$ns"
    done
    [[ -n $workdir ]] && rm -rf "$workdir"
    if ((${#namespaces[@]})); then
        echo "$program: removed ${namespaces[*]}" >&2
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
if ((${#command[@]} == 0)); then
    # What the script waits on until Ctrl-C, started first: a signal that
    # comes while bash forks it could go to the child before it is `sleep`.
    sleep infinity &
    started+=($!)
fi

for ns in "$name" "$client_ns"; do
    [[ -e /run/netns/$ns ]] &&
        refuse "the namespace $ns exists already (another $program, or one killed with -9: ip netns del $ns)"
done
ip netns add "$name"
namespaces+=("$name")
if [[ $case == gateway ]]; then
    ip netns add "$client_ns"
    namespaces+=("$client_ns")
fi
for ns in "${namespaces[@]}"; do ip -n "$ns" link set lo up; done
if [[ $case == gateway ]]; then
    gateway_links | run_lines "$name"
    while read -r ns sysctl; do
        in_namespace "$ns" sh -c "echo 1 >/proc/sys/$sysctl"
    done < <(gateway_sysctls)
fi
if [[ $rules == nft ]]; then
    loaded=$(nft_rules)
    in_namespace "$name" nft -f - <<<"$loaded"
elif [[ $rules == iptables ]]; then
    loaded=$(iptables_rules)
    run_lines "$name" <<<"$loaded"
else
    loaded="none: the proxy's --capture installs them, and they go with it"
fi
if [[ $case == tproxy-* && $rules != capture ]]; then
    routing=$(tproxy_routing)
    run_lines "$name" <<<"$routing"
    loaded+=$'\n'$routing
fi

# The origin: an HTTP server, or a UDP server that answers "origin " and
# what it got. The UDP client sends one datagram and prints the answer and
# the address it came from.
workdir=$(mktemp -d /tmp/wfpr-namespace.XXXXXX)
echo "$body" >"$workdir/hello.txt"
cat >"$workdir/udp_origin.py" <<'PYTHON'
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
server = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
# The proxy answers its clients from this very address (a transparent
# socket with SO_REUSEADDR): on one host, the origin must allow that too.
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind((host, port))
print(f"serving UDP on {host} port {port}", flush=True)
while True:
    data, peer = server.recvfrom(65535)
    server.sendto(b"origin " + data, peer)
PYTHON
cat >"$workdir/udp_client.py" <<'PYTHON'
import socket, sys
host, port, text = sys.argv[1], int(sys.argv[2]), sys.argv[3]
client = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
client.settimeout(5)
client.sendto(text.encode(), (host, port))
try:
    answer, source = client.recvfrom(65535)
except TimeoutError:
    sys.exit(f"no answer from {host} port {port} within 5 s")
print(f"{answer.decode()} (from {source[0]} port {source[1]})")
PYTHON
if [[ $case == tproxy-udp ]]; then
    origin_command=(python3 -u "$workdir/udp_origin.py" "$origin" "$udp_port")
    origin_ready="serving UDP on $origin port $udp_port"
else
    origin_command=(python3 -u -m http.server "$tcp_port" --bind "$origin" --directory "$workdir")
    origin_ready="Serving HTTP on"
fi
: >"$workdir/origin.log"
nsenter --net="/run/netns/$name" -- "${origin_command[@]}" >"$workdir/origin.log" 2>&1 &
origin_pid=$!
started+=("$origin_pid")
for _ in $(seq 100); do
    grep -q "$origin_ready" "$workdir/origin.log" && break
    kill -0 "$origin_pid" 2>/dev/null || refuse "the origin did not start: $(cat "$workdir/origin.log")"
    sleep 0.1
done
grep -q "$origin_ready" "$workdir/origin.log" || refuse "the origin was not ready within 10 s"

wfpredirect=$(command -v wfpredirect) ||
    echo "$program: wfpredirect is not on PATH: activate the virtual environment, or give its path" >&2
case $case in
    local | gateway) proxy_flags="--listen $([[ $case == local ]] && echo "$listen" || echo "$listen_any"):$proxy_port" ;;
    tproxy-tcp) proxy_flags="--listen $listen_any:$proxy_port --transparent" ;;
    tproxy-udp) proxy_flags="--listen $listen:$proxy_port --udp $listen_any:$udp_proxy_port" ;;
esac
# [capture]
# The one-command way: the proxy diverts what it relays itself, in a table
# that goes with it (docs/recipes.md).
if [[ $rules == capture ]]; then
    if [[ $case == tproxy-udp ]]; then
        proxy_flags+=" --capture udp:$url_host:$udp_port"
    else
        proxy_flags+=" --capture tcp:$url_host:$tcp_port"
    fi
    [[ $case == gateway ]] && proxy_flags+=" --capture-interface $gateway_end"
fi
# [/capture]
export WFPR_NETNS=$name WFPR_CLIENT_NETNS=$client_ns
export WFPR_PROXY="${wfpredirect:-wfpredirect} proxy $proxy_flags --loop-mark $loop_mark"
if [[ $case == tproxy-udp ]]; then
    WFPR_CLIENT="python3 $workdir/udp_client.py $origin $udp_port hello"
else
    WFPR_CLIENT="curl -sS --max-time 10 http://$url_host:$tcp_port/hello.txt"
fi
# Exempt by owner, root's traffic skips the rule: the client runs as nobody.
[[ $exempt == owner ]] && WFPR_CLIENT="setpriv --reuid=65534 --regid=65534 --clear-groups $WFPR_CLIENT"
export WFPR_CLIENT

echo "namespace $name: --rules $rules --family $family --case $case --exempt $exempt (loop mark $loop_mark)"
if [[ $case == gateway ]]; then
    echo "client namespace $client_ns, joined by the veth pair $gateway_end/$client_end:"
    gateway_links | sed 's/^/    /'
    echo "    and route_localnet=1 on $gateway_end and $client_end"
fi
echo "origin: ${origin_command[*]}, pid $origin_pid"
echo "rules:"
# shellcheck disable=SC2001 # each line indented
sed 's/^/    /' <<<"$loaded"
if ((${#command[@]})); then
    set +e
    in_namespace "$name" "${command[@]}"
    status=$?
    set -e
    exit "$status"
fi
echo "start the proxy:"
echo "    ip netns exec $name $WFPR_PROXY"
echo "then the client:"
echo "    ip netns exec $client_ns $WFPR_CLIENT"
echo "Ctrl-C removes everything."
wait "${started[0]}"
