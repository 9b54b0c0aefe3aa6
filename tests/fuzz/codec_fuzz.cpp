// Fuzz target for the wire codec: any bytes must decode to a frame or a counted
// rejection, never a crash; an accepted frame must re-encode to a frame that decodes
// to the same value.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "schemas/codec.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  // The codec requires 8-byte alignment (misalignment is its own unit test).
  std::vector<std::uint64_t> aligned((size + 7) / 8);
  if (size != 0) std::memcpy(aligned.data(), data, size);
  const auto bytes = std::as_bytes(std::span<const std::uint64_t>(aligned)).first(size);

  baton::wire::decoder dec;
  auto decoded = dec.decode(bytes);
  if (dec.accepted() + dec.rejected_total() != 1) std::abort();
  if (!decoded) return 0;
  auto encoded = baton::wire::encode(*decoded);
  if (!encoded) std::abort();
  auto again = dec.decode(encoded->bytes());
  if (!again || !(*again == *decoded)) std::abort();
  return 0;
}
