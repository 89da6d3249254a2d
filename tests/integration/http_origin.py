"""The origin for the proxy tests: Python's HTTP server on a directory, with a
listen backlog for bursts of clients. Prints "ready" once it listens.

Usage: python http_origin.py DIRECTORY HOST PORT
"""

from __future__ import annotations

import functools
import sys
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

#: At least the 200 clients of the parallel test, arriving at once.
BACKLOG = 1024


class Server(ThreadingHTTPServer):
    request_queue_size = BACKLOG
    daemon_threads = True


class Handler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        # One line per request on stderr, like http.server's own log.
        sys.stderr.write(format % args + "\n")


def main() -> None:
    directory, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    handler = functools.partial(Handler, directory=directory)
    with Server((host, port), handler) as server:
        print("ready", flush=True)
        server.serve_forever()


if __name__ == "__main__":
    main()
