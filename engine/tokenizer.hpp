#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "base/error.hpp"

namespace baton::engine {

/// A llama2.c tokenizer (tokenizer.bin / tok512.bin): int32 max_token_length, then per
/// token a float32 score, an int32 length and the bytes. Immutable after load, so safe to
/// share between threads.
class tokenizer {
 public:
  static constexpr std::int32_t bos = 1;  ///< beginning of sequence
  static constexpr std::int32_t eos = 2;  ///< end of sequence
  /// Ids 3..258 are the byte-fallback tokens <0x00>..<0xFF>.
  static constexpr std::int32_t byte_offset = 3;

  /// Reads `path`, which must hold exactly `vocab_size` tokens (the count comes from the
  /// model). Malformed files give errc::invalid_argument naming the file, the token and
  /// the field; a missing file gives errc::not_found.
  [[nodiscard]] static expected<tokenizer> load(const std::string& path, std::int32_t vocab_size);
  /// The tokenizer write_synthetic_tokenizer() writes, built in memory.
  [[nodiscard]] static expected<tokenizer> synthetic(std::int32_t vocab);

  // Move-only: the lookup table holds views into pieces_.
  tokenizer(tokenizer&&) noexcept = default;
  tokenizer& operator=(tokenizer&&) noexcept = default;
  tokenizer(const tokenizer&) = delete;
  tokenizer& operator=(const tokenizer&) = delete;
  ~tokenizer() = default;

  /// llama2.c's encode: optional BOS, a leading " " token when `text` is not empty, one
  /// token per UTF-8 code point (bytes as fallback), then greedy merges of the adjacent
  /// pair with the highest score (the leftmost on ties), optional EOS.
  [[nodiscard]] std::vector<std::int32_t> encode(std::string_view text, bool add_bos,
                                                 bool add_eos) const;

  /// The text of `token` following `prev`: the leading space is dropped after BOS, and
  /// <0xNN> pieces become the raw byte. `token` must be in range.
  [[nodiscard]] std::string decode(std::int32_t prev, std::int32_t token) const;

  [[nodiscard]] std::int32_t vocab_size() const {
    return static_cast<std::int32_t>(pieces_.size());
  }
  [[nodiscard]] const std::string& piece(std::int32_t token) const;
  [[nodiscard]] float score(std::int32_t token) const;

 private:
  tokenizer() = default;
  [[nodiscard]] std::int32_t lookup(std::string_view piece) const;
  /// encode()'s merges of adjacent pairs, in place.
  void merge_pairs(std::vector<std::int32_t>& tokens) const;

  std::vector<std::string> pieces_;
  std::vector<float> scores_;
  std::unordered_map<std::string_view, std::int32_t> ids_;  ///< views into pieces_
};

/// llama2.c's safe_printf filter: a piece that is a single byte neither printable nor
/// whitespace prints as nothing; everything else prints unchanged.
[[nodiscard]] std::string_view printable(std::string_view piece);

/// Writes a llama2.c tokenizer of `vocab` distinct pieces (vocab >= 259): <unk>, <s>,
/// </s>, the 256 byte tokens, then printable ASCII characters and two-letter pieces. Any
/// text encodes (bytes fall back); for synthetic models, whose text means nothing.
[[nodiscard]] expected<void> write_synthetic_tokenizer(const std::string& path, std::int32_t vocab);

}  // namespace baton::engine
