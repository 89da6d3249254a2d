#include "checks.hpp"

#include <cstdio>

namespace wfpredirect::tests {
namespace {

// The file's name without its folder (which differs between builds).
const char* base_name(const char* file) {
    const char* name = file;
    for (const char* c = file; *c != '\0'; ++c) {
        if (*c == '/' || *c == '\\')
            name = c + 1;
    }
    return name;
}

} // namespace

void Checks::record(bool passed, const char* what, const char* file, int line) {
    reached_.emplace(base_name(file), line);
    if (passed) {
        ++passed_;
        return;
    }
    ++failed_;
    std::printf("FAILED %s:%d: %s [%s]\n", file, line, what, scenario.c_str());
}

int Checks::report() const {
    for (const auto& [file, line] : reached_)
        std::printf("reached %s:%d\n", file.c_str(), line);
    std::printf("%d checks passed, %d failed\n", passed_, failed_);
    return failed_ == 0 ? 0 : 1;
}

} // namespace wfpredirect::tests
