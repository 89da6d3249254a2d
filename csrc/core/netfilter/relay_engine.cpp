// The native relay's loop (relay_engine.hpp). Each connection's steps are
// those of the splice path in wfpredirect/cli/_relay.py (_Acceptor, _Pump,
// SocketConnection), so that both give the same lines: see that file for
// why each step is as it is.
#include "relay_engine.hpp"

#include <cerrno>
#include <cstring>
#include <ctime>

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "addresses.hpp"
#include "errors.hpp"

namespace wfpredirect::core::netfilter {
namespace {

// What a splice pipe is raised to (F_SETPIPE_SZ): the default maximum of
// /proc/sys/fs/pipe-max-size (PIPE_SIZE in wfpredirect/cli/_platform_netfilter.py).
constexpr int kPipeSize = 1 << 20;
// The shared buffer (CHUNK_SIZE in _relay.py). A read that fills it says
// the source streams, and its next reads splice: HAProxy's splice-auto
// (its "streamer" reads fill the buffer), for which a pipe is worth its
// setup; fewer bytes at a time go cheaper through the buffer.
constexpr std::size_t kCopySize = 65536;
// accept(2) errors that say the system is out of a resource: accepting
// pauses for kAcceptPauseSeconds (asyncio's selector loop does the same).
constexpr double kAcceptPauseSeconds = 1.0;
constexpr int kEpollBatch = 256;
// TCP keepalive on both sockets of every connection, so that a peer that
// vanished without a FIN or a reset (powered off, unplugged, its state
// dropped by a firewall) is reaped: the first probe after 60 s of silence,
// then one every 10 s, and after 6 unanswered the kernel ends the
// connection (ETIMEDOUT): about 2 minutes in all, where Linux's defaults
// (7200 s, 75 s, 9) take over 2 hours. Accepted sockets inherit the
// listener's settings, so only the upstream needs the calls.
constexpr int kKeepAliveIdleSeconds = 60;
constexpr int kKeepAliveIntervalSeconds = 10;
constexpr int kKeepAliveProbes = 6;
constexpr unsigned kSocketEvents = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
constexpr unsigned kSpliceFlags = SPLICE_F_MOVE | SPLICE_F_NONBLOCK;

// epoll's u64 of each descriptor: a Connection's address (8-aligned) with
// the side in bit 0, or a listener's index shifted past the tag, or the
// wake-up descriptor.
constexpr std::uint64_t kTagMask = 3;
constexpr std::uint64_t kClientTag = 0;
constexpr std::uint64_t kUpstreamTag = 1;
constexpr std::uint64_t kListenerTag = 2;
constexpr std::uint64_t kWakeTag = 3;

double monotonic() {
    timespec now{};
    clock_gettime(CLOCK_MONOTONIC, &now);
    return static_cast<double>(now.tv_sec) + static_cast<double>(now.tv_nsec) / 1e9;
}

void wake(int fd) {
    const std::uint64_t one = 1;
    // A full counter (never, at 2^64 - 2) still wakes the reader.
    [[maybe_unused]] const ssize_t written = write(fd, &one, sizeof one);
}

void drain_eventfd(int fd) {
    std::uint64_t count = 0;
    [[maybe_unused]] const ssize_t read_size = read(fd, &count, sizeof count);
}

// SO_KEEPALIVE with the timings above: 0, or the errno of the call that failed.
int keep_alive(int fd, const char*& call) {
    const int on = 1;
    const struct {
        int level;
        int option;
        int value;
        const char* name;
    } options[] = {
        {SOL_SOCKET, SO_KEEPALIVE, on, "setsockopt(SO_KEEPALIVE)"},
        {IPPROTO_TCP, TCP_KEEPIDLE, kKeepAliveIdleSeconds, "setsockopt(TCP_KEEPIDLE)"},
        {IPPROTO_TCP, TCP_KEEPINTVL, kKeepAliveIntervalSeconds, "setsockopt(TCP_KEEPINTVL)"},
        {IPPROTO_TCP, TCP_KEEPCNT, kKeepAliveProbes, "setsockopt(TCP_KEEPCNT)"},
    };
    for (const auto& option : options) {
        if (setsockopt(fd, option.level, option.option, &option.value, sizeof option.value) != 0) {
            call = option.name;
            return errno;
        }
    }
    return 0;
}

bool is_unspecified(const SocketAddress& address) {
    for (std::size_t i = 0; i < address.address_size(); ++i)
        if (address.address[i] != 0)
            return false;
    return true;
}

} // namespace

// One direction of a connection: from its source to its destination. At
// rest it holds nothing; bytes read and not yet passed on are in `held`
// (read through the shared buffer) or in `pipe` (spliced), never both.
struct Pump {
    RelayPipe pipe;                       // from the pool, while bytes are in it
    std::unique_ptr<std::uint8_t[]> held; // the copy's bytes the destination refused so far
    std::size_t pending = 0;              // in the pipe or in `held`
    std::size_t offset = 0;               // where they start in `held`
    bool eof = false;                     // the source's end of stream read
    bool done = false;                    // ... and passed on (SHUT_WR)
    // The last read filled the shared buffer (or a splice moved as much):
    // the next reads splice, while the pool has a pipe.
    bool streaming = false;
    bool no_splice = false; // splice refused these descriptors: the copy only
    std::uint64_t spliced = 0;
    std::uint64_t moved = 0;
};

struct Connection {
    Connection* previous = nullptr; // every open connection
    Connection* next = nullptr;
    Connection* queue_previous = nullptr; // the connecting or the relaying ones
    Connection* queue_next = nullptr;
    int client_fd = -1;
    int upstream_fd = -1;
    bool client_readable = false;
    bool client_writable = false;
    bool upstream_readable = false;
    bool upstream_writable = false;
    bool relaying = false;
    bool ended = false;
    // Still in open_count(): finish and fail take it out before their event.
    bool counted = true;
    bool has_key = false;
    double deadline = 0;    // of the connect
    double started = 0;     // of the relay
    double last_active = 0; // when it last delivered a byte (or started)
    SocketAddress client;
    SocketAddress target;
    SocketAddress upstream_local;
    Pump up;   // client to upstream
    Pump down; // upstream to client
};

bool RelayEngine::EndpointKey::operator==(const EndpointKey& other) const {
    return port == other.port && version == other.version &&
           std::memcmp(address, other.address, sizeof address) == 0;
}

std::size_t RelayEngine::EndpointHash::operator()(const EndpointKey& key) const {
    // FNV-1a over the bytes that differ between endpoints.
    std::uint64_t hash = 1469598103934665603ULL;
    auto mix = [&hash](std::uint8_t byte) {
        hash ^= byte;
        hash *= 1099511628211ULL;
    };
    for (std::uint8_t byte : key.address)
        mix(byte);
    mix(static_cast<std::uint8_t>(key.port >> 8));
    mix(static_cast<std::uint8_t>(key.port & 0xFF));
    mix(key.version);
    return static_cast<std::size_t>(hash);
}

RelayEngine::EndpointKey RelayEngine::key_of(const SocketAddress& address) {
    const SocketAddress plain = unmap_ipv4(address);
    EndpointKey key{};
    std::memcpy(key.address, plain.address, plain.address_size());
    key.port = plain.port;
    key.version = static_cast<std::uint8_t>(plain.version);
    return key;
}

void RelayEngine::Queue::push_back(Connection& connection) {
    connection.queue_previous = last;
    connection.queue_next = nullptr;
    if (last != nullptr)
        last->queue_next = &connection;
    else
        first = &connection;
    last = &connection;
}

void RelayEngine::Queue::remove(Connection& connection) {
    if (connection.queue_previous != nullptr)
        connection.queue_previous->queue_next = connection.queue_next;
    else
        first = connection.queue_next;
    if (connection.queue_next != nullptr)
        connection.queue_next->queue_previous = connection.queue_previous;
    else
        last = connection.queue_previous;
    connection.queue_previous = connection.queue_next = nullptr;
}

Status RelayEngine::create(const int* listeners, std::size_t count, const RelaySettings& settings,
                           std::unique_ptr<RelayEngine>& out) {
    std::unique_ptr<RelayEngine> engine(new RelayEngine());
    engine->settings_ = settings;
    engine->epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
    if (engine->epoll_fd_ < 0)
        return classify(errno, SystemCall::socket_option, "epoll_create1");
    engine->wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (engine->wake_fd_ < 0)
        return classify(errno, SystemCall::socket_option, "eventfd");
    engine->events_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (engine->events_fd_ < 0)
        return classify(errno, SystemCall::socket_option, "eventfd");
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.u64 = kWakeTag;
    if (epoll_ctl(engine->epoll_fd_, EPOLL_CTL_ADD, engine->wake_fd_, &event) != 0)
        return classify(errno, SystemCall::socket_option, "epoll_ctl");
    for (std::size_t i = 0; i < count; ++i) {
        Listener listener;
        sockaddr_storage storage{};
        socklen_t size = sizeof storage;
        if (getsockname(listeners[i], reinterpret_cast<sockaddr*>(&storage), &size) != 0)
            return classify(errno, SystemCall::socket_option, "getsockname");
        if (!to_socket_address(storage, listener.address, MappedAddresses::keep))
            return Status::failure(Outcome::invalid_argument, EAFNOSUPPORT, "getsockname",
                                   clause("a listener is not an IPv4 or IPv6 socket"));
        int accepting = 0;
        size = sizeof accepting;
        if (getsockopt(listeners[i], SOL_SOCKET, SO_ACCEPTCONN, &accepting, &size) != 0)
            return classify(errno, SystemCall::socket_option, "getsockopt(SO_ACCEPTCONN)");
        if (!accepting)
            return Status::failure(Outcome::invalid_argument, EINVAL, nullptr,
                                   clause("a listener is not listening"));
        const char* call = nullptr;
        if (const int error = keep_alive(listeners[i], call))
            return classify(error, SystemCall::socket_option, call);
        event.events = EPOLLIN;
        event.data.u64 = (static_cast<std::uint64_t>(i) << 2) | kListenerTag;
        if (epoll_ctl(engine->epoll_fd_, EPOLL_CTL_ADD, listeners[i], &event) != 0)
            return classify(errno, SystemCall::socket_option, "epoll_ctl");
        listener.watched = true;
        engine->listeners_.push_back(listener);
        engine->listening_addresses_.push_back(listener.address);
    }
    // Owned from here on: every check passed.
    for (std::size_t i = 0; i < count; ++i) {
        engine->listeners_[i].fd = listeners[i];
        const int flags = fcntl(listeners[i], F_GETFL);
        if (flags >= 0)
            fcntl(listeners[i], F_SETFL, flags | O_NONBLOCK);
    }
    out = std::move(engine);
    return Status::success(0);
}

RelayEngine::~RelayEngine() {
    while (first_ != nullptr)
        discard(*first_);
    for (Connection* connection : ended_)
        delete connection;
    close_listener_fds();
    for (RelayPipe& pipe : spare_pipes_) {
        close(pipe.read_end);
        close(pipe.write_end);
    }
    for (int fd : {epoll_fd_, wake_fd_, events_fd_})
        if (fd >= 0)
            close(fd);
}

void RelayEngine::close_listeners() {
    close_requested_.store(true);
    wake(wake_fd_);
}

void RelayEngine::stop(double grace) {
    grace_.store(grace);
    stop_requested_.store(true);
    wake(wake_fd_);
}

void RelayEngine::take_events(std::vector<RelayEvent>& out) {
    // The counter first: an event published after it wakes the reader again.
    drain_eventfd(events_fd_);
    std::lock_guard<std::mutex> lock(events_mutex_);
    out.swap(events_);
    events_.clear();
}

void RelayEngine::emit(const RelayEvent& event) {
    // Queued before the socket it tells of is closed, so that its line can
    // come before anything the peer does next (the other paths log first).
    bool was_empty;
    {
        std::lock_guard<std::mutex> lock(events_mutex_);
        was_empty = events_.empty();
        events_.push_back(event);
    }
    // One wake-up per batch: while Python has not taken them, later events
    // join the first's. (Delaying the wake-up to gather more would let the
    // lines of connections handled by different workers come out of order.)
    if (was_empty)
        wake(events_fd_);
}

void RelayEngine::close_listener_fds() {
    for (Listener& listener : listeners_) {
        if (listener.fd >= 0)
            close(listener.fd); // leaves the epoll set with it
        listener.fd = -1;
        listener.watched = false;
    }
}

bool RelayEngine::is_listener_address(const SocketAddress& address) const {
    // is_listener_address in _addresses.py: a wildcard listener accepts on
    // every address of its port.
    const SocketAddress plain = unmap_ipv4(address);
    for (const SocketAddress& listening : listening_addresses_) {
        if (listening.port != plain.port)
            continue;
        const SocketAddress host = unmap_ipv4(listening);
        if (is_unspecified(host) || same_endpoint(host, plain))
            return true;
    }
    return false;
}

bool RelayEngine::take_pipe(Pump& pump) {
    if (!spare_pipes_.empty()) {
        pump.pipe = spare_pipes_.back();
        spare_pipes_.pop_back();
    } else {
        if (pipes_open_ >= settings_.max_pipes)
            return false; // the pool is out: the copy
        int ends[2];
        if (pipe2(ends, O_NONBLOCK | O_CLOEXEC) != 0)
            return false; // EMFILE, ENFILE: the copy
        ++pipes_open_;
        pump.pipe.read_end = ends[0];
        pump.pipe.write_end = ends[1];
        // EPERM beyond the user's pipe-user-pages-soft when not root: the
        // default size then.
        int capacity = fcntl(ends[1], F_SETPIPE_SZ, kPipeSize);
        if (capacity < 0)
            capacity = fcntl(ends[1], F_GETPIPE_SZ);
        pump.pipe.capacity = capacity > 0 ? static_cast<std::size_t>(capacity) : kCopySize;
    }
    spare_count_.store(spare_pipes_.size(), std::memory_order_relaxed);
    in_use_count_.store(pipes_open_ - spare_pipes_.size(), std::memory_order_relaxed);
    return true;
}

void RelayEngine::release_pipe(Pump& pump) {
    RelayPipe& pipe = pump.pipe;
    if (pipe.read_end < 0)
        return;
    if (pump.pending == 0) {
        spare_pipes_.push_back(pipe);
    } else {
        // Bytes nobody will read: the pipe goes with them.
        close(pipe.read_end);
        close(pipe.write_end);
        --pipes_open_;
    }
    pipe = RelayPipe();
    spare_count_.store(spare_pipes_.size(), std::memory_order_relaxed);
    in_use_count_.store(pipes_open_ - spare_pipes_.size(), std::memory_order_relaxed);
}

PipeCounts RelayEngine::pipe_counts() const {
    PipeCounts counts;
    counts.spare = spare_count_.load(std::memory_order_relaxed);
    counts.in_use = in_use_count_.load(std::memory_order_relaxed);
    counts.spliced = bytes_spliced_.load(std::memory_order_relaxed);
    return counts;
}

int RelayEngine::transfer(Pump& pump, int source, int destination, bool& source_readable,
                          bool& destination_writable) {
    while (!pump.done) {
        bool progress = false;
        if (pump.pending > 0 && destination_writable) {
            const ssize_t size =
                pump.pipe.read_end >= 0
                    ? splice(pump.pipe.read_end, nullptr, destination, nullptr, pump.pending,
                             kSpliceFlags)
                    : send(destination, pump.held.get() + pump.offset, pump.pending, MSG_NOSIGNAL);
            if (size > 0) {
                pump.pending -= static_cast<std::size_t>(size);
                pump.offset += static_cast<std::size_t>(size);
                pump.moved += static_cast<std::uint64_t>(size);
                progress = true;
                if (pump.pending == 0) {
                    // Drained: the pipe back to the pool, the bytes' room freed.
                    release_pipe(pump);
                    pump.held.reset();
                    pump.offset = 0;
                }
            } else if (errno == EAGAIN) {
                destination_writable = false;
            } else if (errno == EINTR) {
                progress = true; // again
            } else {
                return errno;
            }
        }
        // More is read while nothing waits (a pipe not full may take more):
        // bytes the destination cannot take yet stay in the source socket.
        const bool piped = pump.pipe.read_end >= 0;
        const bool room = pump.pending == 0 || (piped && pump.pending < pump.pipe.capacity);
        if (!pump.eof && room && source_readable && destination_writable) {
            // A pipe holding bytes takes the next ones too (their order).
            const bool splicing =
                piped || (settings_.splice && pump.streaming && !pump.no_splice && take_pipe(pump));
            const int error = splicing ? splice_in(pump, source, source_readable, progress)
                                       : copy(pump, source, destination, source_readable,
                                              destination_writable, progress);
            if (error != 0)
                return error;
        }
        if (pump.eof && pump.pending == 0) {
            if (shutdown(destination, SHUT_WR) != 0)
                return errno;
            pump.done = true;
            return 0;
        }
        if (!progress)
            break;
    }
    return 0;
}

int RelayEngine::splice_in(Pump& pump, int source, bool& source_readable, bool& progress) {
    const ssize_t size = splice(source, nullptr, pump.pipe.write_end, nullptr,
                                pump.pipe.capacity - pump.pending, kSpliceFlags);
    const int error = size < 0 ? errno : 0;
    if (size > 0) {
        pump.pending += static_cast<std::size_t>(size);
        pump.spliced += static_cast<std::uint64_t>(size);
        bytes_spliced_.fetch_add(static_cast<std::uint64_t>(size), std::memory_order_relaxed);
        // A smaller read: the source slowed down, the buffer again.
        pump.streaming = static_cast<std::size_t>(size) >= kCopySize;
        progress = true;
    } else if (size == 0) {
        pump.eof = true;
        progress = true;
    } else if (error == EAGAIN) {
        // With bytes in the pipe, EAGAIN may be the pipe's (out of slots):
        // the socket counts as read dry only with the pipe empty;
        // otherwise the next drain tries again.
        if (pump.pending == 0)
            source_readable = false;
    } else if (error == EINTR) {
        progress = true;
    } else if (pump.pending == 0 && pump.spliced == 0 &&
               (error == EINVAL || error == ENOSYS || error == EOPNOTSUPP)) {
        // Not with these descriptors: the copy from here on
        // (SPLICE_NOT_POSSIBLE in _relay.py).
        pump.no_splice = true;
        progress = true;
    } else {
        return error;
    }
    if (pump.pending == 0)
        release_pipe(pump); // nothing in flight: the pipe is not this pump's to keep
    return 0;
}

int RelayEngine::copy(Pump& pump, int source, int destination, bool& source_readable,
                      bool& destination_writable, bool& progress) {
    if (!shared_buffer_)
        shared_buffer_.reset(new std::uint8_t[kCopySize]);
    std::uint8_t* const buffer = shared_buffer_.get();
    const ssize_t size = recv(source, buffer, kCopySize, 0);
    if (size == 0) {
        pump.eof = true;
        progress = true;
        return 0;
    }
    if (size < 0) {
        if (errno == EAGAIN)
            source_readable = false;
        else if (errno == EINTR)
            progress = true;
        else
            return errno;
        return 0;
    }
    progress = true;
    const auto read = static_cast<std::size_t>(size);
    pump.streaming = read == kCopySize;
    std::size_t sent = 0;
    while (sent < read) {
        const ssize_t written = send(destination, buffer + sent, read - sent, MSG_NOSIGNAL);
        if (written > 0) {
            sent += static_cast<std::size_t>(written);
        } else if (errno == EAGAIN) {
            destination_writable = false;
            break;
        } else if (errno != EINTR) {
            return errno;
        }
    }
    pump.moved += sent;
    if (sent < read) {
        // The rest waits in the pump, in room of its own, until it is sent:
        // the shared buffer is the next read's.
        pump.pending = read - sent;
        pump.offset = 0;
        pump.held.reset(new std::uint8_t[pump.pending]);
        std::memcpy(pump.held.get(), buffer + sent, pump.pending);
    }
    return 0;
}

int RelayEngine::wait_milliseconds(double now) const {
    double until = -1;
    auto sooner = [&until](double at) {
        if (at > 0 && (until < 0 || at < until))
            until = at;
    };
    // The oldest connecting connection has the nearest deadline, and the
    // least recently active relaying one the nearest idle deadline.
    if (connecting_.first != nullptr)
        sooner(connecting_.first->deadline);
    if (relaying_queue_.first != nullptr && settings_.idle_timeout > 0)
        sooner(relaying_queue_.first->last_active + settings_.idle_timeout);
    sooner(resume_at_);
    if (stopping_)
        sooner(stop_deadline_);
    if (until < 0)
        return -1;
    const double milliseconds = (until - now) * 1000.0;
    if (milliseconds <= 0)
        return 0;
    // Rounded up: waking before the deadline would only wait again.
    return static_cast<int>(milliseconds) + 1;
}

Status RelayEngine::run() {
    if (ran_)
        return Status::failure(Outcome::invalid_argument, EINVAL, nullptr,
                               clause("the engine has run already"));
    ran_ = true;
    epoll_event ready[kEpollBatch];
    for (;;) {
        double now = monotonic();
        if (stopping_ && (first_ == nullptr || now >= stop_deadline_)) {
            cut_all(now);
            return Status::success(0);
        }
        const int count = epoll_wait(epoll_fd_, ready, kEpollBatch, wait_milliseconds(now));
        if (count < 0) {
            if (errno == EINTR)
                continue;
            return classify(errno, SystemCall::socket_option, "epoll_wait");
        }
        now = monotonic();
        for (int i = 0; i < count; ++i) {
            const std::uint64_t data = ready[i].data.u64;
            const std::uint64_t tag = data & kTagMask;
            if (tag == kWakeTag) {
                drain_eventfd(wake_fd_);
                continue;
            }
            if (tag == kListenerTag) {
                accept_from(static_cast<std::size_t>(data >> 2), now);
                continue;
            }
            Connection& connection = *reinterpret_cast<Connection*>(data & ~kTagMask);
            if (connection.ended)
                continue;
            const unsigned events = ready[i].events;
            // An error or hang-up makes both ways "ready": the next call
            // on the socket answers with the error itself.
            const bool any = (events & (EPOLLERR | EPOLLHUP)) != 0;
            const bool readable = any || (events & (EPOLLIN | EPOLLRDHUP)) != 0;
            const bool writable = any || (events & EPOLLOUT) != 0;
            if (tag == kClientTag) {
                connection.client_readable = connection.client_readable || readable;
                connection.client_writable = connection.client_writable || writable;
            } else {
                connection.upstream_readable = connection.upstream_readable || readable;
                connection.upstream_writable = connection.upstream_writable || writable;
            }
            if (!connection.relaying) {
                if (tag == kUpstreamTag && writable)
                    connected(connection, now);
                continue;
            }
            service(connection, now);
        }
        if (close_requested_.load() || stop_requested_.load())
            close_listener_fds();
        if (stop_requested_.load() && !stopping_) {
            stopping_ = true;
            stop_deadline_ = now + grace_.load();
        }
        timers(now);
        for (Connection* connection : ended_)
            delete connection;
        ended_.clear();
    }
}

void RelayEngine::timers(double now) {
    if (resume_at_ > 0 && now >= resume_at_) {
        resume_at_ = 0;
        for (Listener& listener : listeners_)
            listener.paused = false;
        watch_listeners();
    }
    // Connecting connections in order of their deadlines (one timeout).
    while (connecting_.first != nullptr && connecting_.first->deadline <= now) {
        RelayEvent event;
        event.kind = RelayEventKind::failed;
        event.code = 0; // timed out
        fail(*connecting_.first, event);
    }
    // Relaying ones in order of their last activity (one idle timeout).
    if (settings_.idle_timeout > 0) {
        while (relaying_queue_.first != nullptr &&
               relaying_queue_.first->last_active + settings_.idle_timeout <= now)
            finish(*relaying_queue_.first, kIdleTimeout, now);
    }
}

void RelayEngine::touch(Connection& connection, double now) {
    connection.last_active = now;
    if (relaying_queue_.last != &connection) {
        relaying_queue_.remove(connection);
        relaying_queue_.push_back(connection);
    }
}

bool RelayEngine::at_cap() const {
    return settings_.max_connections > 0 &&
           open_.load(std::memory_order_relaxed) >= settings_.max_connections;
}

void RelayEngine::watch_listeners() {
    // A listener is watched unless it is closed, resting after a resource
    // error, or the engine is at its connection cap.
    for (std::size_t i = 0; i < listeners_.size(); ++i) {
        Listener& listener = listeners_[i];
        const bool wanted = listener.fd >= 0 && !listener.paused && !capped_;
        if (wanted == listener.watched)
            continue;
        if (wanted) {
            epoll_event event{};
            event.events = EPOLLIN;
            event.data.u64 = (static_cast<std::uint64_t>(i) << 2) | kListenerTag;
            epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, listener.fd, &event);
        } else if (listener.fd >= 0) {
            epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, listener.fd, nullptr);
        }
        listener.watched = wanted;
    }
}

