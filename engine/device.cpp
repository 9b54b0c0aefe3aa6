#include "engine/device.hpp"

#include <algorithm>

#include <fmt/format.h>

#include "engine/kv_transfer.hpp"

namespace baton::engine {
namespace {

/// What both engines share: sequences and blocks over a kv_pool, with the same API.
template <class Engine>
class engine_device : public device {
 public:
  explicit engine_device(std::unique_ptr<Engine> engine) : engine_(std::move(engine)) {}
  kv_pool& pool() override { return engine_->pool(); }
  const kv_pool& pool() const override { return engine_->pool(); }
  expected<sequence_id> add_sequence() override { return engine_->add_sequence(); }
  void remove_sequence(sequence_id sequence) override { engine_->remove_sequence(sequence); }
  std::size_t length(sequence_id sequence) const override { return engine_->length(sequence); }
  expected<sequence_id> reserve_sequence(std::size_t length) override {
    return engine_->reserve_sequence(length);
  }
  std::span<const block_id> blocks(sequence_id sequence) const override {
    return engine_->blocks(sequence);
  }
  expected<sequence_id> fork_sequence(sequence_id sequence) override {
    return engine_->fork_sequence(sequence);
  }

 protected:
  std::unique_ptr<Engine> engine_;
};

/// Real arithmetic: samples the engine's logits with the caller's samplers.
class cpu_device final : public engine_device<cpu_engine> {
 public:
  using engine_device::engine_device;

  std::string numerics() const override { return engine_->fingerprint(); }
  std::string describe() const override { return engine_->fingerprint(); }
  bool emulated() const override { return false; }
  std::size_t max_context() const override {
    return static_cast<std::size_t>(engine_->config().seq_len);
  }
  std::int32_t vocab_size() const override { return engine_->config().vocab_size; }

  expected<device_step> prefill(sequence_id sequence, std::span<const std::int32_t> tokens,
                                std::span<sampler* const> picks,
                                const layer_hook* on_layer) override {
    auto logits = on_layer ? engine_->prefill(sequence, tokens, *on_layer)
                           : engine_->prefill(sequence, tokens);
    if (!logits) return tl::unexpected(logits.error());
    tokens_.clear();
    for (sampler* pick : picks) {
      logits_.assign(logits->begin(), logits->end());  // the sampler scales them in place
      tokens_.push_back(pick->sample(logits_));
    }
    return device_step{tokens_, {}};
  }

  expected<device_step> decode(std::span<const decode_input> batch,
                               std::span<sampler* const> picks) override {
    auto logits = engine_->decode(batch);
    if (!logits) return tl::unexpected(logits.error());
    logits_.assign(logits->begin(), logits->end());
    const auto vocab = static_cast<std::size_t>(engine_->config().vocab_size);
    tokens_.clear();
    for (std::size_t i = 0; i < batch.size(); ++i) {
      tokens_.push_back(picks[i]->sample(std::span(logits_).subspan(i * vocab, vocab)));
    }
    return device_step{tokens_, {}};
  }

 private:
  std::vector<float> logits_;
  std::vector<std::int32_t> tokens_;
};

/// No arithmetic: tokens come from the KV, time from the profile's roofline.
class emulated_device final : public engine_device<emulated_engine> {
 public:
  using engine_device::engine_device;

  std::string numerics() const override {
    return emulated_numerics(engine_->shape(), engine_->options());
  }
  std::string describe() const override { return engine_->describe(); }
  bool emulated() const override { return true; }
  std::size_t max_context() const override { return engine_->options().max_context; }
  std::int32_t vocab_size() const override { return engine_->options().vocab_size; }

  expected<device_step> prefill(sequence_id sequence, std::span<const std::int32_t> tokens,
                                std::span<sampler* const> picks,
                                const layer_hook* on_layer) override {
    const std::size_t first = engine_->length(sequence);
    auto step = engine_->prefill(sequence, tokens);
    if (!step) return tl::unexpected(step.error());
    if (on_layer) {
      const std::size_t end = engine_->length(sequence);
      for (std::size_t layer = 0; layer < engine_->pool().layout().n_layers; ++layer) {
        (*on_layer)(layer, first, end);
      }
    }
    tokens_.assign(picks.size(), step->tokens.front());
    return device_step{tokens_, step->modelled};
  }

  expected<device_step> decode(std::span<const decode_input> batch,
                               std::span<sampler* const> /*picks*/) override {
    auto step = engine_->decode(batch);
    if (!step) return tl::unexpected(step.error());
    return device_step{step->tokens, step->modelled};
  }

 private:
  std::vector<std::int32_t> tokens_;
};

}  // namespace

expected<emulated_setup> resolve_emulated(std::string_view device, std::string_view shape,
                                          const model_config& config, const std::string& checkpoint,
                                          emulated_options options) {
  constexpr std::string_view prefix = "emulated:";
  if (!device.starts_with(prefix)) {
    return fail(errc::invalid_argument, fmt::format("device '{}' is not emulated:PROFILE", device));
  }
  auto catalog = load_builtin_profiles();
  if (!catalog) return tl::unexpected(catalog.error());
  auto profile = catalog->profile(device.substr(prefix.size()));
  if (!profile) return tl::unexpected(profile.error());
  model_shape resolved = shape_from_config(config, checkpoint);
  if (!shape.empty()) {
    auto named = catalog->shape(shape);
    if (!named) return tl::unexpected(named.error());
    resolved = std::move(*named);
  }
  options.vocab_size = config.vocab_size;
  options.max_context = std::min<std::size_t>(options.max_context, resolved.max_context);
  return emulated_setup{std::move(*profile), std::move(resolved), options};
}

std::unique_ptr<device> make_device(std::unique_ptr<cpu_engine> engine) {
  return std::make_unique<cpu_device>(std::move(engine));
}

std::unique_ptr<device> make_device(std::unique_ptr<emulated_engine> engine) {
  return std::make_unique<emulated_device>(std::move(engine));
}

std::vector<std::uint64_t> block_checksums(const device& d, sequence_id sequence) {
  return block_checksums(d.pool(), d.blocks(sequence));
}

expected<void> verify_block(const device& d, sequence_id sequence, std::size_t block_index,
                            std::uint64_t checksum) {
  return verify_block(d.pool(), d.blocks(sequence), block_index, checksum);
}

}  // namespace baton::engine
