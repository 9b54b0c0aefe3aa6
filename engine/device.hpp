#pragma once

// What a serving node computes with: the topology's `device`. "cpu" is the reference
// engine doing real arithmetic on the model; "emulated:PROFILE" is the emulated engine,
// which writes KV of the modelled size, draws tokens from it and reports how long the
// profile's hardware would have taken. The serving state classes (actors/) drive either
// through this one interface.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.hpp"
#include "engine/cpu_engine.hpp"
#include "engine/emulated_engine.hpp"
#include "engine/kv_cache.hpp"
#include "engine/model.hpp"
#include "engine/roofline.hpp"
#include "engine/sampler.hpp"

namespace baton::engine {

/// The next token of each sequence of a prefill or decode step, in batch order (valid
/// until the device's next call), and the time the device is modelled to take: zero for
/// the CPU engine, which spent its time for real; the emulated engine returns at once and
/// its caller publishes the tokens only after `modelled`.
struct device_step {
  std::span<const std::int32_t> tokens;
  std::chrono::nanoseconds modelled{0};
};

/// A prefill/decode engine over a paged KV pool. Not thread-safe: one owner calls it.
/// Sequence, block and error semantics are cpu_engine's (cpu_engine.hpp).
class device {
 public:
  virtual ~device() = default;

  /// Equal numerics give bit-identical KV and tokens (the join handshake compares them).
  [[nodiscard]] virtual std::string numerics() const = 0;
  /// One line for logs; an emulated device says so.
  [[nodiscard]] virtual std::string describe() const = 0;
  [[nodiscard]] virtual bool emulated() const = 0;
  /// Positions a sequence may hold.
  [[nodiscard]] virtual std::size_t max_context() const = 0;
  /// Tokens are in [0, vocab_size()).
  [[nodiscard]] virtual std::int32_t vocab_size() const = 0;

  [[nodiscard]] virtual kv_pool& pool() = 0;
  [[nodiscard]] virtual const kv_pool& pool() const = 0;
  [[nodiscard]] virtual expected<sequence_id> add_sequence() = 0;
  virtual void remove_sequence(sequence_id sequence) = 0;
  [[nodiscard]] virtual std::size_t length(sequence_id sequence) const = 0;
  [[nodiscard]] virtual expected<sequence_id> reserve_sequence(std::size_t length) = 0;
  [[nodiscard]] virtual expected<sequence_id> fork_sequence(sequence_id sequence) = 0;
  [[nodiscard]] virtual std::span<const block_id> blocks(sequence_id sequence) const = 0;

  /// Appends `tokens` and picks the token after them once with each of `picks` (at least
  /// one: several choices of a request share the prompt's compute), returning one token
  /// per pick. The CPU engine samples its logits, each pick from a fresh copy; an emulated
  /// token is a function of the KV and draws nothing, so every pick gets the same one.
  /// `on_layer`, when not null, is told as each layer's KV becomes final
  /// (cpu_engine::prefill; an emulated device tells every layer once its KV is written).
  [[nodiscard]] virtual expected<device_step> prefill(sequence_id sequence,
                                                      std::span<const std::int32_t> tokens,
                                                      std::span<sampler* const> picks,
                                                      const layer_hook* on_layer) = 0;
  /// One step for a batch of distinct sequences; `picks[i]` picks for batch[i].
  [[nodiscard]] virtual expected<device_step> decode(std::span<const decode_input> batch,
                                                     std::span<sampler* const> picks) = 0;
};

/// An emulated device's parts, resolved from the topology's names.
struct emulated_setup {
  hardware_profile profile;
  model_shape shape;
  emulated_options options;
};

/// Resolves `device` ("emulated:PROFILE", a profile of profiles.toml) and `shape` (a named
/// shape of profiles.toml; empty: the checkpoint's own dimensions, "custom"). The
/// vocabulary is the checkpoint's, so its tokenizer decodes what the device generates;
/// max_context is capped by the shape's. errc::not_found naming what exists for an unknown
/// profile or shape, errc::invalid_argument for a device that is not "emulated:...".
[[nodiscard]] expected<emulated_setup> resolve_emulated(std::string_view device,
                                                        std::string_view shape,
                                                        const model_config& config,
                                                        const std::string& checkpoint,
                                                        emulated_options options);

/// The CPU reference engine as a device.
[[nodiscard]] std::unique_ptr<device> make_device(std::unique_ptr<cpu_engine> engine);
/// The emulated engine as a device.
[[nodiscard]] std::unique_ptr<device> make_device(std::unique_ptr<emulated_engine> engine);

/// The checksums (kv_transfer.hpp's block_checksum) of every block of `sequence`.
[[nodiscard]] std::vector<std::uint64_t> block_checksums(const device& d, sequence_id sequence);
/// Checks block `block_index` of `sequence` against `checksum` (kv_transfer.hpp's
/// verify_block).
[[nodiscard]] expected<void> verify_block(const device& d, sequence_id sequence,
                                          std::size_t block_index, std::uint64_t checksum);

}  // namespace baton::engine
