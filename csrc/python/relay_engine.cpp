// RelayEngine: the native relay (csrc/core/netfilter/relay_engine.hpp) as a
// Python object, for wfpredirect/cli/_relay_native.py. Conversion only: the
// engine makes every system call. Availability: Linux.
#include "relay_engine.hpp"

#if defined(__linux__)

#include <climits>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "../core/netfilter/marks.hpp"
#include "../core/netfilter/relay_engine.hpp"
#include "conversions.hpp"
#include "errors.hpp"
#include "marks.hpp"
#include "operations.hpp"

namespace wfpredirect::python {
namespace {

namespace engine = core::netfilter;

constexpr const char* kName = "RelayEngine";

// An int argument `name` of at least `least` that fits an int; the
// TypeError or ValueError naming it otherwise.
std::size_t count_argument(const py::object& value, const char* name, long long least) {
    const std::string at_least = least == 0 ? "0 or more" : "at least " + std::to_string(least);
    if (!PyLong_Check(value.ptr()))
        throw_error(PyExc_TypeError, kName,
                    (std::string(name) + " must be an int, or None").c_str());
    const long long count = PyLong_AsLongLong(value.ptr());
    if (count == -1 && PyErr_Occurred())
        throw py::error_already_set();
    if (count < least || count > INT_MAX)
        throw_error(
            PyExc_ValueError, kName,
            (std::string(name) + " must be " + at_least + " (and fit an int), or None").c_str());
    return static_cast<std::size_t>(count);
}

class RelayEngine {
  public:
    RelayEngine(const py::sequence& listeners, double connect_timeout, bool keep_client_address,
                py::object loop_mark, py::object mark_mask, int backlog, bool splice,
                py::object idle_timeout, py::object max_connections, py::object max_pipes) {
        if (listeners.size() == 0)
            throw_error(PyExc_ValueError, kName, "listeners must name at least one socket");
        std::vector<int> fds;
        for (const py::handle item : listeners) {
            if (!PyLong_Check(item.ptr()))
                throw_error(PyExc_TypeError, kName,
                            "listeners must be a sequence of descriptors (int)");
            const long long fd = PyLong_AsLongLong(item.ptr());
            if (fd == -1 && PyErr_Occurred())
                throw py::error_already_set();
            if (fd < 0 || fd > INT_MAX)
                throw_error(PyExc_ValueError, kName,
                            ("listeners: " + std::to_string(fd) + " is not a descriptor").c_str());
            fds.push_back(static_cast<int>(fd));
        }
        if (!std::isfinite(connect_timeout) || connect_timeout <= 0)
            throw_error(PyExc_ValueError, kName, "connect_timeout must be a positive number");
        if (backlog < 1)
            throw_error(PyExc_ValueError, kName, "backlog must be at least 1");
        engine::RelaySettings settings;
        if (!idle_timeout.is_none()) {
            const double seconds = PyFloat_AsDouble(idle_timeout.ptr());
            if (seconds == -1.0 && PyErr_Occurred())
                throw py::error_already_set();
            if (!std::isfinite(seconds) || seconds <= 0)
                throw_error(PyExc_ValueError, kName,
                            "idle_timeout must be a positive number, or None");
            settings.idle_timeout = seconds;
        }
        if (!max_connections.is_none())
            settings.max_connections = count_argument(max_connections, "max_connections", 1);
        if (!max_pipes.is_none())
            settings.max_pipes = count_argument(max_pipes, "max_pipes", 0);
        settings.connect_timeout = connect_timeout;
        settings.keep_client_address = keep_client_address;
        settings.inbound_marks = configured_marks();
        settings.upstream_marks =
            marks_for_call(loop_mark.ptr(), mark_mask.ptr(), kName, marks_error_);
        const core::Status marks = engine::check_marks(settings.upstream_marks);
        if (!marks.ok())
            throw_status(kName, marks);
        // The loop check's mark is the process's (check_not_looped's LOOP_MARK).
        settings.loop_mark =
            settings.inbound_marks.error == nullptr ? settings.inbound_marks.loop_mark : 0;
        settings.accepts_per_wakeup = backlog;
        settings.splice = splice;
        const core::Status status =
            engine::RelayEngine::create(fds.data(), fds.size(), settings, engine_);
        if (!status.ok())
            throw_status(kName, status);
    }

    int event_fd() const { return engine_->event_fd(); }

