#pragma once

// The cluster secret: 32 random bytes in a file only its owner can read, named by the
// topology ([cluster] secret). Nodes prove they hold it when one joins through another
// (runtime/membership.hpp), with HMAC-SHA256 over fresh nonces, so a recorded handshake
// proves nothing later. docs/security.md says what it protects and what it does not.

#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string_view>

#include "base/error.hpp"

namespace baton::runtime {

/// A nonce: 128 random bits.
using nonce = std::array<std::uint64_t, 2>;
/// An HMAC-SHA256 tag, as four little-endian words.
using proof = std::array<std::uint64_t, 4>;

/// A fresh nonce from the operating system's CSPRNG (OpenSSL's RAND_bytes).
[[nodiscard]] nonce random_nonce();

class cluster_secret {
 public:
  /// Reads `file`: 64 hexadecimal digits (and a newline). Refused, with a precise error:
  /// a file that is not regular, that its group or others may read or write (mode 0600
  /// or stricter is required), or whose contents are not 32 bytes in hex.
  [[nodiscard]] static expected<cluster_secret> load(const std::filesystem::path& file);
  /// Writes a fresh secret to `file` with mode 0600, never over an existing file.
  [[nodiscard]] static expected<void> create(const std::filesystem::path& file);
  /// A secret of these bytes (tests).
  explicit cluster_secret(const std::array<std::uint8_t, 32>& key) : key_(key) {}

  /// HMAC-SHA256 under the secret of `label` and then each of `words` and `texts`, each
  /// length-prefixed so that no two different inputs give the same message.
  [[nodiscard]] proof sign(std::string_view label, std::initializer_list<std::uint64_t> words,
                           std::initializer_list<std::string_view> texts) const;
  /// Whether `tag` is sign(...)'s value for the same input, compared in constant time.
  [[nodiscard]] bool verify(const proof& tag, std::string_view label,
                            std::initializer_list<std::uint64_t> words,
                            std::initializer_list<std::string_view> texts) const;
  /// The key the transport seals frames under (endpoint_config::frame_key), derived from
  /// the secret, so the secret itself never leaves this class.
  [[nodiscard]] std::array<std::byte, 32> frame_key() const;

 private:
  std::array<std::uint8_t, 32> key_;
};

}  // namespace baton::runtime
