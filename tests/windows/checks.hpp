// A counter of named checks: every program prints "N checks passed, M failed"
// and pytest asserts the exact N, so a suite that silently shrinks fails.
#pragma once

#include <string>

namespace wfpredirect::tests {

class Checks {
  public:
    // What the following checks are about, printed with each failure.
    std::string scenario;

    void record(bool passed, const char* what, const char* file, int line);
    // Prints the count line; the process exit code (0 only if none failed).
    int report() const;

  private:
    int passed_ = 0;
    int failed_ = 0;
};

} // namespace wfpredirect::tests

#define CHECK(checks, condition) (checks).record((condition), #condition, __FILE__, __LINE__)
