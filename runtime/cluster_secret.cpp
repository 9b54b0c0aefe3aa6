#include "runtime/cluster_secret.hpp"

#include <cerrno>
#include <charconv>
#include <cstring>
#include <stdexcept>
#include <string>

#include <fcntl.h>
#include <fmt/format.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <unistd.h>

#include "base/private_file.hpp"

namespace baton::runtime {
namespace {

constexpr std::size_t key_bytes = 32;

void append_word(std::string& out, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

}  // namespace

nonce random_nonce() {
  nonce n{};
  if (RAND_bytes(reinterpret_cast<unsigned char*>(n.data()), sizeof(n)) != 1) {
    throw std::runtime_error("RAND_bytes failed: no randomness for a nonce");
  }
  return n;
}

expected<cluster_secret> cluster_secret::load(const std::filesystem::path& file) {
  auto text = read_private_file(file, "the cluster secret",
                                fmt::format(" (baton secret init {} makes one)", file.string()));
  if (!text) return tl::unexpected(text.error());
  std::string hex = std::move(*text);
  while (!hex.empty() && (hex.back() == '\n' || hex.back() == '\r' || hex.back() == ' ')) {
    hex.pop_back();
  }
  std::array<std::uint8_t, key_bytes> key{};
  bool good = hex.size() == 2 * key_bytes;
  for (std::size_t i = 0; good && i < key_bytes; ++i) {
    const char* digits = hex.data() + 2 * i;
    const auto [end, ec] = std::from_chars(digits, digits + 2, key[i], 16);
    good = ec == std::errc{} && end == digits + 2;
  }
  if (!good) {
    return fail(errc::invalid_argument,
                fmt::format("{}:1: expected 64 hexadecimal digits (32 bytes), the file made by "
                            "baton secret init",
                            file.string()));
  }
  return cluster_secret(key);
}

expected<void> cluster_secret::create(const std::filesystem::path& file) {
  std::array<std::uint8_t, key_bytes> key{};
  if (RAND_bytes(key.data(), static_cast<int>(key.size())) != 1) {
    return fail(errc::failed, "RAND_bytes failed: no randomness for a secret");
  }
  const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    return fail(errno == EEXIST ? errc::invalid_argument : errc::failed,
                fmt::format("{}: {}{}", file.string(), std::strerror(errno),
                            errno == EEXIST ? " (a secret is never overwritten)" : ""));
  }
  std::string hex;
  for (const auto b : key) hex += fmt::format("{:02x}", b);
  hex += '\n';
  const bool written = ::write(fd, hex.data(), hex.size()) == static_cast<ssize_t>(hex.size());
  const bool closed = ::close(fd) == 0;
  if (!written || !closed) {
    std::filesystem::remove(file);
    return fail(errc::failed, fmt::format("{}: cannot write the secret", file.string()));
  }
  return {};
}

proof cluster_secret::sign(std::string_view label, std::initializer_list<std::uint64_t> words,
                           std::initializer_list<std::string_view> texts) const {
  std::string message(label);
  message.push_back('\0');
  for (const auto w : words) append_word(message, w);
  for (const auto t : texts) {
    append_word(message, t.size());
    message.append(t);
  }
  std::array<unsigned char, EVP_MAX_MD_SIZE> mac{};
  unsigned int length = 0;
  HMAC(EVP_sha256(), key_.data(), static_cast<int>(key_.size()),
       reinterpret_cast<const unsigned char*>(message.data()), message.size(), mac.data(), &length);
  proof tag{};
  std::memcpy(tag.data(), mac.data(), sizeof(tag));
  return tag;
}

std::array<std::byte, 32> cluster_secret::frame_key() const {
  const auto derived = sign("baton frame key", {}, {});
  std::array<std::byte, 32> key{};
  std::memcpy(key.data(), derived.data(), key.size());
  return key;
}

bool cluster_secret::verify(const proof& tag, std::string_view label,
                            std::initializer_list<std::uint64_t> words,
                            std::initializer_list<std::string_view> texts) const {
  const auto expected = sign(label, words, texts);
  return CRYPTO_memcmp(expected.data(), tag.data(), sizeof(tag)) == 0;
}

}  // namespace baton::runtime
