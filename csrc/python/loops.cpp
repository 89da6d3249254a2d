#include "loops.hpp"

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <string>
#include <unordered_map>

#include "errors.hpp"
#include "raw_functions.hpp"

namespace wfpredirect::python {
namespace {

// An endpoint as the registry compares it: the version, the address bytes
// and the port (an IPv4-mapped address as IPv4).
struct Endpoint {
    core::IpVersion version = core::IpVersion::v4;
    std::uint8_t address[16] = {};
    std::uint16_t port = 0;

    bool operator==(const Endpoint& other) const {
        return version == other.version && port == other.port &&
               std::memcmp(address, other.address, sizeof address) == 0;
    }
};

struct EndpointHash {
    std::size_t operator()(const Endpoint& endpoint) const {
        // FNV-1a over the bytes that make the endpoint.
        std::uint64_t hash = 14695981039346656037ULL;
        const auto mix = [&hash](std::uint8_t byte) {
            hash ^= byte;
            hash *= 1099511628211ULL;
        };
        mix(static_cast<std::uint8_t>(endpoint.version));
        for (const std::uint8_t byte : endpoint.address)
            mix(byte);
        mix(static_cast<std::uint8_t>(endpoint.port >> 8));
        mix(static_cast<std::uint8_t>(endpoint.port & 0xFF));
        return static_cast<std::size_t>(hash);
    }
};

Endpoint endpoint_of(const core::SocketAddress& address) {
    const core::SocketAddress unmapped = core::unmap_ipv4(address);
    Endpoint endpoint;
    endpoint.version = unmapped.version;
    std::memcpy(endpoint.address, unmapped.address, unmapped.address_size());
    endpoint.port = unmapped.port;
    return endpoint;
}

// Open upstreams by endpoint, with how many share one (two upstreams to
// different destinations may). `open_count` mirrors the map's size, so that
// the common check (no upstream open) takes no lock.
std::mutex registry_lock;
std::unordered_map<Endpoint, std::size_t, EndpointHash> registry;
std::atomic<std::size_t> open_count{0};

// The registry's key, (host, port), as _loops._endpoint makes it: host is
// numeric, IPv4-mapped hosts already IPv4, without a scope.
Endpoint parse_key(PyObject* key, const char* function) {
    if (!PyTuple_Check(key) || PyTuple_GET_SIZE(key) != 2 ||
        !PyUnicode_Check(PyTuple_GET_ITEM(key, 0)) || !PyLong_Check(PyTuple_GET_ITEM(key, 1)))
        throw_error(PyExc_TypeError, function, "the key must be a (host, port) tuple");
    const char* host = PyUnicode_AsUTF8(PyTuple_GET_ITEM(key, 0));
    if (host == nullptr)
        throw py::error_already_set();
    core::SocketAddress address;
    const long port = PyLong_AsLong(PyTuple_GET_ITEM(key, 1));
    if (!core::parse_host(host, address) || port < 0 || port > 65535) {
        PyErr_Clear();
        const std::string text = std::string("not a numeric endpoint: ") + host;
        throw_error(PyExc_ValueError, function, text.c_str());
    }
    address.port = static_cast<std::uint16_t>(port);
    return endpoint_of(address);
}

PyObject* remember_upstream(PyObject*, PyObject* key) {
    return call_guarded([key] {
        const Endpoint endpoint = parse_key(key, "_remember_upstream");
        {
            const std::lock_guard<std::mutex> held(registry_lock);
            ++registry[endpoint];
            open_count.store(registry.size(), std::memory_order_relaxed);
        }
        return py::none().release().ptr();
    });
}

PyObject* forget_upstream(PyObject*, PyObject* key) {
    return call_guarded([key] {
        const Endpoint endpoint = parse_key(key, "_forget_upstream");
        {
            const std::lock_guard<std::mutex> held(registry_lock);
            const auto found = registry.find(endpoint);
            if (found != registry.end() && --found->second == 0)
                registry.erase(found);
            open_count.store(registry.size(), std::memory_order_relaxed);
        }
        return py::none().release().ptr();
    });
}

PyMethodDef functions[] = {
    {"_remember_upstream", reinterpret_cast<PyCFunction>(&remember_upstream), METH_O,
     "_remember_upstream($module, key, /)\n--\n\n"
     "Private: count the open upstream whose local address is `key`, (host, port) "
     "(wfpredirect/_loops.py)."},
    {"_forget_upstream", reinterpret_cast<PyCFunction>(&forget_upstream), METH_O,
     "_forget_upstream($module, key, /)\n--\n\n"
     "Private: the upstream `key` closed (wfpredirect/_loops.py)."},
};

} // namespace

void init_loops(py::module_& module) {
    for (PyMethodDef& definition : functions)
        add_raw_function(module, definition);
}

bool any_open_upstream() { return open_count.load(std::memory_order_relaxed) != 0; }

bool is_open_upstream(const core::SocketAddress& address) {
    const Endpoint endpoint = endpoint_of(address);
    const std::lock_guard<std::mutex> held(registry_lock);
    return registry.find(endpoint) != registry.end();
}

} // namespace wfpredirect::python
