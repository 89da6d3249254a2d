/* The origin and the clients of benchmarks/bench_proxy.py, in C so that
 * neither is the bottleneck of what it measures: on a machine with two CPUs
 * the clients, the origin and the proxy share them, and every microsecond
 * these spend is one the proxy does not get. Single-threaded, epoll,
 * non-blocking; built by bench_proxy.py with the system compiler. Linux only.
 *
 * The protocol: a client sends a request of exactly REQUEST_SIZE bytes, a
 * decimal byte count N and a newline, padded; the origin answers N bytes and
 * closes. N = 0 asks the origin for the local address the connection reached
 * ("127.0.0.2:9003"), which shows a relay connected to the original
 * destination and not to itself.
 *
 *   loadgen origin HOST PORT [PORT...]      serve until killed; "ready" once listening
 *   loadgen connections HOST PORT CONCURRENCY SECONDS
 *       CONCURRENCY clients, each connection after connection for SECONDS: 100 bytes each
 *       way; prints "completed=C errors=E seconds=S"
 *   loadgen bulk HOST PORT STREAMS BYTES    STREAMS parallel downloads of BYTES each;
 *       prints "bytes=B errors=E seconds=S"
 *   loadgen latency HOST PORT COUNT         one connection at a time (100 bytes each way);
 *       prints each one's nanoseconds, a line each
 *   loadgen whoami HOST PORT                prints where the connection arrived
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define REQUEST_SIZE 100
#define SMALL_ANSWER 100
#define CHUNK (256 * 1024)
#define MAX_EVENTS 256

static char zeros[CHUNK];
static char sink[1 << 20];

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void die(const char* what) {
    perror(what);
    exit(2);
}

static struct sockaddr_in address(const char* host, const char* port) {
    struct sockaddr_in to;
    memset(&to, 0, sizeof to);
    to.sin_family = AF_INET;
    to.sin_port = htons((unsigned short)atoi(port));
    if (inet_pton(AF_INET, host, &to.sin_addr) != 1) {
        fprintf(stderr, "loadgen: not an IPv4 address: %s\n", host);
        exit(2);
    }
    return to;
}

static void request(char* buffer, long long size) {
    memset(buffer, ' ', REQUEST_SIZE);
    int length = snprintf(buffer, REQUEST_SIZE, "%lld\n", size);
    buffer[length] = ' '; /* snprintf's terminator: padding too */
}

/* ---- the origin ---- */

struct served {
    int fd;
    int listener; /* a listening socket: the rest is unused */
    int received;
    char head[REQUEST_SIZE];
    long long remaining;
    int sending;
};

static void finish(struct served* connection) {
    close(connection->fd);
    free(connection);
}

/* Sends what remains; 0 when done, 1 when the socket is full, -1 on an error. */
static int pour(struct served* connection) {
    while (connection->remaining > 0) {
        size_t piece = connection->remaining < CHUNK ? (size_t)connection->remaining : CHUNK;
        ssize_t sent = send(connection->fd, zeros, piece, MSG_NOSIGNAL);
        if (sent < 0)
            return errno == EAGAIN ? 1 : -1;
        connection->remaining -= sent;
    }
    return 0;
}

static void serve_readable(int poll, struct served* connection) {
    while (connection->received < REQUEST_SIZE) {
        ssize_t got = recv(connection->fd, connection->head + connection->received,
                           (size_t)(REQUEST_SIZE - connection->received), 0);
        if (got < 0 && errno == EAGAIN)
            return;
        if (got <= 0) {
            finish(connection);
            return;
        }
        connection->received += (int)got;
    }
    connection->head[REQUEST_SIZE - 1] = '\0';
    connection->remaining = strtoll(connection->head, NULL, 10);
    if (connection->remaining == 0) {
        struct sockaddr_in local;
        socklen_t size = sizeof local;
        char text[64], host[INET_ADDRSTRLEN];
        getsockname(connection->fd, (struct sockaddr*)&local, &size);
        inet_ntop(AF_INET, &local.sin_addr, host, sizeof host);
        int length = snprintf(text, sizeof text, "%s:%d\n", host, ntohs(local.sin_port));
        send(connection->fd, text, (size_t)length, MSG_NOSIGNAL);
        finish(connection);
        return;
    }
    int state = pour(connection);
    if (state == 1) {
        struct epoll_event event = {.events = EPOLLOUT, .data.ptr = connection};
        connection->sending = 1;
        epoll_ctl(poll, EPOLL_CTL_MOD, connection->fd, &event);
        return;
    }
    finish(connection);
}