    void run() {
        core::Status status;
        {
            py::gil_scoped_release unlocked;
            status = engine_->run();
        }
        if (!status.ok())
            throw_status("RelayEngine.run", status);
    }

    void close_listeners() { engine_->close_listeners(); }

    void stop(double grace) {
        if (!std::isfinite(grace) || grace < 0)
            throw_error(PyExc_ValueError, "RelayEngine.stop",
                        "grace must be a number of seconds, 0 or more");
        engine_->stop(grace);
    }

    std::size_t open_count() const { return engine_->open_count(); }

    py::tuple counters() const {
        return py::make_tuple(engine_->relaying_count(), engine_->bytes_up(),
                              engine_->bytes_down());
    }

    py::tuple pipes() const {
        const engine::PipeCounts counts = engine_->pipe_counts();
        return py::make_tuple(counts.spare, counts.in_use, counts.spliced);
    }

    py::list events() {
        std::vector<engine::RelayEvent> taken;
        engine_->take_events(taken);
        py::list out;
        for (const engine::RelayEvent& event : taken)
            out.append(to_tuple(event));
        return out;
    }

  private:
    static py::tuple to_tuple(const engine::RelayEvent& event) {
        using Kind = engine::RelayEventKind;
        const py::tuple client = to_address_tuple(event.client);
        switch (event.kind) {
        case Kind::relayed:
            return py::make_tuple("relayed", client, to_address_tuple(event.target), event.up,
                                  event.down, event.seconds, event.code);
        case Kind::refused:
            return py::make_tuple("refused", client);
        case Kind::failed:
            return py::make_tuple("failed", client, to_address_tuple(event.target), event.code);
        case Kind::failed_call:
            return py::make_tuple("failed_call", client, to_address_tuple(event.target),
                                  event.status.call, event.code);
        case Kind::failed_records:
            return py::make_tuple("failed", client, to_address_tuple(event.target),
                                  status_exception("set_redirect_records", event.status));
        case Kind::loop:
            return py::make_tuple("loop", client);
        case Kind::unreadable:
            return py::make_tuple("unreadable", client,
                                  status_exception("query_redirect_info", event.status));
        case Kind::gone:
            return py::make_tuple("gone", client);
        case Kind::connection_cap:
            return py::make_tuple("connection_cap", client, event.code);
        default:
            return py::make_tuple("accept_error", client, event.code);
        }
    }

    std::string marks_error_; // what an invalid pair of marks points to
    std::unique_ptr<engine::RelayEngine> engine_;
};

} // namespace

void init_relay_engine(py::module_& module) {
    py::class_<RelayEngine>(module, kName,
                            "The native relay: accepts on `listeners` (listening descriptors, "
                            "owned from here on) and relays each redirected connection in its "
                            "own loop (wfpredirect proxy --relay native). Availability: Linux.")
        .def(py::init<const py::sequence&, double, bool, py::object, py::object, int, bool,
                      py::object, py::object, py::object>(),
             py::arg("listeners"), py::pos_only(), py::kw_only(), py::arg("connect_timeout"),
             py::arg("keep_client_address") = false, py::arg("loop_mark") = py::none(),
             py::arg("mark_mask") = py::none(), py::arg("backlog") = 1024, py::arg("splice") = true,
             py::arg("idle_timeout") = py::none(), py::arg("max_connections") = py::none(),
             py::arg("max_pipes") = py::none())
        .def_property_readonly("event_fd", &RelayEngine::event_fd,
                               "Readable while events() has something.")
        .def("run", &RelayEngine::run,
             "Relay until stop() and its grace are over (the GIL released). Once only.")
        .def("close_listeners", &RelayEngine::close_listeners, "Stop accepting.")
        .def("stop", &RelayEngine::stop, py::arg("grace"), py::pos_only(),
             "Stop accepting, let the open connections finish for `grace` seconds, cut the rest.")
        .def("events", &RelayEngine::events, "The events since the last call, oldest first.")
        .def("open_count", &RelayEngine::open_count,
             "Connections accepted and not yet ended (connecting or relaying).")
        .def("counters", &RelayEngine::counters,
             "(relaying, bytes up, bytes down): the connections relaying now, and the bytes "
             "delivered so far each way (open connections' too).")
        .def("pipes", &RelayEngine::pipes,
             "(spare, in use, bytes spliced): the pipe pool's empty pipes, the ones holding "
             "bytes in flight, and the bytes that went through a pipe so far.");
}

} // namespace wfpredirect::python

#endif
