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