static int origin(int argc, char** argv) {
    int poll = epoll_create1(0);
    for (int i = 3; i < argc; ++i) {
        struct sockaddr_in at = address(argv[2], argv[i]);
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        int on = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
        if (bind(fd, (struct sockaddr*)&at, sizeof at) != 0 || listen(fd, 4096) != 0)
            die("loadgen origin: bind/listen");
        struct served* listener = calloc(1, sizeof *listener);
        listener->fd = fd;
        listener->listener = 1;
        struct epoll_event event = {.events = EPOLLIN, .data.ptr = listener};
        epoll_ctl(poll, EPOLL_CTL_ADD, fd, &event);
    }
    printf("ready\n");
    fflush(stdout);
    struct epoll_event events[MAX_EVENTS];
    for (;;) {
        int count = epoll_wait(poll, events, MAX_EVENTS, -1);
        for (int i = 0; i < count; ++i) {
            struct served* connection = events[i].data.ptr;
            if (connection->listener) {
                int fd;
                while ((fd = accept4(connection->fd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    struct served* accepted = calloc(1, sizeof *accepted);
                    accepted->fd = fd;
                    struct epoll_event event = {.events = EPOLLIN, .data.ptr = accepted};
                    epoll_ctl(poll, EPOLL_CTL_ADD, fd, &event);
                }
            } else if (connection->sending) {
                if (pour(connection) != 1)
                    finish(connection);
            } else {
                serve_readable(poll, connection);
            }
        }
    }
    return 0; /* not reached: the origin runs until it is killed */
}

/* ---- the clients ---- */

struct client {
    int fd;
    int connected;
    long long expected;
    long long received;
};

static int poll_fd;
static struct sockaddr_in target;
static char small_request[REQUEST_SIZE];

/* Starts a connection in `slot`; 0, or -1 when the socket cannot be made. */
static int open_client(struct client* slot, long long expected) {
    slot->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (slot->fd < 0)
        return -1;
    int on = 1;
    setsockopt(slot->fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
    slot->connected = 0;
    slot->expected = expected;
    slot->received = 0;
    int result = connect(slot->fd, (struct sockaddr*)&target, sizeof target);
    if (result != 0 && errno != EINPROGRESS) {
        close(slot->fd);
        slot->fd = -1;
        return -1;
    }
    struct epoll_event event = {.events = EPOLLOUT, .data.ptr = slot};
    epoll_ctl(poll_fd, EPOLL_CTL_ADD, slot->fd, &event);
    return 0;
}

/* Advances a connection on an event: 0 while it goes on, 1 when it ended
 * well (all the bytes, then the end), -1 when it failed. */
static int advance(struct client* slot, char* request_bytes) {
    if (!slot->connected) {
        int error = 0;
        socklen_t size = sizeof error;
        getsockopt(slot->fd, SOL_SOCKET, SO_ERROR, &error, &size);
        if (error != 0 || send(slot->fd, request_bytes, REQUEST_SIZE, MSG_NOSIGNAL) != REQUEST_SIZE)
            return -1;
        slot->connected = 1;
        struct epoll_event event = {.events = EPOLLIN, .data.ptr = slot};
        epoll_ctl(poll_fd, EPOLL_CTL_MOD, slot->fd, &event);
        return 0;
    }
    for (;;) {
        ssize_t got = recv(slot->fd, sink, sizeof sink, 0);
        if (got > 0) {
            slot->received += got;
            continue;
        }
        if (got < 0 && errno == EAGAIN)
            return 0;
        if (got < 0)
            return -1;
        return slot->received == slot->expected ? 1 : -1;
    }
}

static void close_client(struct client* slot) {
    close(slot->fd);
    slot->fd = -1;
}

static int connections(int argc, char** argv) {
    if (argc != 6)
        return 2;
    target = address(argv[2], argv[3]);
    int concurrency = atoi(argv[4]);
    double seconds = atof(argv[5]);
    request(small_request, SMALL_ANSWER);
    poll_fd = epoll_create1(0);
    struct client* slots = calloc((size_t)concurrency, sizeof *slots);
    long completed = 0, errors = 0;
    int active = 0;
    double started = now(), deadline = started + seconds, give_up = deadline + 10;
    for (int i = 0; i < concurrency; ++i)
        if (open_client(&slots[i], SMALL_ANSWER) == 0)
            ++active;
        else
            ++errors;
    struct epoll_event events[MAX_EVENTS];
    while (active > 0 && now() < give_up) {
        int count = epoll_wait(poll_fd, events, MAX_EVENTS, 1000);
        for (int i = 0; i < count; ++i) {
            struct client* slot = events[i].data.ptr;
            int state = advance(slot, small_request);
            if (state == 0)
                continue;
            if (state == 1)
                ++completed;
            else
                ++errors;
            close_client(slot);
            --active;
            if (now() < deadline) {
                if (open_client(slot, SMALL_ANSWER) == 0)
                    ++active;
                else
                    ++errors;
            }
        }
    }
    errors += active; /* still open at the give-up time */
    printf("completed=%ld errors=%ld seconds=%.6f\n", completed, errors, now() - started);
    return 0;
}

static int bulk(int argc, char** argv) {
    if (argc != 6)
        return 2;
    target = address(argv[2], argv[3]);
    int streams = atoi(argv[4]);
    long long size = atoll(argv[5]);
    char bulk_request[REQUEST_SIZE];
    request(bulk_request, size);
    poll_fd = epoll_create1(0);
    struct client* slots = calloc((size_t)streams, sizeof *slots);
    long long total = 0;
    long errors = 0;
    int active = 0;
    double started = now();
    for (int i = 0; i < streams; ++i)
        if (open_client(&slots[i], size) == 0)
            ++active;
        else
            ++errors;
    struct epoll_event events[MAX_EVENTS];
    while (active > 0) {
        int count = epoll_wait(poll_fd, events, MAX_EVENTS, 10000);
        if (count == 0)
            break; /* nothing for 10 s: the rest counts as errors */
        for (int i = 0; i < count; ++i) {
            struct client* slot = events[i].data.ptr;
            int state = advance(slot, bulk_request);
            if (state == 0)
                continue;
            total += slot->received;
            errors += state < 0;
            close_client(slot);
            --active;
        }
    }
    errors += active;
    printf("bytes=%lld errors=%ld seconds=%.6f\n", total, errors, now() - started);
    return 0;
}

/* One blocking connection: 100 bytes each way; the bytes received, or -1. */
static long long once(const char* request_bytes, char* answer, size_t room) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int on = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
    /* A relay that never answers (or never closes) is an error, not a hang. */
    struct timeval patience = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &patience, sizeof patience);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &patience, sizeof patience);
    long long received = -1;
    if (connect(fd, (struct sockaddr*)&target, sizeof target) == 0 &&
        send(fd, request_bytes, REQUEST_SIZE, MSG_NOSIGNAL) == REQUEST_SIZE) {
        received = 0;
        ssize_t got;
        do {
            /* Into `answer` while it has room, then into the sink (counted only). */
            int fits = received < (long long)room;
            got = recv(fd, fits ? answer + received : sink,
                       fits ? room - (size_t)received : sizeof sink, 0);
            if (got > 0)
                received += got;
        } while (got > 0);
        if (got < 0)
            received = -1;
    }
    close(fd);
    return received;
}

