// The native relay (``wfpredirect proxy --relay native``): one epoll loop,
// run in one thread, that does all of a proxied TCP connection's work: the
// accept, the redirect state (query_connection_state), the judgement of
// wfpredirect.aio.judge_connection, the upstream carrying the records
// (set_redirect_records), both directions, and the close. A direction
// moves its bytes through one buffer the whole engine shares (recv, then
// send), or, while the source streams (its reads fill that buffer), with
// splice(2) through a pipe from a bounded pool of the engine's, taken only
// while bytes are in it (HAProxy's splice-auto): a connection at rest holds
// its two sockets and nothing else. What Python hears of it is a batch of events
// (RelayEvent), signalled on an eventfd; wfpredirect/cli/_relay_native.py turns
// them into the proxy's lines. Availability: Linux.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "../operations.hpp"

namespace wfpredirect::core::netfilter {

struct RelaySettings {
    // Seconds an upstream connect may take (> 0).
    double connect_timeout = 10.0;
    // Bind each upstream to (client host, any port) with IP_TRANSPARENT.
    bool keep_client_address = false;
    // The marks query_connection_state reads the inbound mark with (the
    // process's), and the marks set_redirect_records applies to the upstream
    // (the proxy's --loop-mark and --mark-mask over the process's).
    MarkConfig inbound_marks;
    MarkConfig upstream_marks;
    // The loop check's mark: an accepted connection carrying all its bits is
    // a proxy's upstream coming back (0: no mark check).
    std::uint32_t loop_mark = 0;
    // Accepts per wakeup of a listener (as asyncio: its backlog).
    int accepts_per_wakeup = 1024;
    // False: a plain copy through the shared buffer in both directions (no
    // pipes).
    bool splice = true;
    // Pipes the engine may hold at once (the pool: in use and spare); with
    // all of them in use a direction copies through the shared buffer
    // instead. PIPE_POOL in wfpredirect/cli/_capacity.py, which counts their
    // descriptors once.
    std::size_t max_pipes = 32;
    // Seconds a relaying connection may deliver no byte either way before
    // it is ended (code kIdleTimeout); 0: never.
    double idle_timeout = 0;
    // Connections held at once (connecting or relaying): at the cap the
    // listeners leave the epoll set until one ends; 0: no cap.
    std::size_t max_connections = 0;
};

enum class RelayEventKind : std::uint8_t {
    relayed,        // code: 0 closed, kCutAtShutdown, or the errno that ended it
    refused,        // not redirected (or addressed to a listener itself)
    failed,         // code: the connect's errno, or 0 for the timeout
    failed_call,    // status: socket(), bind() or IP_TRANSPARENT failed (code: errno)
    failed_records, // status: set_redirect_records refused the records
    loop,           // the proxy's own upstream came back
    unreadable,     // status and query: the redirect state could not be read
    accept_error,   // client: the listener's address; code: accept's errno
    gone,           // the client went away (reset) before its redirect state was read
    connection_cap, // accepting paused at the cap; code: max_connections
};

// A relayed connection's code when the stop cut it.
constexpr int kCutAtShutdown = -1;
// ... when it delivered no byte either way for idle_timeout seconds.
constexpr int kIdleTimeout = -2;

struct RelayEvent {
    RelayEventKind kind = RelayEventKind::relayed;
    bool has_client = false;
    SocketAddress client; // the peer as accept() gave it (or the listener)
    SocketAddress target; // the original destination
    std::uint64_t up = 0; // bytes delivered client to origin
    std::uint64_t down = 0;
    double seconds = 0;
    int code = 0;
    Status status;
    Query query = Query::original_destination;
};

struct Connection;
struct Pump;

// A pipe of the pool: its two ends, and the bytes it holds at most.
struct RelayPipe {
    int read_end = -1;
    int write_end = -1;
    std::size_t capacity = 0;
};

// The pipe pool's state, for the proxy and the tests.
struct PipeCounts {
    std::size_t spare = 0;     // empty, held for the next streaming direction
    std::size_t in_use = 0;    // holding bytes in flight
    std::uint64_t spliced = 0; // bytes that went through a pipe, every connection
};

class RelayEngine {
  public:
    // Takes ownership of the listening sockets `listeners` (they must be
    // listening already). Fails with the system call that failed (epoll,
    // eventfd), closing nothing of the caller's.
    static Status create(const int* listeners, std::size_t count, const RelaySettings& settings,
                         std::unique_ptr<RelayEngine>& out);
    ~RelayEngine();
    RelayEngine(const RelayEngine&) = delete;
    RelayEngine& operator=(const RelayEngine&) = delete;

    // Readable when events are waiting (take_events clears it).
    int event_fd() const { return events_fd_; }

    // The loop, until stop() and its grace are over. Once only.
    Status run();

    // From any thread: stop accepting (the listeners are closed).
    void close_listeners();
    // From any thread: close the listeners, let the open connections finish
    // for `grace` seconds, then cut the rest; run() then returns.
    void stop(double grace);

    // From any thread: the events since the last call, in order.
    void take_events(std::vector<RelayEvent>& out);

