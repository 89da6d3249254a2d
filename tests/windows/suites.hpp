// The portable suites: they need no Winsock header, so the native Linux
// program and the Wine conformance program both run them.
#pragma once

#include "checks.hpp"

namespace wfpredirect::tests {

// The probe-and-grow loop, error classes, context rule, set records and
// original destination against the scripted WFP stack.
void run_scripted_stack_suite(Checks& checks);

// decode_wfpsampler_context and decode_windows_sockaddr.
void run_context_decoder_suite(Checks& checks);

// append_control_message and ControlMessageReader on crafted buffers.
void run_control_messages_suite(Checks& checks);

// The Windows datagram calls (enable, WSARecvMsg, WSASendMsg) against the
// scripted stack.
void run_datagram_suite(Checks& checks);

} // namespace wfpredirect::tests
