#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

#include <tl/expected.hpp>

namespace baton {

/// What went wrong, grouped by what the caller should do about it.
enum class errc : std::uint8_t {
  overloaded,        ///< retry later: a bounded queue or in-flight limit is full
  timed_out,         ///< retry later: a deadline passed
  disconnected,      ///< reconnect: the peer or node is gone
  invalid_argument,  ///< give up: the input (file, frame, request) is malformed
  not_found,         ///< give up: no such file, peer, actor, provider or model
  failed,            ///< give up: anything else that cannot succeed on retry
  unavailable,       ///< retry later: no worker could serve it (they died and none came back)
};

/// The name of `code`, as used in logs and metrics labels ("timed_out").
[[nodiscard]] std::string_view to_string(errc code) noexcept;

/// Baton's one error type: a classification plus a message that says precisely what
/// was wrong (file, line, field, what was expected).
struct error {
  errc code = errc::failed;
  std::string message;

  /// "invalid_argument: frame: ...": the code and the message, for logs and CLI output.
  [[nodiscard]] std::string to_string() const;
};

/// The result of anything that can fail in an expected way. An alias of tl::expected,
/// since std::expected does not build with clang 14's library.
template <class T = void>
using expected = tl::expected<T, error>;

/// Builds the failure branch of an expected: `return fail(errc::not_found, "...")`.
[[nodiscard]] inline tl::unexpected<error> fail(errc code, std::string message) {
  return tl::unexpected<error>(error{code, std::move(message)});
}

/// Passes an error on unchanged, prefixing its message with `context` ("model.bin: ").
[[nodiscard]] inline tl::unexpected<error> fail(error e, std::string_view context) {
  e.message.insert(0, context);
  return tl::unexpected<error>(std::move(e));
}

}  // namespace baton
