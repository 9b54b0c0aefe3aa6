#include "report/progress.hpp"

#include <unistd.h>

#include <cstdio>

#include <fmt/format.h>

namespace baton::report {

std::function<void(std::size_t, std::size_t)> progress_bar(std::string unit, bool quiet) {
  if (quiet || ::isatty(STDERR_FILENO) != 1) return {};
  return [unit = std::move(unit)](std::size_t done, std::size_t total) {
    constexpr std::size_t width = 30;
    const std::size_t filled = total == 0 ? width : done * width / total;
    fmt::print(stderr, "\r[{:#<{}}{:.<{}}] {}/{} {} ", "", filled, "", width - filled, done, total,
               unit);
    if (done == total) fmt::print(stderr, "\n");
  };
}

}  // namespace baton::report
