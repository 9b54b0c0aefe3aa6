#include "base/private_file.hpp"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

namespace baton {

expected<std::string> read_private_file(const std::filesystem::path& file, std::string_view what,
                                        std::string_view how_to_make) {
  struct stat st {};
  if (::stat(file.c_str(), &st) != 0) {
    return fail(errc::not_found, fmt::format("{}: cannot read {}: {}{}", file.string(), what,
                                             std::strerror(errno), how_to_make));
  }
  if (!S_ISREG(st.st_mode)) {
    return fail(errc::invalid_argument,
                fmt::format("{}: {} must be a regular file", file.string(), what));
  }
  if ((st.st_mode & 077) != 0) {
    return fail(
        errc::invalid_argument,
        fmt::format("{}: mode {:04o} lets other users at {}; it must be 0600 (chmod 600 {})",
                    file.string(), st.st_mode & 07777, what, file.string()));
  }
  std::ifstream in(file, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  if (!in && !in.eof()) {
    return fail(errc::failed, fmt::format("{}: cannot read {}", file.string(), what));
  }
  return text.str();
}

}  // namespace baton