void RelayEngine::accept_from(std::size_t index, double now) {
    Listener& listener = listeners_[index];
    for (int i = 0; i < settings_.accepts_per_wakeup && listener.fd >= 0; ++i) {
        if (at_cap()) {
            // Not knowing whether another client waits: the listener stays
            // watched, and wakes the loop again if one does.
            if (i > 0)
                return;
            // A client is waiting and the engine holds max_connections: the
            // kernel keeps it in the backlog until one ends (discard).
            capped_ = true;
            watch_listeners();
            RelayEvent event;
            event.kind = RelayEventKind::connection_cap;
            event.has_client = true;
            event.client = listener.address;
            event.code = static_cast<int>(settings_.max_connections);
            emit(event);
            return;
        }
        sockaddr_storage storage;
        socklen_t size = sizeof storage;
        const int fd = accept4(listener.fd, reinterpret_cast<sockaddr*>(&storage), &size,
                               SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            const int error = errno;
            if (error == EAGAIN || error == EINTR)
                return;
            // Gone before it was accepted, or (accept(2)) the network's
            // errors on the new connection: the next one.
            if (error == ECONNABORTED || error == ENETDOWN || error == EPROTO ||
                error == ENOPROTOOPT || error == EHOSTDOWN || error == ENONET ||
                error == EHOSTUNREACH || error == EOPNOTSUPP || error == ENETUNREACH ||
                error == EPERM)
                continue;
            // Out of a resource (EMFILE, ENFILE, ENOBUFS, ENOMEM), or the
            // listener itself broken: said, and the listener rests rather
            // than spin.
            RelayEvent event;
            event.kind = RelayEventKind::accept_error;
            event.has_client = true;
            event.client = listener.address;
            event.code = error;
            emit(event);
            listener.paused = true;
            watch_listeners();
            resume_at_ = now + kAcceptPauseSeconds;
            return;
        }
        const int on = 1;
        if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on) != 0) {
            close(fd); // already reset by its client
            continue;
        }
        SocketAddress client;
        to_socket_address(storage, client, MappedAddresses::keep);
        judge(fd, client, now);
    }
}

