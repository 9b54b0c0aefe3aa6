#include "engine/tokenizer.hpp"

#include <algorithm>
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

void tokenizer::merge_pairs(std::vector<std::int32_t>& tokens) const {
  // llama2.c's loop merges the best-scoring adjacent pair (the leftmost on ties, and only
  // above a score of -1e10) until no pair is in the vocabulary: a scan of every pair per
  // merge, O(n^2). The same merges in the same order, in O(n log n): the candidate pairs in
  // a heap by (score, leftmost), the tokens in a linked list; a candidate whose tokens
  // changed since it was pushed is skipped when it comes up.
  const std::size_t n = tokens.size();
  if (n < 2) return;
  constexpr std::size_t none = ~std::size_t{0};
  std::vector<std::size_t> next(n), prev(n);
  std::vector<std::uint32_t> version(n, 0);
  for (std::size_t i = 0; i < n; ++i) {
    next[i] = i + 1 < n ? i + 1 : none;
    prev[i] = i > 0 ? i - 1 : none;
  }
  struct candidate {
    float score;
    std::size_t left;
    std::size_t right;
    std::uint32_t left_version;
    std::uint32_t right_version;
    std::int32_t id;
    bool operator<(const candidate& o) const {  // the heap's top: best score, then leftmost
      return score != o.score ? score < o.score : left > o.left;
    }
  };
  std::vector<candidate> heap;
  std::string pair;
  const auto offer = [&](std::size_t left) {
    if (left == none || next[left] == none) return;
    const std::size_t right = next[left];
    pair = piece(tokens[left]);
    pair += piece(tokens[right]);
    const std::int32_t id = lookup(pair);
    if (id < 0 || !(score(id) > -1e10f)) return;
    heap.push_back({score(id), left, right, version[left], version[right], id});
    std::push_heap(heap.begin(), heap.end());
  };
  for (std::size_t i = 0; i + 1 < n; ++i) offer(i);
  std::vector<bool> gone(n, false);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end());
    const candidate c = heap.back();
    heap.pop_back();
    if (gone[c.left] || gone[c.right] || next[c.left] != c.right ||
        version[c.left] != c.left_version || version[c.right] != c.right_version) {
      continue;  // one of its tokens merged since
    }
    tokens[c.left] = c.id;
    ++version[c.left];
    gone[c.right] = true;
    next[c.left] = next[c.right];
    if (next[c.right] != none) prev[next[c.right]] = c.left;
    offer(prev[c.left]);
    offer(c.left);
  }
  std::size_t out = 0;
  for (std::size_t i = 0; i < n; ++i) {
    if (!gone[i]) tokens[out++] = tokens[i];
  }
  tokens.resize(out);
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
  merge_pairs(tokens);
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

expected<tokenizer> tokenizer::synthetic(std::int32_t vocab) {
  if (vocab < byte_offset + 256 || vocab > byte_offset + 256 + 95 + 26 * 26) {
    return fail(errc::invalid_argument,
                fmt::format("synthetic tokenizer: vocab {} outside [259, 1030]", vocab));
  }
  tokenizer t;
  t.pieces_ = {"<unk>", "<s>", "</s>"};
  for (int b = 0; b < 256; ++b) t.pieces_.push_back(fmt::format("<0x{:02X}>", b));
  for (char c = ' '; c <= '~'; ++c) t.pieces_.emplace_back(1, c);
  for (char a = 'a'; a <= 'z'; ++a) {
    for (char b = 'a'; b <= 'z'; ++b) t.pieces_.push_back(std::string{a, b});
  }
  t.pieces_.resize(static_cast<std::size_t>(vocab));
  for (std::size_t i = 0; i < t.pieces_.size(); ++i) {
    t.scores_.push_back(-static_cast<float>(i));  // earlier pieces merge first
    t.ids_.emplace(t.pieces_[i], static_cast<std::int32_t>(i));
  }
  return t;
}

expected<void> write_synthetic_tokenizer(const std::string& path, std::int32_t vocab) {
  auto t = tokenizer::synthetic(vocab);
  if (!t) return tl::unexpected(t.error());
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> out(std::fopen(path.c_str(), "wb"), &std::fclose);
  if (!out) return fail(errc::failed, fmt::format("{}: {}", path, std::strerror(errno)));
  const auto put = [&](const void* p, std::size_t n) {
    return std::fwrite(p, 1, n, out.get()) == n;
  };
  const std::int32_t max_length = 6;  // "<0xNN>"
  bool ok = put(&max_length, 4);
  for (std::int32_t i = 0; i < vocab && ok; ++i) {
    const float score = t->score(i);
    const auto& piece = t->piece(i);
    const auto length = static_cast<std::int32_t>(piece.size());
    ok = put(&score, 4) && put(&length, 4) && put(piece.data(), piece.size());
  }
  if (!ok) return fail(errc::failed, fmt::format("{}: write failed", path));
  return {};
}

}  // namespace baton::engine
