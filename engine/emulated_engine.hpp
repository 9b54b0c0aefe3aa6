#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "base/error.hpp"
#include "engine/cpu_engine.hpp"
#include "engine/kv_cache.hpp"
#include "engine/roofline.hpp"

namespace baton::engine {

/// The emulated engine's version; part of its fingerprint.
inline constexpr const char* emulated_engine_version = "baton-emulated-engine 0.1.0";

/// What the next token is a function of.
enum class token_digest : std::uint8_t {
  /// XXH3 of every KV byte the sequence holds: any wrong byte anywhere changes the next
  /// token. Costs O(length x kv bytes per position / scale) per sequence and step.
  whole_sequence,
  /// XXH3 of the last position's KV in every layer: O(layers) per step, but blind to
  /// damage at earlier positions.
  last_position,
};

struct emulated_options {
  /// Stored KV slices are the modelled shape's real (layer, block) slice bytes divided by
  /// `scale`, so a 70B cache fits a small machine. Must divide the real bytes of one
  /// position's keys in one layer, counted in floats (512 for Llama-3.1 at BF16).
  std::size_t scale = 1;
  /// Reported time = predicted time x time_scale; 0 means zero compute time.
  double time_scale = 1.0;
  precision numbers = precision::bf16;  ///< of weights, KV and arithmetic
  std::size_t block_tokens = 16;        ///< positions per KV block
  std::size_t max_sequences = 8;        ///< live sequences at once
  std::size_t max_context = 4096;       ///< positions per sequence (<= the shape's)
  /// Blocks in the pool, allocated up front; 0 means max_sequences x max_context.
  std::size_t kv_blocks = 0;
  /// Tokens are in [0, vocab_size); 0 means the shape's vocabulary.
  std::int32_t vocab_size = 0;
  token_digest digest = token_digest::whole_sequence;
  /// When non-empty, the KV pool lives here (caller-owned, typically a transport-registered
  /// region; aligned for float; outliving the engine; at least kv_blocks x block bytes)
  /// instead of in memory the engine allocates. kv_blocks must then be set.
  std::span<std::byte> kv_memory;
};

/// The stored KV layout of `shape` at `options` (floats, as kv_pool counts them);
/// errc::invalid_argument when `scale` does not divide one position's key bytes.
[[nodiscard]] expected<kv_layout> emulated_kv_layout(const model_shape& shape,
                                                     const emulated_options& options);

/// What makes emulated engines interchangeable: "<version> shape=... scale=... ...", every
/// option that changes KV bytes or tokens, and not the profile, which changes only the
/// modelled time. Engines with equal numerics give identical KV and tokens. `options`
/// must name the vocabulary (vocab_size > 0).
[[nodiscard]] std::string emulated_numerics(const model_shape& shape,
                                            const emulated_options& options);

/// The result of one prefill or decode step.
struct emulated_step {
  /// The next token of each sequence, in batch order (one for prefill); valid until the
  /// next call.
  std::span<const std::int32_t> tokens;
  /// How long the profile would have taken (x time_scale). The call itself returned at
  /// once: the caller arms a timer for this long before it publishes the tokens.
  std::chrono::nanoseconds modelled{0};
};

/// The token the emulated engines never produce (llama2.c's BOS, which ends a llama2.c
/// generation): a digest landing on it yields the next id instead.
inline constexpr std::int32_t emulated_bos_token = 1;

/// An engine that does no model arithmetic: it writes deterministic KV of the modelled
/// shape's real size (/ scale) into a kv_pool, draws each next token from that KV, and
/// reports the time a hardware profile would take (roofline.hpp). KV content at (layer,
/// position) is a function of (token, position, layer) alone: a splitmix64 stream seeded
/// with XXH3 of the three, as floats in [-1, 1). So two emulated engines with equal
/// fingerprints give the same blocks (same block_checksum) and tokens, and KV that moves
/// wrongly changes the tokens. API as cpu_engine's; never blocks for the modelled time.
///
/// Not thread-safe: one owner calls it.
class emulated_engine {
 public:
  /// errc::invalid_argument for a scale that does not divide the KV, limits of zero, a
  /// max_context past the shape's, or a pool over max_pool_bytes.
  [[nodiscard]] static expected<std::unique_ptr<emulated_engine>> create(
      const hardware_profile& profile, const model_shape& shape, const emulated_options& options);
  /// Largest KV pool create() accepts (64 GiB): a limit against a forgotten `scale`.
  static constexpr std::size_t max_pool_bytes = std::size_t{1} << 36;