void RelayEngine::judge(int fd, const SocketAddress& client, double now) {
    ConnectionState state;
    query_connection_state(fd, state, settings_.inbound_marks);
    RelayEvent event;
    event.has_client = true;
    event.client = client;
    // query_redirect_info's order: the loop first, then a listener's own
    // address, then a failure.
    if (state.has_peer) {
        const std::uint32_t loop_mark = settings_.loop_mark;
        const bool marked =
            loop_mark != 0 && state.has_mark && (state.mark & loop_mark) == loop_mark;
        const bool ours = !upstreams_.empty() && upstreams_.count(key_of(state.peer)) != 0;
        if (marked || ours) {
            event.kind = RelayEventKind::loop;
            emit(event);
            close(fd);
            return;
        }
    }
    if (state.has_original_destination && is_listener_address(state.original_destination)) {
        event.kind = RelayEventKind::refused;
        emit(event);
        close(fd);
        return;
    }
    if (!state.failure.ok()) {
        // A client that reset before the query leaves its socket
        // unconnected: nothing is wrong with the proxy or the rules.
        const std::uint32_t error = state.failure.code;
        if (state.failure.outcome == Outcome::os_error &&
            (error == ENOTCONN || error == ECONNRESET)) {
            event.kind = RelayEventKind::gone;
            emit(event);
            close(fd);
            return;
        }
        event.kind = RelayEventKind::unreadable;
        event.status = state.failure;
        event.query = state.failed_query;
        emit(event);
        close(fd);
        return;
    }
    if (!state.has_original_destination) {
        event.kind = RelayEventKind::refused;
        emit(event);
        close(fd);
        return;
    }
    open_upstream(fd, client, state.original_destination,
                  state.has_records ? state.records.data() : nullptr, state.records_size, now);
}