static int latency(int argc, char** argv) {
    if (argc != 5)
        return 2;
    target = address(argv[2], argv[3]);
    int count = atoi(argv[4]);
    request(small_request, SMALL_ANSWER);
    for (int i = 0; i < count; ++i) {
        double started = now();
        long long received = once(small_request, sink, sizeof sink);
        double elapsed = now() - started;
        if (received != SMALL_ANSWER) {
            fprintf(stderr, "loadgen latency: connection %d: %lld bytes instead of %d%s\n", i + 1,
                    received, SMALL_ANSWER, received < 0 ? " (an error, or 10 s without one)" : "");
            return 1;
        }
        printf("%.0f\n", elapsed * 1e9);
    }
    return 0;
}

static int whoami(int argc, char** argv) {
    if (argc != 4)
        return 2;
    target = address(argv[2], argv[3]);
    char answer[64];
    request(small_request, 0);
    long long received = once(small_request, answer, sizeof answer - 1);
    if (received <= 0 || received >= (long long)sizeof answer)
        return 1;
    answer[received] = '\0';
    fputs(answer, stdout);
    return 0;
}

int main(int argc, char** argv) {
    signal(SIGPIPE, SIG_IGN);
    int status = 2;
    if (argc >= 4 && strcmp(argv[1], "origin") == 0)
        status = origin(argc, argv);
    else if (argc >= 2 && strcmp(argv[1], "connections") == 0)
        status = connections(argc, argv);
    else if (argc >= 2 && strcmp(argv[1], "bulk") == 0)
        status = bulk(argc, argv);
    else if (argc >= 2 && strcmp(argv[1], "latency") == 0)
        status = latency(argc, argv);
    else if (argc >= 2 && strcmp(argv[1], "whoami") == 0)
        status = whoami(argc, argv);
    if (status == 2)
        fprintf(stderr, "usage: see the comment at the top of benchmarks/native/loadgen.c\n");
    return status;
}
