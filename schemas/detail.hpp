#pragma once

// Internal to schemas/: the pieces of the codec. Includes generated Cap'n Proto headers,
// so nothing outside schemas/ (and the codec's own tests) may include it.

#include <string>

#include <tl/expected.hpp>

#include "schemas/codec.hpp"
#include "schemas/frame.capnp.h"

namespace baton::wire::detail {

struct rejection {
  reject_reason reason;
  std::string message;
};

template <class T = void>
using checked = tl::expected<T, rejection>;

[[nodiscard]] inline tl::unexpected<rejection> reject(reject_reason reason, std::string message) {
  return tl::unexpected<rejection>(rejection{reason, std::move(message)});
}

/// Converts a reader into plain structs, checking every union discriminant and enum
/// value. Lengths and other bounds are validate()'s job. May throw kj::Exception, which
/// the caller (the codec) catches.
[[nodiscard]] checked<frame> from_capnp(gen::Envelope::Reader reader);

/// Fills `builder` from `f`, which validate() accepted.
void to_capnp(const frame& f, gen::Envelope::Builder builder);

/// Checks every length, count, index and value of `f` against `limits`; used on decode
/// and on encode, so both sides agree on what a valid frame is.
[[nodiscard]] checked<> validate(const frame& f, const codec_limits& limits);

}  // namespace baton::wire::detail
