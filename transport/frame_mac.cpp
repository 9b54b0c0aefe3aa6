#include "transport/frame_mac.hpp"

#include <cstring>
#include <stdexcept>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

namespace baton::transport {

struct frame_mac::state {
  EVP_MAC* mac = nullptr;
  EVP_MAC_CTX* ctx = nullptr;
  ~state() {
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(mac);
  }
  /// The full HMAC-SHA256 of `bytes`, reusing the keyed context.
  std::array<unsigned char, 32> digest(std::span<const std::byte> bytes) {
    std::array<unsigned char, 32> out{};
    std::size_t length = 0;
    if (EVP_MAC_init(ctx, nullptr, 0, nullptr) != 1 ||
        EVP_MAC_update(ctx, reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size()) !=
            1 ||
        EVP_MAC_final(ctx, out.data(), &length, out.size()) != 1) {
      throw std::runtime_error("frame_mac: HMAC-SHA256 failed");
    }
    return out;
  }
};

frame_mac::frame_mac(const frame_key& key) : state_(std::make_unique<state>()) {
  state_->mac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
  if (state_->mac != nullptr) state_->ctx = EVP_MAC_CTX_new(state_->mac);
  char digest[] = "SHA256";
  const OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
                               OSSL_PARAM_construct_end()};
  if (state_->ctx == nullptr ||
      EVP_MAC_init(state_->ctx, reinterpret_cast<const unsigned char*>(key.data()), key.size(),
                   params) != 1) {
    throw std::runtime_error("frame_mac: OpenSSL has no HMAC-SHA256");
  }
}

frame_mac::~frame_mac() = default;
frame_mac::frame_mac(frame_mac&&) noexcept = default;
frame_mac& frame_mac::operator=(frame_mac&&) noexcept = default;

void frame_mac::seal(std::span<std::byte> frame, std::uint64_t sequence) {
  const std::size_t covered = frame.size() - frame::tag_bytes;
  frame::mark_sealed(frame.first(covered), sequence);
  const auto tag = state_->digest(frame.first(covered));
  std::memcpy(frame.data() + covered, tag.data(), frame::tag_bytes);
}

bool frame_mac::check(const frame::seal_view& seal) {
  const auto tag = state_->digest(seal.covered);
  return CRYPTO_memcmp(tag.data(), seal.tag.data(), frame::tag_bytes) == 0;
}

frame_key session_key(const frame_key& cluster, node_id sender, const session_nonce& nonce) {
  std::array<std::byte, 8 + 8 + 16> input{};
  std::memcpy(input.data(), "baton/s1", 8);
  for (std::size_t i = 0; i < 8; ++i)
    input[8 + i] = static_cast<std::byte>((static_cast<std::uint64_t>(sender) >> (8 * i)) & 0xff);
  std::memcpy(input.data() + 16, nonce.data(), nonce.size());
  frame_mac mac(cluster);
  frame_key key{};
  const auto digest = mac.state_->digest(input);
  std::memcpy(key.data(), digest.data(), key.size());
  return key;
}

session_nonce fresh_nonce() {
  session_nonce n{};
  if (RAND_bytes(reinterpret_cast<unsigned char*>(n.data()), static_cast<int>(n.size())) != 1) {
    throw std::runtime_error("RAND_bytes failed: no randomness for a session nonce");
  }
  return n;
}

bool replay_window::accept(std::uint64_t sequence) {
  if (sequence == 0) return false;  // senders start at 1
  if (sequence > newest_) {
    // The positions the window slides over are forgotten (all of them after a long jump).
    if (sequence - newest_ >= span) {
      bits_.fill(0);
    } else {
      for (std::uint64_t s = newest_ + 1; s < sequence; ++s)
        if (seen(s)) flip(s);
      if (seen(sequence)) flip(sequence);
    }
    newest_ = sequence;
    flip(sequence);
    return true;
  }
  if (newest_ - sequence >= span || seen(sequence)) return false;
  flip(sequence);
  return true;
}

}  // namespace baton::transport
