// What set_redirect_records refuses on every backend, before any system
// call changes the socket: records belong on a new IPv4 or IPv6 socket,
// before it binds or connects (a connection made without them has already
// been redirected back into the proxy). One text per refusal, shared.
#pragma once

namespace wfpredirect::core {

constexpr const char* kNotAnInetSocket =
    "not an IPv4 or IPv6 socket: records go on the proxy's IPv4 or IPv6 upstream socket";
constexpr const char* kListeningSocket =
    "the socket is listening: records go on the proxy's new upstream socket, before it connects";
constexpr const char* kConnectedSocket =
    "the socket is already connected: set records before connect (this connection was made "
    "without them)";

} // namespace wfpredirect::core