void RelayEngine::open_upstream(int fd, const SocketAddress& client, const SocketAddress& target,
                                const std::uint8_t* records, std::size_t records_size, double now) {
    RelayEvent event;
    event.has_client = true;
    event.client = client;
    event.target = target;
    auto failed_call = [&](const char* call, int error) {
        event.kind = RelayEventKind::failed_call;
        event.code = error;
        event.status = Status::failure(Outcome::os_error, static_cast<std::uint32_t>(error), call);
        emit(event);
    };
    const int family = target.version == IpVersion::v4 ? AF_INET : AF_INET6;
    const int upstream = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
    if (upstream < 0) {
        failed_call("socket", errno);
        close(fd);
        return;
    }
    auto give_up = [&] {
        close(upstream);
        close(fd);
    };
    if (records != nullptr) {
        // The engine's own new socket: no check of its state needed.
        const Status status =
            set_upstream_records(upstream, records, records_size, settings_.upstream_marks);
        if (!status.ok()) {
            event.kind = RelayEventKind::failed_records;
            event.status = status;
            emit(event);
            give_up();
            return;
        }
    }
    if (settings_.keep_client_address) {
        const int on = 1;
        // IP_TRANSPARENT at SOL_IP: for IPv6 sockets too.
        if (setsockopt(upstream, SOL_IP, IP_TRANSPARENT, &on, sizeof on) != 0) {
            failed_call("setsockopt(IP_TRANSPARENT)", errno);
            give_up();
            return;
        }
        // The client's host, any port ("usesrc clientip"); an IPv4-mapped
        // host as IPv4 for an IPv4 socket.
        SocketAddress source = family == AF_INET ? unmap_ipv4(client) : client;
        source.port = 0;
        source.flowinfo = 0;
        source.scope_id = 0;
        sockaddr_storage storage;
        const socklen_t size = to_sockaddr(source, storage);
        if ((source.version == IpVersion::v4) != (family == AF_INET)) {
            failed_call("bind", EAFNOSUPPORT);
            give_up();
            return;
        }
        if (bind(upstream, reinterpret_cast<sockaddr*>(&storage), size) != 0) {
            failed_call("bind", errno);
            give_up();
            return;
        }
    }
    const int on = 1;
    setsockopt(upstream, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
    const char* call = nullptr;
    if (const int error = keep_alive(upstream, call)) {
        failed_call(call, error);
        give_up();
        return;
    }
    sockaddr_storage storage;
    const socklen_t size = to_sockaddr(target, storage);
    if (connect(upstream, reinterpret_cast<sockaddr*>(&storage), size) != 0 &&
        errno != EINPROGRESS && errno != EINTR && errno != EAGAIN) {
        event.kind = RelayEventKind::failed;
        event.code = errno;
        emit(event);
        give_up();
        return;
    }
    auto* connection = new Connection();
    connection->client_fd = fd;
    connection->upstream_fd = upstream;
    connection->client = client;
    connection->target = target;
    connection->deadline = now + settings_.connect_timeout;
    // Remembered as soon as connect() has bound it: a redirect that sends
    // it back hands it to the listener before it is connected.
    sockaddr_storage local;
    socklen_t local_size = sizeof local;
    if (getsockname(upstream, reinterpret_cast<sockaddr*>(&local), &local_size) == 0 &&
        to_socket_address(local, connection->upstream_local)) {
        connection->has_key = true;
        ++upstreams_[key_of(connection->upstream_local)];
    }
    connection->previous = last_;
    if (last_ != nullptr)
        last_->next = connection;
    else
        first_ = connection;
    last_ = connection;
    connecting_.push_back(*connection);
    open_.fetch_add(1, std::memory_order_relaxed);
    epoll_event watch{};
    watch.events = kSocketEvents;
    watch.data.u64 = reinterpret_cast<std::uint64_t>(connection) | kUpstreamTag;
    const bool watched = epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, upstream, &watch) == 0;
    watch.data.u64 = reinterpret_cast<std::uint64_t>(connection) | kClientTag;
    if (!watched || epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &watch) != 0) {
        failed_call("epoll_ctl", errno);
        discard(*connection);
    }
}

