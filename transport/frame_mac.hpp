// transport/frame_mac.hpp
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "transport/frame.hpp"
#include "transport/types.hpp"

/// Frames that cannot be forged (docs/security.md). With a cluster frame key configured
/// (endpoint_config::frame_key), every frame an endpoint sends is sealed: its header has
/// frame::flag_sealed and its payload is followed by a u64 sequence number and a 16-byte
/// tag, HMAC-SHA256 (truncated) over the header, payload and sequence under the sender's
/// session key. A session key is derived from the cluster frame key, the sender's node id
/// and a fresh random nonce the sender announces in its (sealed) hello, so it is new for
/// every endpoint and no frame of one session verifies in another. A receiver accepts a
/// sequence number once (a sliding window, as IPsec's), so a recorded frame replayed on
/// the same session is refused too.
namespace baton::transport {

using frame_key = std::array<std::byte, 32>;
using session_nonce = std::array<std::byte, 16>;

/// The session key of `sender`, which announced `nonce`.
[[nodiscard]] frame_key session_key(const frame_key& cluster, node_id sender,
                                    const session_nonce& nonce);

/// A fresh nonce from OpenSSL's CSPRNG.
[[nodiscard]] session_nonce fresh_nonce();

/// Seals and checks frames under one session key. Not thread-safe: one thread uses it
/// (the endpoint's progress thread), reusing one keyed context for every frame.
class frame_mac {
 public:
  explicit frame_mac(const frame_key& key);
  ~frame_mac();
  frame_mac(frame_mac&&) noexcept;
  frame_mac& operator=(frame_mac&&) noexcept;

  /// `frame` is an encoded frame followed by frame::seal_bytes of room: sets the sealed
  /// flag in its header and writes `sequence` and the tag into the room.
  void seal(std::span<std::byte> frame, std::uint64_t sequence);
  /// Whether `seal`'s tag is right for the bytes it covers (compared in constant time).
  [[nodiscard]] bool check(const frame::seal_view& seal);

 private:
  friend frame_key session_key(const frame_key&, node_id, const session_nonce&);

  struct state;
  std::unique_ptr<state> state_;
};

/// The sequence numbers accepted from one session: each once, and none `span` or more
/// older than the newest (a sender's frames to one peer leave in order; rxm's rendezvous
/// for large messages may complete one after many later small ones, hence the width).
class replay_window {
 public:
  static constexpr std::uint64_t span = 4096;
  /// True, and remembered, if `sequence` is new.
  [[nodiscard]] bool accept(std::uint64_t sequence);

 private:
  [[nodiscard]] bool seen(std::uint64_t s) const {
    return (bits_[(s % span) / 64] >> (s % 64)) & 1;
  }
  void flip(std::uint64_t s) { bits_[(s % span) / 64] ^= std::uint64_t{1} << (s % 64); }

  std::uint64_t newest_ = 0;
  std::array<std::uint64_t, span / 64> bits_{};  // sequence s at bit s % span
};

}  // namespace baton::transport
