// A counter of named checks. Every program prints each check site it
// reached ("reached FILE:LINE") and then "N checks passed, M failed";
// pytest derives the sites from the suites' sources and asserts that every
// one was reached, so a suite that silently shrinks fails without a count
// typed twice.
#pragma once

#include <set>
#include <string>
#include <utility>

namespace wfpredirect::tests {

class Checks {
  public:
    // What the following checks are about, printed with each failure.
    std::string scenario;

    void record(bool passed, const char* what, const char* file, int line);
    // Prints the sites reached and the count line; the process exit code
    // (0 only if none failed).
    int report() const;

  private:
    int passed_ = 0;
    int failed_ = 0;
    std::set<std::pair<std::string, int>> reached_;
};

} // namespace wfpredirect::tests

#define CHECK(checks, condition) (checks).record((condition), #condition, __FILE__, __LINE__)
