// The portable suites, natively: no Winsock, so they run on every CI host.
#include "suites.hpp"

int main() {
    wfpredirect::tests::Checks checks;
    wfpredirect::tests::run_scripted_stack_suite(checks);
    wfpredirect::tests::run_context_decoder_suite(checks);
    wfpredirect::tests::run_control_messages_suite(checks);
    wfpredirect::tests::run_datagram_suite(checks);
    return checks.report();
}
