"""A transparent TCP proxy: relays each redirected connection to where its
client meant to go, carrying the redirect records so that the proxy's own
upstream connection is not redirected back into it.

Usage: python transparent_proxy.py [PORT]     (default 15001)
"""

import socket
import sys
import threading

from wfpredirect import RedirectSocket


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
        if destination is None:
            print("refused a connection that was not redirected", flush=True)
            return
        print(f"relaying to {destination[0]} port {destination[1]}", flush=True)
        # The upstream carries the client's redirect records, set before connect.
        with client.create_upstream(timeout=10) as upstream:
            upstream.settimeout(None)
            back = threading.Thread(target=pipe, args=(upstream, client))
            back.start()
            pipe(client, upstream)
            back.join()


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 15001
    listener = RedirectSocket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen()
    print(f"listening on 127.0.0.1 port {port}", flush=True)
    while True:
        client, _ = listener.accept()
        threading.Thread(target=handle, args=(client,), daemon=True).start()


if __name__ == "__main__":
    main()