void RelayEngine::connected(Connection& connection, double now) {
    int error = 0;
    socklen_t size = sizeof error;
    if (getsockopt(connection.upstream_fd, SOL_SOCKET, SO_ERROR, &error, &size) != 0)
        error = errno;
    if (error != 0) {
        RelayEvent event;
        event.kind = RelayEventKind::failed;
        event.code = error;
        fail(connection, event);
        return;
    }
    connecting_.remove(connection);
    relaying_queue_.push_back(connection);
    connection.relaying = true;
    connection.started = now;
    connection.last_active = now;
    relaying_.fetch_add(1, std::memory_order_relaxed);
    service(connection, now);
}

void RelayEngine::service(Connection& connection, double now) {
    const std::uint64_t up = connection.up.moved;
    const std::uint64_t down = connection.down.moved;
    int error = transfer(connection.up, connection.client_fd, connection.upstream_fd,
                         connection.client_readable, connection.upstream_writable);
    if (error == 0)
        error = transfer(connection.down, connection.upstream_fd, connection.client_fd,
                         connection.upstream_readable, connection.client_writable);
    // The summary's live totals (the only shared writes per transfer).
    if (connection.up.moved != up)
        bytes_up_.fetch_add(connection.up.moved - up, std::memory_order_relaxed);
    if (connection.down.moved != down)
        bytes_down_.fetch_add(connection.down.moved - down, std::memory_order_relaxed);
    if (connection.up.moved != up || connection.down.moved != down)
        touch(connection, now);
    if (error != 0) {
        finish(connection, error, now);
        return;
    }
    if (connection.up.done && connection.down.done)
        finish(connection, 0, now);
}

