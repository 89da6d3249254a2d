#include "checks.hpp"

#include <cstdio>

namespace wfpredirect::tests {

void Checks::record(bool passed, const char* what, const char* file, int line) {
    if (passed) {
        ++passed_;
        return;
    }
    ++failed_;
    std::printf("FAILED %s:%d: %s [%s]\n", file, line, what, scenario.c_str());
}

int Checks::report() const {
    std::printf("%d checks passed, %d failed\n", passed_, failed_);
    return failed_ == 0 ? 0 : 1;
}

} // namespace wfpredirect::tests
