"""RedirectSocket's own behaviour: accept() like socket.accept(), cached
properties, create_upstream() on a connection that was not redirected."""

from __future__ import annotations

import socket

import wfpredirect
from netns import run_in_netns
from rules import LOOPING_RULES
from test_original_destination import IPV4_RULES, listen
from wfpredirect import RedirectSocket


def accepted_timeouts(cls: type[socket.socket], listener_timeout: float | None) -> object:
    listener = cls(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(listener_timeout)
    client = socket.create_connection(listener.getsockname(), timeout=5)
    conn, _ = listener.accept()
    result = (type(conn).__name__, conn.gettimeout(), conn.getblocking())
    for sock in (conn, client, listener):
        sock.close()
    return result


def test_accept_keeps_the_socket_module_timeout_rules() -> None:
    def body() -> list[tuple[object, object]]:
        results = []
        for default in (None, 3.0):
            socket.setdefaulttimeout(default)
            for listener_timeout in (None, 0.0, 2.0):
                results.append(
                    (
                        accepted_timeouts(socket.socket, listener_timeout),
                        accepted_timeouts(RedirectSocket, listener_timeout),
                    )
                )
        socket.setdefaulttimeout(None)
        return results

    for plain, redirect in run_in_netns(body):
        assert redirect == ("RedirectSocket", *plain[1:])  # type: ignore[index]


def test_properties_are_cached_and_create_upstream_needs_a_redirect() -> None:
    def body() -> dict[str, object]:
        listener = listen(socket.AF_INET, ("127.0.0.1", 15001))
        socket.create_connection(("127.0.0.2", 8080), timeout=5)
        redirected, _ = listener.accept()
        first = redirected.redirect_records
        socket.create_connection(("127.0.0.1", 15001), timeout=5)
        direct, _ = listener.accept()
        try:
            direct.create_upstream()
            upstream_error: object = None
        except wfpredirect.NotRedirectedError as error:
            upstream_error = (error.errno, str(error))
        return {
            "cached": redirected.redirect_records is first and first is not None,
            "direct": (direct.original_destination, direct.redirect_records),
            "upstream_error": upstream_error,
        }

    assert run_in_netns(body, nft_rules=IPV4_RULES) == {
        "cached": True,
        "direct": (None, None),
        "upstream_error": (
            2,
            "[Errno 2] create_upstream: the connection was not redirected and no address was given",
        ),
    }


def test_query_redirect_info_on_any_accepted_socket() -> None:
    """The public query on plain sockets: a redirected connection, a direct
    one, and the listener rule (a connection to a listening address given
    is not redirected)."""

    def body() -> dict[str, object]:
        listener = socket.create_server(("127.0.0.1", 15001))
        client = socket.create_connection(("127.0.0.2", 8080), timeout=5)
        redirected, _ = listener.accept()
        direct_client = socket.create_connection(("127.0.0.1", 15001), timeout=5)
        direct, _ = listener.accept()
        info = wfpredirect.query_redirect_info(redirected)
        result = {
            "redirected": (info.records is not None, info.context, info.original_destination),
            "by fileno": wfpredirect.query_redirect_info(redirected.fileno()) == info,
            "direct": wfpredirect.query_redirect_info(direct),
            "to a listener given": wfpredirect.query_redirect_info(
                redirected, [("127.0.0.2", 8080)]
            ),
        }
        for sock in (client, redirected, direct_client, direct, listener):
            sock.close()
        return result

    assert run_in_netns(body, nft_rules=IPV4_RULES) == {
        "redirected": (True, None, ("127.0.0.2", 8080)),
        "by fileno": True,
        "direct": wfpredirect.RedirectInfo(None, None, None),
        "to a listener given": wfpredirect.RedirectInfo(None, None, None),
    }


def test_an_upstream_coming_back_is_a_loop_error() -> None:
    """Without the loop-mark exemption, create_upstream's connection is
    redirected back to the listener: the connection it makes there raises
    RedirectLoopError, naming the rule to add."""

    def body() -> dict[str, object]:
        listener = listen(socket.AF_INET, ("127.0.0.1", 15001))
        client = socket.create_connection(("127.0.0.2", 8080), timeout=5)
        redirected, _ = listener.accept()
        upstream = redirected.create_upstream(timeout=5)
        came_back, _ = listener.accept()
        try:
            answer: object = came_back.redirect_info
        except wfpredirect.RedirectLoopError as error:
            answer = (error.errno, str(error), upstream.getsockname()[1])
        upstream.close()
        # Closed, the upstream is forgotten: a connection from its address
        # would be an ordinary one again.
        after = wfpredirect.query_redirect_info(came_back)
        for sock in (came_back, redirected, client, listener):
            sock.close()
        return {"answer": answer, "after close": after.records is not None}

    result = run_in_netns(body, nft_rules=LOOPING_RULES)
    errno_value, message, port = result["answer"]  # type: ignore[misc]
    assert (errno_value, message) == (
        40,
        f"[Errno 40] query_redirect_info: the connection from 127.0.0.1 port {port} is this "
        "process's own upstream connection coming back: the redirect rule does not skip the "
        "loop mark 0x40 (or the upstream carried no records): put "
        "`meta mark & 0x40 == 0x40 return` (nft) or "
        "`iptables -t nat -I OUTPUT -m mark --mark 0x40/0x40 -j RETURN` (iptables) before it",
    )
    assert result["after close"] is True


def test_a_connection_carrying_the_loop_mark_is_a_loop_error() -> None:
    """With tcp_fwmark_accept=1 an accepted connection carries its SYN's
    mark: one carrying LOOP_MARK is a proxy's upstream coming back, whoever
    opened it (here a plain socket, not one of this process's upstreams)."""

    def body() -> object:
        listener = listen(socket.AF_INET, ("127.0.0.1", 15001))
        marked = socket.socket()
        marked.setsockopt(socket.SOL_SOCKET, 36, wfpredirect.LOOP_MARK)  # SO_MARK
        marked.connect(("127.0.0.2", 8080))
        came_back, _ = listener.accept()
        try:
            answer: object = wfpredirect.query_redirect_info(came_back)
        except wfpredirect.RedirectLoopError as error:
            answer = str(error).replace(str(marked.getsockname()[1]), "PORT")
        for sock in (came_back, marked, listener):
            sock.close()
        return answer

    sysctls = {"net.ipv4.tcp_fwmark_accept": "1"}
    assert run_in_netns(body, nft_rules=LOOPING_RULES, sysctls=sysctls) == (
        "[Errno 40] query_redirect_info: the connection from 127.0.0.1 port PORT is a proxy's "
        "upstream connection (it carries the loop mark 0x40) coming back: the redirect rule "
        "does not skip the loop mark 0x40 (or the upstream carried no records): put "
        "`meta mark & 0x40 == 0x40 return` (nft) or "
        "`iptables -t nat -I OUTPUT -m mark --mark 0x40/0x40 -j RETURN` (iptables) before it"
    )
