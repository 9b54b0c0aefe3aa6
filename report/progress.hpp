#pragma once

// A progress bar for long commands (baton sim, baton chaos), on stderr when it is a
// terminal.

#include <cstddef>
#include <functional>
#include <string>

namespace baton::report {

/// Prints "[####......] done/total UNIT" over itself on stderr, a newline once done ==
/// total. Empty (call nothing) when `quiet` or stderr is not a terminal. Not thread-safe:
/// one thread reports.
[[nodiscard]] std::function<void(std::size_t done, std::size_t total)> progress_bar(
    std::string unit, bool quiet);

}  // namespace baton::report