void RelayEngine::finish(Connection& connection, int code, double now) {
    RelayEvent event;
    event.kind = RelayEventKind::relayed;
    event.has_client = true;
    event.client = connection.client;
    event.target = connection.target;
    event.up = connection.up.moved;
    event.down = connection.down.moved;
    event.seconds = now - connection.started;
    event.code = code;
    // Out of the open count before its line: a stop signal that follows the
    // line must not count it as open.
    relaying_.fetch_sub(1, std::memory_order_relaxed);
    uncount(connection);
    emit(event);
    // Idle with nothing left to write: both sides get an end of stream,
    // as HAProxy's timeouts close.
    const bool idle =
        code == kIdleTimeout && connection.up.pending == 0 && connection.down.pending == 0;
    if (code != 0 && !idle) {
        // Broken or cut: both sides get a reset, not an end of stream that
        // would pass for a complete transfer (backend.reset_on_close).
        const linger reset{1, 0};
        setsockopt(connection.client_fd, SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
        setsockopt(connection.upstream_fd, SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
    }
    discard(connection);
}

void RelayEngine::fail(Connection& connection, RelayEvent event) {
    event.has_client = true;
    event.client = connection.client;
    event.target = connection.target;
    uncount(connection);
    emit(event);
    discard(connection);
}

void RelayEngine::uncount(Connection& connection) {
    if (connection.counted) {
        connection.counted = false;
        open_.fetch_sub(1, std::memory_order_relaxed);
    }
}

void RelayEngine::discard(Connection& connection) {
    close(connection.client_fd);
    close(connection.upstream_fd);
    release_pipe(connection.up);
    release_pipe(connection.down);
    if (connection.has_key) {
        auto found = upstreams_.find(key_of(connection.upstream_local));
        if (found != upstreams_.end() && --found->second <= 0)
            upstreams_.erase(found);
    }
    (connection.relaying ? relaying_queue_ : connecting_).remove(connection);
    if (connection.previous != nullptr)
        connection.previous->next = connection.next;
    else
        first_ = connection.next;
    if (connection.next != nullptr)
        connection.next->previous = connection.previous;
    else
        last_ = connection.previous;
    connection.ended = true;
    connection.previous = connection.next = nullptr;
    uncount(connection);
    ended_.push_back(&connection);
    if (capped_ && !at_cap()) {
        capped_ = false;
        watch_listeners();
    }
}

void RelayEngine::cut_all(double now) {
    while (first_ != nullptr) {
        Connection& connection = *first_;
        if (connection.relaying)
            finish(connection, kCutAtShutdown, now);
        else
            discard(connection); // cut while connecting: no line (as the other paths)
    }
    close_listener_fds();
}

} // namespace wfpredirect::core::netfilter
