"""The transparent proxy behind a TCP TPROXY rule (Linux): the rule hands
connections to a listener with IP_TRANSPARENT, whose accepted connections
have their original destination as their local address. Everything else is
transparent_proxy.py's: records on the upstream, relayed both ways.

Usage: python tproxy_proxy.py [PORT]     (default 15001; root, or CAP_NET_ADMIN)
"""

import socket
import sys
import threading

from wfpredirect import RedirectSocket

IP_TRANSPARENT = 19  # linux/in.h (socket.IP_TRANSPARENT from Python 3.11)


def pipe(source, destination):
    """Copy one direction until end of stream, then pass the half-close on."""
    try:
        while data := source.recv(65536):
            destination.sendall(data)
        destination.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def handle(client):
    with client:
        destination = client.original_destination
        if destination is None:  # addressed to the listener itself
            print("refused a connection that was not redirected", flush=True)
            return
        print(f"relaying to {destination[0]} port {destination[1]}", flush=True)
        with client.create_upstream(timeout=10) as upstream:
            upstream.settimeout(None)
            back = threading.Thread(target=pipe, args=(upstream, client))
            back.start()
            pipe(client, upstream)
            back.join()


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 15001
    listener = RedirectSocket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", port))
    listener.listen()
    print(f"listening on 0.0.0.0 port {port} (IP_TRANSPARENT)", flush=True)
    while True:
        client, _ = listener.accept()
        threading.Thread(target=handle, args=(client,), daemon=True).start()


if __name__ == "__main__":
    main()
