// Fuzz target for the native client protocol's codec: any bytes, read as one stream
// frame (length prefix, then message), must decode to a message or an invalid_argument
// error, never a crash; an accepted message must re-encode to a frame that decodes to the
// same value.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "schemas/client_codec.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace wire = baton::wire;
  const auto bytes = std::as_bytes(std::span(data, size));
  if (bytes.size() < wire::client_length_bytes) return 0;
  auto length = wire::client_frame_length(bytes.first<wire::client_length_bytes>());
  // A stream reader takes the `*length` bytes after the prefix; when the prefix is refused
  // or the input is short, decode what follows it as-is, to reach the decoder anyway.
  auto message = bytes.subspan(wire::client_length_bytes);
  if (!length && length.error().code != baton::errc::invalid_argument) std::abort();
  if (length && *length <= message.size()) message = message.first(*length);
  auto decoded = wire::decode_client_message(message);
  if (!decoded) {
    if (decoded.error().code != baton::errc::invalid_argument) std::abort();
    return 0;
  }
  auto encoded = wire::encode_client_frame(*decoded);
  if (!encoded) std::abort();
  auto again = wire::decode_client_message(std::span(*encoded).subspan(wire::client_length_bytes));
  if (!again || !(*again == *decoded)) std::abort();
  return 0;
}
