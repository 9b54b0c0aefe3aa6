#include "engine/tokenizer.hpp"

#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

#include <fmt/format.h>

#include "base/check.hpp"

namespace baton::engine {
namespace {

struct file_closer {
  void operator()(std::FILE* f) const { std::fclose(f); }
};

expected<std::vector<char>> read_all(const std::string& path) {
  std::unique_ptr<std::FILE, file_closer> in(std::fopen(path.c_str(), "rb"));
  if (!in) return fail(errc::not_found, path + ": cannot open: " + std::strerror(errno));
  std::vector<char> data;
  char buffer[65536];
  std::size_t n = 0;
  while ((n = std::fread(buffer, 1, sizeof(buffer), in.get())) > 0) {
    data.insert(data.end(), buffer, buffer + n);
  }
  if (std::ferror(in.get()) != 0) return fail(errc::failed, path + ": read failed");
  return data;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

}  // namespace

expected<tokenizer> tokenizer::load(const std::string& path, std::int32_t vocab_size) {
  auto data = read_all(path);
  if (!data) return tl::unexpected(data.error());
  std::size_t at = 0;
  const auto read_i32 = [&](std::int32_t& v) {
    if (data->size() - at < 4) return false;
    std::memcpy(&v, data->data() + at, 4);
    at += 4;
    return true;
  };
  std::int32_t max_token_length = 0;
  if (!read_i32(max_token_length) || max_token_length <= 0) {
    return fail(errc::invalid_argument,
                fmt::format("{}: max_token_length is missing or not positive", path));
  }
  tokenizer t;
  t.pieces_.reserve(static_cast<std::size_t>(vocab_size));
  t.scores_.reserve(static_cast<std::size_t>(vocab_size));
  for (std::int32_t id = 0; id < vocab_size; ++id) {
    std::int32_t score_bits = 0;
    std::int32_t length = 0;
    if (!read_i32(score_bits) || !read_i32(length)) {
      return fail(errc::invalid_argument,
                  fmt::format("{}: file is {} bytes and ends inside token {} (score, length); "
                              "expected {} tokens (the model's vocab_size)",
                              path, data->size(), id, vocab_size));
    }
    if (length < 0 || length > max_token_length) {
      return fail(errc::invalid_argument,
                  fmt::format("{}: token {} has length {}, expected 0..{} (max_token_length)", path,
                              id, length, max_token_length));
    }
    if (data->size() - at < static_cast<std::size_t>(length)) {
      return fail(errc::invalid_argument,
                  fmt::format("{}: file is {} bytes and ends inside the {} bytes of token {}", path,
                              data->size(), length, id));
    }
    float score = 0;
    std::memcpy(&score, &score_bits, sizeof(score));
    t.scores_.push_back(score);
    t.pieces_.emplace_back(data->data() + at, static_cast<std::size_t>(length));
    at += static_cast<std::size_t>(length);
  }
  if (at != data->size()) {
    return fail(errc::invalid_argument,
                fmt::format("{}: {} bytes left after {} tokens; expected the file to end "
                            "(vocab_size mismatch with the model?)",
                            path, data->size() - at, vocab_size));
  }
  if (vocab_size < byte_offset + 256) {
    return fail(errc::invalid_argument,
                fmt::format("{}: vocab_size {} has no room for the 256 byte-fallback tokens "
                            "at ids 3..258",
                            path, vocab_size));
  }
  for (std::int32_t id = 0; id < vocab_size; ++id) {
    t.ids_.emplace(t.pieces_[static_cast<std::size_t>(id)], id);  // first id wins
  }
  return t;
}

const std::string& tokenizer::piece(std::int32_t token) const {
  BATON_CHECK(token >= 0 && token < vocab_size(), "token id out of range");
  return pieces_[static_cast<std::size_t>(token)];
}

float tokenizer::score(std::int32_t token) const {
  BATON_CHECK(token >= 0 && token < vocab_size(), "token id out of range");
  return scores_[static_cast<std::size_t>(token)];
}

std::int32_t tokenizer::lookup(std::string_view text) const {
  const auto it = ids_.find(text);
  return it == ids_.end() ? -1 : it->second;
}

std::vector<std::int32_t> tokenizer::encode(std::string_view text, bool add_bos,
                                            bool add_eos) const {
  std::vector<std::int32_t> tokens;
  if (add_bos) tokens.push_back(bos);
  if (!text.empty()) {
    const std::int32_t space = lookup(" ");
    tokens.push_back(space >= 0 ? space : byte_offset + ' ');
  }
  const auto push_bytes = [&](std::string_view bytes) {
    const std::int32_t id = lookup(bytes);
    if (id >= 0) {
      tokens.push_back(id);
      return;
    }
    for (const char c : bytes) tokens.push_back(static_cast<unsigned char>(c) + byte_offset);
  };
  std::size_t start = 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if ((c & 0xC0) != 0x80) start = i;
    const bool next_continues =
        i + 1 < text.size() && (static_cast<unsigned char>(text[i + 1]) & 0xC0) == 0x80;
    if (next_continues && i + 1 - start < 4) continue;
    push_bytes(text.substr(start, i + 1 - start));
    start = i + 1;
  }
  // llama2.c's loop: merge the best-scoring adjacent pair (the first on ties) until no pair
  // is in the vocabulary. Each pair's merged id is kept, so a merge looks up only the two
  // pairs it changes instead of every pair again.
  std::string pair;
  const auto merged_id = [&](std::size_t i) {
    pair = piece(tokens[i]);
    pair += piece(tokens[i + 1]);
    return lookup(pair);
  };
  std::vector<std::int32_t> merges;  // merges[i]: tokens[i] and tokens[i + 1] as one id, or -1
  for (std::size_t i = 0; i + 1 < tokens.size(); ++i) merges.push_back(merged_id(i));
  while (true) {
    float best_score = -1e10f;
    std::int32_t best_id = -1;
    std::size_t best_index = 0;
    for (std::size_t i = 0; i < merges.size(); ++i) {
      if (merges[i] >= 0 && score(merges[i]) > best_score) {
        best_score = score(merges[i]);
        best_id = merges[i];
        best_index = i;
      }
    }
    if (best_id < 0) break;
    tokens[best_index] = best_id;
    tokens.erase(tokens.begin() + static_cast<std::ptrdiff_t>(best_index) + 1);
    merges.erase(merges.begin() + static_cast<std::ptrdiff_t>(best_index));
    if (best_index < merges.size()) merges[best_index] = merged_id(best_index);
    if (best_index > 0) merges[best_index - 1] = merged_id(best_index - 1);
  }
  if (add_eos) tokens.push_back(eos);
  return tokens;
}

std::string tokenizer::decode(std::int32_t prev, std::int32_t token) const {
  std::string_view text = piece(token);
  if (prev == bos && !text.empty() && text.front() == ' ') text.remove_prefix(1);
  if (text.size() == 6 && text.substr(0, 3) == "<0x" && text[5] == '>') {
    const int hi = hex_value(text[3]);
    const int lo = hex_value(text[4]);
    if (hi >= 0 && lo >= 0) return std::string(1, static_cast<char>(hi * 16 + lo));
  }
  return std::string(text);
}

std::string_view printable(std::string_view piece) {
  if (piece.size() == 1) {
    const auto byte = static_cast<unsigned char>(piece[0]);
    if (std::isprint(byte) == 0 && std::isspace(byte) == 0) return {};
  }
  return piece;
}

expected<void> write_synthetic_tokenizer(const std::string& path, std::int32_t vocab) {
  if (vocab < tokenizer::byte_offset + 256 || vocab > tokenizer::byte_offset + 256 + 95 + 26 * 26) {
    return fail(errc::invalid_argument,
                fmt::format("synthetic tokenizer: vocab {} outside [259, 1030]", vocab));
  }
  std::vector<std::string> pieces = {"<unk>", "<s>", "</s>"};
  for (int b = 0; b < 256; ++b) pieces.push_back(fmt::format("<0x{:02X}>", b));
  for (char c = ' '; c <= '~'; ++c) pieces.emplace_back(1, c);
  for (char a = 'a'; a <= 'z'; ++a) {
    for (char b = 'a'; b <= 'z'; ++b) pieces.push_back(std::string{a, b});
  }
  pieces.resize(static_cast<std::size_t>(vocab));
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> out(std::fopen(path.c_str(), "wb"), &std::fclose);
  if (!out) return fail(errc::failed, fmt::format("{}: {}", path, std::strerror(errno)));
  const auto put = [&](const void* p, std::size_t n) {
    return std::fwrite(p, 1, n, out.get()) == n;
  };
  const std::int32_t max_length = 6;  // "<0xNN>"
  bool ok = put(&max_length, 4);
  for (std::size_t i = 0; i < pieces.size() && ok; ++i) {
    const float score = -static_cast<float>(i);  // earlier pieces merge first
    const auto length = static_cast<std::int32_t>(pieces[i].size());
    ok = put(&score, 4) && put(&length, 4) && put(pieces[i].data(), pieces[i].size());
  }
  if (!ok) return fail(errc::failed, fmt::format("{}: write failed", path));
  return {};
}

}  // namespace baton::engine