    // Accepted connections not yet ended (connecting or relaying).
    std::size_t open_count() const { return open_.load(std::memory_order_relaxed); }
    // Of those, the ones relaying.
    std::size_t relaying_count() const { return relaying_.load(std::memory_order_relaxed); }
    // Bytes delivered so far, by every connection (open ones too), each way.
    std::uint64_t bytes_up() const { return bytes_up_.load(std::memory_order_relaxed); }
    std::uint64_t bytes_down() const { return bytes_down_.load(std::memory_order_relaxed); }
    PipeCounts pipe_counts() const;

  private:
    RelayEngine() = default;

    struct Listener {
        int fd = -1;
        SocketAddress address;
        bool paused = false;  // resting after accept() ran out of a resource
        bool watched = false; // in the epoll set
    };
    // Connections in the order of their deadlines, through their
    // queue_previous and queue_next (a connection is in one at most).
    struct Queue {
        Connection* first = nullptr;
        Connection* last = nullptr;
        void push_back(Connection& connection);
        void remove(Connection& connection);
    };
    struct EndpointKey {
        std::uint8_t address[16];
        std::uint16_t port;
        std::uint8_t version;
        bool operator==(const EndpointKey& other) const;
    };
    struct EndpointHash {
        std::size_t operator()(const EndpointKey& key) const;
    };

    void accept_from(std::size_t index, double now);
    void judge(int fd, const SocketAddress& client, double now);
    void open_upstream(int fd, const SocketAddress& client, const SocketAddress& target,
                       const std::uint8_t* records, std::size_t records_size, double now);
    void connected(Connection& connection, double now);
    void service(Connection& connection, double now);
    void finish(Connection& connection, int code, double now);
    void fail(Connection& connection, RelayEvent event);
    void discard(Connection& connection);
    // Takes `connection` out of open_count() (once).
    void uncount(Connection& connection);
    void timers(double now);
    void cut_all(double now);
    void touch(Connection& connection, double now);
    void watch_listeners();
    bool at_cap() const;
    void close_listener_fds();
    // Queues `event` for take_events, waking Python for the first of a batch.
    void emit(const RelayEvent& event);
    bool is_listener_address(const SocketAddress& address) const;
    static EndpointKey key_of(const SocketAddress& address);
    // One direction's work until it waits: the errno that ends the
    // connection, or 0.
    int transfer(Pump& pump, int source, int destination, bool& source_readable,
                 bool& destination_writable);
    // One read into the pump's pipe (splice).
    int splice_in(Pump& pump, int source, bool& source_readable, bool& progress);
    // One read into the shared buffer, passed on at once; what the
    // destination does not take waits in the pump.
    int copy(Pump& pump, int source, int destination, bool& source_readable,
             bool& destination_writable, bool& progress);
    // A pipe from the pool: a spare one, or a new one below max_pipes.
    bool take_pipe(Pump& pump);
    // The pump's pipe back to the pool (empty) or closed (bytes left in it).
    void release_pipe(Pump& pump);
    int wait_milliseconds(double now) const;

    RelaySettings settings_;
    int epoll_fd_ = -1;
    int wake_fd_ = -1;   // commands: close the listeners, stop
    int events_fd_ = -1; // events waiting for Python
    std::vector<Listener> listeners_;
    std::vector<SocketAddress> listening_addresses_; // kept after the close
    double resume_at_ = 0; // when paused listeners accept again (0: none paused)

    // Every open connection, oldest first.
    Connection* first_ = nullptr;
    Connection* last_ = nullptr;
    // The connecting ones, oldest first: their deadlines come in this order
    // (one timeout for all). The relaying ones, the least recently active
    // first: their idle deadlines come in this order too, so no connection
    // needs a timer of its own.
    Queue connecting_;
    Queue relaying_queue_;
    // Accepting paused at max_connections (the listeners out of the epoll set).
    bool capped_ = false;
    // Ended in this round; freed once its events are handled.
    std::vector<Connection*> ended_;
    // The pool: the spare pipes, and how many exist (spare and in use).
    std::vector<RelayPipe> spare_pipes_;
    std::size_t pipes_open_ = 0;
    // Every direction's recv lands here first (the engine's one thread).
    std::unique_ptr<std::uint8_t[]> shared_buffer_;
    // The local endpoints of this engine's open upstreams (the loop check).
    std::unordered_map<EndpointKey, int, EndpointHash> upstreams_;

    std::atomic<bool> close_requested_{false};
    std::atomic<bool> stop_requested_{false};
    std::atomic<double> grace_{0};
    bool stopping_ = false;
    double stop_deadline_ = 0;

    std::mutex events_mutex_;
    std::vector<RelayEvent> events_; // published, for take_events

    std::atomic<std::size_t> open_{0};
    std::atomic<std::size_t> relaying_{0};
    std::atomic<std::uint64_t> bytes_up_{0};
    std::atomic<std::uint64_t> bytes_down_{0};
    std::atomic<std::size_t> spare_count_{0};
    std::atomic<std::size_t> in_use_count_{0};
    std::atomic<std::uint64_t> bytes_spliced_{0};
    bool ran_ = false;
};

} // namespace wfpredirect::core::netfilter