  /// Only create() can make this key; the constructor is public for make_unique.
  class passkey {
    friend class emulated_engine;
    passkey() = default;
  };
  emulated_engine(passkey key, hardware_profile profile, model_shape shape,
                  const emulated_options& options, const kv_layout& layout);
  emulated_engine(const emulated_engine&) = delete;
  emulated_engine& operator=(const emulated_engine&) = delete;
  ~emulated_engine();

  /// "emulated:<profile> " + emulated_numerics(): equal numerics give identical KV and
  /// tokens; the profile says whose timings are modelled.
  [[nodiscard]] std::string fingerprint() const;
  /// One line for logs: profile, shape, real and stored KV bytes per position.
  [[nodiscard]] std::string describe() const;
  [[nodiscard]] const hardware_profile& profile() const { return profile_; }
  [[nodiscard]] const model_shape& shape() const { return shape_; }
  [[nodiscard]] const emulated_options& options() const { return options_; }

  /// A new, empty sequence; errc::overloaded when max_sequences are live.
  [[nodiscard]] expected<sequence_id> add_sequence();
  /// A new sequence holding `sequence`'s positions, for another choice of its request:
  /// full KV blocks shared, the partly filled last one copied (kv_pool::fork).
  /// errc::overloaded when sequence slots or KV blocks run out.
  [[nodiscard]] expected<sequence_id> fork_sequence(sequence_id sequence);
  /// Ends `sequence` and frees its blocks. Unknown ids are a programming error.
  void remove_sequence(sequence_id sequence);
  /// Positions in the sequence's KV cache.
  [[nodiscard]] std::size_t length(sequence_id sequence) const;

  /// Appends `tokens` (at least one) and returns the next token and the modelled prefill
  /// time. Fails without side effects with errc::invalid_argument (bad token, past
  /// max_context) or errc::overloaded (no free KV blocks).
  [[nodiscard]] expected<emulated_step> prefill(sequence_id sequence,
                                                std::span<const std::int32_t> tokens);
  /// One step for a batch of distinct sequences: appends each token, returns each next
  /// token and the modelled step time. Errors as prefill().
  [[nodiscard]] expected<emulated_step> decode(std::span<const decode_input> batch);

  /// A sequence whose first `length` positions will arrive as KV from elsewhere; its
  /// blocks are allocated (zeroed) now. Errors as cpu_engine::reserve_sequence.
  [[nodiscard]] expected<sequence_id> reserve_sequence(std::size_t length);
  /// The token the sequence's KV implies now (what the last prefill/decode returned for it).
  [[nodiscard]] std::int32_t next_token(sequence_id sequence) const;

  [[nodiscard]] kv_pool& pool() { return *pool_; }
  [[nodiscard]] const kv_pool& pool() const { return *pool_; }
  /// The block table of `sequence`: block i holds positions [i*block_tokens, ...).
  [[nodiscard]] std::span<const block_id> blocks(sequence_id sequence) const;

 private:
  struct sequence_state;
  [[nodiscard]] sequence_state& state(sequence_id sequence);
  [[nodiscard]] const sequence_state& state(sequence_id sequence) const;
  [[nodiscard]] expected<void> check_tokens(std::span<const std::int32_t> tokens) const;
  void append(sequence_state& s, std::int32_t token);

  hardware_profile profile_;
  model_shape shape_;
  emulated_options options_;
  std::unique_ptr<kv_pool> pool_;
  std::vector<sequence_state> sequences_;
  std::vector<std::int32_t> tokens_;  ///< the last step's result
};

/// The checksums (kv_transfer.hpp's block_checksum) of every block of `sequence`.
[[nodiscard]] std::vector<std::uint64_t> block_checksums(const emulated_engine& engine,
                                                         sequence_id sequence);

}  // namespace baton::engine
