#include "engine/emulated_engine.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>

#include <fmt/format.h>
#include <xxhash.h>

#include "base/check.hpp"
#include "engine/kv_transfer.hpp"

namespace baton::engine {

struct emulated_engine::sequence_state {
  bool live = false;
  std::size_t length = 0;
  std::vector<block_id> blocks;
};

namespace {

std::uint64_t splitmix64(std::uint64_t& state) {
  std::uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

/// The seed of the KV at (token, position, layer): XXH3 of the three as 64-bit words.
std::uint64_t kv_seed(std::int32_t token, std::size_t position, std::size_t layer) {
  const std::array<std::uint64_t, 3> words{static_cast<std::uint64_t>(token),
                                           static_cast<std::uint64_t>(position),
                                           static_cast<std::uint64_t>(layer)};
  return XXH3_64bits(words.data(), sizeof(words));
}

/// A float in [-1, 1) from the top 24 bits: exact, never NaN, so bytes are reproducible.
float to_unit_float(std::uint64_t bits) {
  return static_cast<float>(bits >> 40) * (1.0f / 8388608.0f) - 1.0f;
}

std::size_t ceil_div(std::size_t a, std::size_t b) {
  return (a + b - 1) / b;
}

std::string_view digest_name(token_digest d) {
  return d == token_digest::whole_sequence ? "whole" : "last";
}

std::string_view precision_name(precision p) {
  return p == precision::fp8 ? "fp8" : "bf16";
}

}  // namespace

expected<kv_layout> emulated_kv_layout(const model_shape& shape, const emulated_options& options) {
  // Bytes of one position's keys in one layer (values are as many), as stored for real.
  const std::uint64_t real_bytes =
      shape.n_kv_heads * shape.head_dim * element_bytes(options.numbers);
  if (options.scale == 0 || real_bytes % (sizeof(float) * options.scale) != 0) {
    return fail(errc::invalid_argument,
                fmt::format("emulated engine: scale {} must divide {} (the {} shape's key "
                            "bytes per position and layer, {}, in floats)",
                            options.scale, real_bytes / sizeof(float), shape.name, real_bytes));
  }
  kv_layout layout;
  layout.n_layers = shape.n_layers;
  layout.kv_dim = real_bytes / (sizeof(float) * options.scale);
  layout.head_size =
      layout.kv_dim % shape.n_kv_heads == 0 ? layout.kv_dim / shape.n_kv_heads : layout.kv_dim;
  layout.block_tokens = options.block_tokens;
  return layout;
}

std::string emulated_numerics(const model_shape& shape, const emulated_options& options) {
  return fmt::format("{} shape={} scale={} numbers={} block_tokens={} digest={} vocab={}",
                     emulated_engine_version, shape.name, options.scale,
                     precision_name(options.numbers), options.block_tokens,
                     digest_name(options.digest), options.vocab_size);
}

expected<std::unique_ptr<emulated_engine>> emulated_engine::create(
    const hardware_profile& profile, const model_shape& shape, const emulated_options& options) {
  const auto bad = [](const std::string& what) {
    return fail(errc::invalid_argument, "emulated engine: " + what);
  };
  if (options.block_tokens == 0 || options.max_sequences == 0 || options.max_context == 0) {
    return bad("block_tokens, max_sequences and max_context must be positive");
  }
  if (options.max_context > shape.max_context) {
    return bad(fmt::format("max_context {} exceeds the {} shape's {}", options.max_context,
                           shape.name, shape.max_context));
  }
  if (!(options.time_scale >= 0.0) || !std::isfinite(options.time_scale)) {
    return bad(fmt::format("time_scale {} must be finite and >= 0", options.time_scale));
  }
  const std::uint64_t vocab =
      options.vocab_size > 0 ? static_cast<std::uint64_t>(options.vocab_size) : shape.vocab_size;
  if (options.vocab_size < 0 || vocab < 2 ||
      vocab > static_cast<std::uint64_t>(std::numeric_limits<std::int32_t>::max())) {
    return bad(fmt::format("vocab_size {} must be in [2, 2^31)", vocab));
  }
  auto layout = emulated_kv_layout(shape, options);
  if (!layout) return tl::unexpected(layout.error());
  // Fails here (not in every step) on fp8 without an fp8 peak.
  if (auto p = predict_prefill(profile, shape, 1, 0, options.numbers); !p) {
    return tl::unexpected(p.error());
  }
  emulated_options resolved = options;
  resolved.vocab_size = static_cast<std::int32_t>(vocab);
  if (resolved.kv_blocks == 0) {
    resolved.kv_blocks =
        options.max_sequences * ceil_div(options.max_context, options.block_tokens);
  }
  const double pool_bytes = static_cast<double>(resolved.kv_blocks) *
                            static_cast<double>(layout->block_floats() * sizeof(float));
  if (pool_bytes > static_cast<double>(max_pool_bytes) || resolved.kv_blocks > UINT32_MAX) {
    return bad(
        fmt::format("a pool of {} blocks takes {:.3g} bytes, over the {} byte limit; "
                    "raise scale or lower kv_blocks",
                    resolved.kv_blocks, pool_bytes, max_pool_bytes));
  }
  const std::size_t need = resolved.kv_blocks * layout->block_bytes();
  if (!options.kv_memory.empty() && options.kv_memory.size() < need) {
    return bad(fmt::format("kv_memory holds {} bytes; {} blocks need {}", options.kv_memory.size(),
                           resolved.kv_blocks, need));
  }
  if (reinterpret_cast<std::uintptr_t>(options.kv_memory.data()) % alignof(float) != 0) {
    return bad("kv_memory is not aligned for float");
  }
  return std::make_unique<emulated_engine>(passkey{}, profile, shape, resolved, *layout);
}

emulated_engine::emulated_engine(passkey /*key*/, hardware_profile profile, model_shape shape,
                                 const emulated_options& options, const kv_layout& layout)
    : profile_(std::move(profile)),
      shape_(std::move(shape)),
      options_(options),
      pool_(options.kv_memory.empty()
                ? std::make_unique<kv_pool>(layout, options.kv_blocks)
                : std::make_unique<kv_pool>(layout, options.kv_blocks, options.kv_memory)),
      sequences_(options.max_sequences) {}

emulated_engine::~emulated_engine() = default;

std::string emulated_engine::fingerprint() const {
  return fmt::format("emulated:{} {}", profile_.name, emulated_numerics(shape_, options_));
}

std::string emulated_engine::describe() const {
  const std::uint64_t real = kv_bytes_per_token(shape_, options_.numbers);
  return fmt::format(
      "emulated:{} ({}) shape {} ({}); KV {} B/position modelled, {} B stored "
      "(scale {}); time scale {}",
      profile_.name, profile_.description, shape_.name, shape_.source, real, real / options_.scale,
      options_.scale, options_.time_scale);
}

emulated_engine::sequence_state& emulated_engine::state(sequence_id sequence) {
  const auto index = static_cast<std::size_t>(sequence);
  BATON_CHECK(index < sequences_.size() && sequences_[index].live, "unknown sequence id");
  return sequences_[index];
}

const emulated_engine::sequence_state& emulated_engine::state(sequence_id sequence) const {
  const auto index = static_cast<std::size_t>(sequence);
  BATON_CHECK(index < sequences_.size() && sequences_[index].live, "unknown sequence id");
  return sequences_[index];
}

expected<sequence_id> emulated_engine::add_sequence() {
  for (std::size_t i = 0; i < sequences_.size(); ++i) {
    if (!sequences_[i].live) {
      sequences_[i] = sequence_state{true, 0, {}};
      return static_cast<sequence_id>(i);
    }
  }
  return fail(errc::overloaded,
              fmt::format("emulated engine: all {} sequence slots are in use", sequences_.size()));
}

expected<sequence_id> emulated_engine::fork_sequence(sequence_id sequence) {
  const std::size_t length = state(sequence).length;
  auto blocks = pool_->fork(state(sequence).blocks, length);
  if (!blocks) return tl::unexpected(blocks.error());
  auto id = add_sequence();
  if (!id) {
    for (const block_id b : *blocks) pool_->release(b);
    return id;
  }
  sequence_state& s = state(*id);
  s.blocks = std::move(*blocks);
  s.length = length;
  return id;
}

void emulated_engine::remove_sequence(sequence_id sequence) {
  sequence_state& s = state(sequence);
  for (const block_id block : s.blocks) pool_->release(block);
  s = sequence_state{};
}

std::size_t emulated_engine::length(sequence_id sequence) const {
  return state(sequence).length;
}

std::span<const block_id> emulated_engine::blocks(sequence_id sequence) const {
  return state(sequence).blocks;
}

expected<void> emulated_engine::check_tokens(std::span<const std::int32_t> tokens) const {
  for (const std::int32_t t : tokens) {
    if (t < 0 || t >= options_.vocab_size) {
      return fail(
          errc::invalid_argument,
          fmt::format("emulated engine: token {} is outside [0, {})", t, options_.vocab_size));
    }
  }
  return {};
}

void emulated_engine::append(sequence_state& s, std::int32_t token) {
  const kv_layout& layout = pool_->layout();
  const std::size_t position = s.length;
  if (position / layout.block_tokens == s.blocks.size()) {
    auto block = pool_->allocate();
    BATON_CHECK(block.has_value(), "blocks were counted before appending");
    s.blocks.push_back(*block);
  }
  const block_id block = s.blocks[position / layout.block_tokens];
  const std::size_t row = position % layout.block_tokens;
  const std::size_t heads = layout.kv_dim / layout.head_size;
  for (std::size_t layer = 0; layer < layout.n_layers; ++layer) {
    std::uint64_t stream = kv_seed(token, position, layer);
    const std::span<float> slice = pool_->slice(block, layer);
    // Keys then values, each [heads][block_tokens][head_size] (kv_cache.hpp).
    for (std::size_t half = 0; half < 2; ++half) {
      float* base = slice.data() + half * layout.block_tokens * layout.kv_dim;
      for (std::size_t h = 0; h < heads; ++h) {
        float* out = base + (h * layout.block_tokens + row) * layout.head_size;
        for (std::size_t i = 0; i < layout.head_size; ++i) {
          out[i] = to_unit_float(splitmix64(stream));
        }
      }
    }
  }
  ++s.length;
}

std::int32_t emulated_engine::next_token(sequence_id sequence) const {
  const sequence_state& s = state(sequence);
  const kv_layout& layout = pool_->layout();
  XXH3_state_t* hash = XXH3_createState();
  BATON_CHECK(hash != nullptr, "out of memory");
  XXH3_64bits_reset(hash);
  const std::uint64_t length = s.length;
  XXH3_64bits_update(hash, &length, sizeof(length));
  if (options_.digest == token_digest::whole_sequence) {
    // Zeroed past the length, so whole blocks hash only what the positions hold.
    for (const block_id block : s.blocks) {
      XXH3_64bits_update(hash, pool_->slice(block, 0).data(),
                         layout.block_floats() * sizeof(float));
    }
  } else if (s.length > 0) {
    const std::size_t position = s.length - 1;
    const block_id block = s.blocks[position / layout.block_tokens];
    const std::size_t row = position % layout.block_tokens;
    for (std::size_t layer = 0; layer < layout.n_layers; ++layer) {
      const float* slice = pool_->slice(block, layer).data();
      for (std::size_t half = 0; half < 2; ++half) {
        for (std::size_t h = 0; h < layout.kv_dim / layout.head_size; ++h) {
          const float* at = slice + half * layout.block_tokens * layout.kv_dim +
                            (h * layout.block_tokens + row) * layout.head_size;
          XXH3_64bits_update(hash, at, layout.head_size * sizeof(float));
        }
      }
    }
  }
  const std::uint64_t digest = XXH3_64bits_digest(hash);
  XXH3_freeState(hash);
  const auto vocab = static_cast<std::uint64_t>(options_.vocab_size);
  auto token = static_cast<std::int32_t>(digest % vocab);
  if (token == emulated_bos_token) token = static_cast<std::int32_t>((digest + 1) % vocab);
  return token;
}

expected<emulated_step> emulated_engine::prefill(sequence_id sequence,
                                                 std::span<const std::int32_t> tokens) {
  sequence_state& s = state(sequence);
  if (tokens.empty()) return fail(errc::invalid_argument, "emulated engine: empty prefill");
  if (auto ok = check_tokens(tokens); !ok) return tl::unexpected(ok.error());
  if (s.length + tokens.size() > options_.max_context) {
    return fail(errc::invalid_argument,
                fmt::format("emulated engine: {} + {} positions exceed max_context {}", s.length,
                            tokens.size(), options_.max_context));
  }
  const std::size_t needed =
      ceil_div(s.length + tokens.size(), options_.block_tokens) - s.blocks.size();
  if (needed > pool_->free_blocks()) {
    return fail(errc::overloaded, fmt::format("emulated engine: {} KV blocks needed, {} free",
                                              needed, pool_->free_blocks()));
  }
  auto predicted = predict_prefill(profile_, shape_, tokens.size(), s.length, options_.numbers);
  BATON_CHECK(predicted.has_value(), "create() checked that the profile predicts");
  for (const std::int32_t t : tokens) append(s, t);
  tokens_.assign(1, next_token(sequence));
  const auto modelled = std::chrono::nanoseconds(
      std::llround(static_cast<double>(predicted->time.count()) * options_.time_scale));
  return emulated_step{tokens_, modelled};
}

expected<emulated_step> emulated_engine::decode(std::span<const decode_input> batch) {
  if (batch.empty()) return fail(errc::invalid_argument, "emulated engine: empty decode batch");
  std::size_t needed = 0;
  std::vector<std::size_t> contexts;
  contexts.reserve(batch.size());
  for (std::size_t i = 0; i < batch.size(); ++i) {
    const sequence_state& s = state(batch[i].sequence);
    for (std::size_t j = 0; j < i; ++j) {
      if (batch[j].sequence == batch[i].sequence) {
        return fail(errc::invalid_argument,
                    fmt::format("emulated engine: sequence {} appears twice in one batch",
                                static_cast<std::uint32_t>(batch[i].sequence)));
      }
    }
    if (auto ok = check_tokens(std::span(&batch[i].token, 1)); !ok) {
      return tl::unexpected(ok.error());
    }
    if (s.length + 1 > options_.max_context) {
      return fail(errc::invalid_argument,
                  fmt::format("emulated engine: sequence {} is at max_context {}",
                              static_cast<std::uint32_t>(batch[i].sequence), options_.max_context));
    }
    if (s.length % options_.block_tokens == 0) ++needed;
    contexts.push_back(s.length + 1);
  }
  if (needed > pool_->free_blocks()) {
    return fail(errc::overloaded, fmt::format("emulated engine: {} KV blocks needed, {} free",
                                              needed, pool_->free_blocks()));
  }
  auto predicted = predict_decode_step(profile_, shape_, contexts, options_.numbers);
  BATON_CHECK(predicted.has_value(), "create() checked that the profile predicts");
  tokens_.clear();
  for (const decode_input& in : batch) {
    append(state(in.sequence), in.token);
    tokens_.push_back(next_token(in.sequence));
  }
  const auto modelled = std::chrono::nanoseconds(
      std::llround(static_cast<double>(predicted->time.count()) * options_.time_scale));
  return emulated_step{tokens_, modelled};
}

expected<sequence_id> emulated_engine::reserve_sequence(std::size_t length) {
  if (length > options_.max_context) {
    return fail(errc::invalid_argument,
                fmt::format("emulated engine: reserving {} positions, over max_context {}", length,
                            options_.max_context));
  }
  const std::size_t needed = ceil_div(length, options_.block_tokens);
  if (needed > pool_->free_blocks()) {
    return fail(errc::overloaded, fmt::format("emulated engine: {} KV blocks needed, {} free",
                                              needed, pool_->free_blocks()));
  }
  auto sequence = add_sequence();
  if (!sequence) return sequence;
  sequence_state& s = state(*sequence);
  for (std::size_t i = 0; i < needed; ++i) {
    auto block = pool_->allocate();
    BATON_CHECK(block.has_value(), "blocks were counted before reserving");
    s.blocks.push_back(*block);
  }
  s.length = length;
  return sequence;
}

std::vector<std::uint64_t> block_checksums(const emulated_engine& engine, sequence_id sequence) {
  return block_checksums(engine.pool(), engine.blocks(sequence));
}

}  // namespace baton::engine
