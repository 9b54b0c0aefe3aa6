#pragma once

// Files that hold secrets (the cluster secret, API keys): read only if no other user may
// read or write them.

#include <filesystem>
#include <string>
#include <string_view>

#include "base/error.hpp"

namespace baton {

/// The contents of `file`, which holds `what` ("the cluster secret"). Refused with a
/// precise error: a file that cannot be read (errc::not_found, with `how_to_make`
/// appended), one that is not regular, or one whose group or others have any access
/// (mode 0600 or stricter is required).
[[nodiscard]] expected<std::string> read_private_file(const std::filesystem::path& file,
                                                      std::string_view what,
                                                      std::string_view how_to_make = {});

}  // namespace baton
