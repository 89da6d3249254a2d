/* The floor for benchmarks/bench_calls.py: the system calls each operation
 * makes on a redirected IPv4 connection (docs/design.md, "The operations"), in a
 * C loop with nothing around them. Built with the system compiler as a
 * shared library and called once per batch through ctypes, so the cost of
 * reaching it is spread over the batch. Linux only. */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>

/* linux/netfilter_ipv4.h, which clashes with netinet/in.h. */
#define BENCH_SO_ORIGINAL_DST 80

/* getsockname, then getsockopt(SO_ORIGINAL_DST), compared with the local
 * address. Returns the number of iterations that succeeded. */
static int original_destination_once(int fd) {
    struct sockaddr_in local, original;
    socklen_t size = sizeof local;
    if (getsockname(fd, (struct sockaddr*)&local, &size) != 0)
        return 0;
    size = sizeof original;
    if (getsockopt(fd, SOL_IP, BENCH_SO_ORIGINAL_DST, &original, &size) != 0)
        return 0;
    return original.sin_port != local.sin_port ||
           original.sin_addr.s_addr != local.sin_addr.s_addr;
}

long floor_original_destination(int fd, long iterations) {
    long succeeded = 0;
    for (long i = 0; i < iterations; ++i)
        succeeded += original_destination_once(fd);
    return succeeded;
}

/* The original destination, then getsockopt(SO_MARK): what a record holds. */
long floor_query_redirect_records(int fd, long iterations) {
    long succeeded = 0;
    for (long i = 0; i < iterations; ++i) {
        unsigned int mark;
        socklen_t size = sizeof mark;
        if (original_destination_once(fd) &&
            getsockopt(fd, SOL_SOCKET, SO_MARK, &mark, &size) == 0)
            ++succeeded;
    }
    return succeeded;
}

/* The socket's TCP state (TCP_INFO's first byte: a new socket, not listening
   or connected), then setsockopt(SO_MARK) with the upstream mark. */
long floor_set_redirect_records(int fd, long iterations, unsigned int mark) {
    long succeeded = 0;
    for (long i = 0; i < iterations; ++i) {
        unsigned char state = 0;
        socklen_t size = sizeof state;
        succeeded += getsockopt(fd, IPPROTO_TCP, TCP_INFO, &state, &size) == 0 &&
                     state == TCP_CLOSE &&
                     setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof mark) == 0;
    }
    return succeeded;
}

/* One accepted connection as a proxy's accept path needs it (issue 16): the
 * four reads that carry its whole redirect state on the accepted socket
 * (getsockname, SO_ORIGINAL_DST compared with the local address, getpeername
 * for the connected-side check and the loop check, SO_MARK for the record and
 * the loop mark), then the upstream's setsockopt(SO_MARK), after the TCP_INFO
 * state check set_redirect_records makes when `checked`. */
static int accepted_reads(int fd) {
    struct sockaddr_in peer;
    socklen_t size = sizeof peer;
    unsigned int inbound;
    socklen_t mark_size = sizeof inbound;
    return original_destination_once(fd) &&
           getpeername(fd, (struct sockaddr*)&peer, &size) == 0 &&
           getsockopt(fd, SOL_SOCKET, SO_MARK, &inbound, &mark_size) == 0;
}

static int upstream_mark(int upstream, unsigned int mark, int checked) {
    if (checked) {
        unsigned char state = 0;
        socklen_t size = sizeof state;
        if (getsockopt(upstream, IPPROTO_TCP, TCP_INFO, &state, &size) != 0 || state != TCP_CLOSE)
            return 0;
    }
    return setsockopt(upstream, SOL_SOCKET, SO_MARK, &mark, sizeof mark) == 0;
}

/* The floor: 5 calls per connection. */
long floor_connection(int fd, long iterations, int upstream, unsigned int mark) {
    long succeeded = 0;
    for (long i = 0; i < iterations; ++i)
        succeeded += accepted_reads(fd) && upstream_mark(upstream, mark, 0);
    return succeeded;
}

/* The calls the library makes: the floor's and TCP_INFO, 6 per connection. */
long floor_connection_checked(int fd, long iterations, int upstream, unsigned int mark) {
    long succeeded = 0;
    for (long i = 0; i < iterations; ++i)
        succeeded += accepted_reads(fd) && upstream_mark(upstream, mark, 1);
    return succeeded;
}

/* The calls query_redirect_info made before the fused call, with no upstream
 * open (so no getpeername for the loop check): the loop check's SO_MARK, the
 * redirect resolved by each of original_destination, query_redirect_records
 * and query_redirect_context (getsockname, SO_ORIGINAL_DST, getpeername), the
 * record's SO_MARK, then set_redirect_records' TCP_INFO and SO_MARK: 13. */
long floor_connection_three_queries(int fd, long iterations, int upstream, unsigned int mark) {
    long succeeded = 0;
    for (long i = 0; i < iterations; ++i) {
        unsigned int inbound;
        socklen_t size = sizeof inbound;
        int ok = getsockopt(fd, SOL_SOCKET, SO_MARK, &inbound, &size) == 0;
        for (int query = 0; query < 2 && ok; ++query) {
            struct sockaddr_in peer;
            socklen_t peer_size = sizeof peer;
            ok = original_destination_once(fd) &&
                 getpeername(fd, (struct sockaddr*)&peer, &peer_size) == 0;
        }
        succeeded += ok && accepted_reads(fd) && upstream_mark(upstream, mark, 1);
    }
    return succeeded;
}
