#include "engine/model.hpp"

#include <climits>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>

#include <fmt/format.h>

namespace baton::engine {
namespace {

constexpr std::uint64_t header_bytes = 7 * sizeof(std::int32_t);
constexpr std::int32_t max_dim = 1 << 16;
constexpr std::int32_t max_hidden_dim = 1 << 18;
constexpr std::int32_t max_layers = 1024;
constexpr std::int32_t max_vocab_size = 1 << 21;
constexpr std::int32_t max_seq_len = 1 << 20;

struct weight_counts {
  std::uint64_t embedding, layer_vectors, attention, kv, ffn, rope, classifier;
};

weight_counts counts_of(const model_config& c) {
  const auto dim = static_cast<std::uint64_t>(c.dim);
  const auto layers = static_cast<std::uint64_t>(c.n_layers);
  const auto head_size = static_cast<std::uint64_t>(c.head_size());
  const auto seq_len = static_cast<std::uint64_t>(c.seq_len);
  const auto vocab = static_cast<std::uint64_t>(c.vocab_size);
  weight_counts w{};
  w.embedding = vocab * dim;
  w.layer_vectors = layers * dim;                                   // each of rms_att, rms_ffn
  w.attention = layers * dim * dim;                                 // each of wq, wo
  w.kv = layers * static_cast<std::uint64_t>(c.kv_dim()) * dim;     // each of wk, wv
  w.ffn = layers * static_cast<std::uint64_t>(c.hidden_dim) * dim;  // each of w1, w2, w3
  w.rope = 2 * (seq_len * head_size / 2);
  w.classifier = c.shared_classifier ? 0 : vocab * dim;
  return w;
}

expected<void> check_range(const std::string& name, const char* field, std::int32_t value,
                           std::int32_t max_value) {
  if (value <= 0 || value > max_value) {
    return fail(errc::invalid_argument, fmt::format("{}: header field {} is {}, expected 1..{}",
                                                    name, field, value, max_value));
  }
  return {};
}

}  // namespace

std::uint64_t model_config::parameter_count() const {
  const weight_counts w = counts_of(*this);
  return w.embedding + 2 * w.layer_vectors + 2 * w.attention + 2 * w.kv + 3 * w.ffn +
         static_cast<std::uint64_t>(dim) + w.classifier;
}

std::uint64_t model_config::file_bytes() const {
  return header_bytes + (parameter_count() + counts_of(*this).rope) * sizeof(float);
}

std::string model_config::describe() const {
  return fmt::format(
      "dim={} hidden_dim={} n_layers={} n_heads={} n_kv_heads={} vocab_size={} ({} "
      "classifier) seq_len={}",
      dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size,
      shared_classifier ? "shared" : "separate", seq_len);
}

expected<void> validate(const model_config& c, const std::string& name) {
  for (auto result : {check_range(name, "dim", c.dim, max_dim),
                      check_range(name, "hidden_dim", c.hidden_dim, max_hidden_dim),
                      check_range(name, "n_layers", c.n_layers, max_layers),
                      check_range(name, "n_heads", c.n_heads, c.dim > 0 ? c.dim : 1),
                      check_range(name, "n_kv_heads", c.n_kv_heads, c.n_heads > 0 ? c.n_heads : 1),
                      check_range(name, "vocab_size", c.vocab_size, max_vocab_size),
                      check_range(name, "seq_len", c.seq_len, max_seq_len)}) {
    if (!result) return result;
  }
  if (c.dim % c.n_heads != 0) {
    return fail(errc::invalid_argument,
                fmt::format("{}: dim={} is not a multiple of n_heads={}", name, c.dim, c.n_heads));
  }
  if (c.n_heads % c.n_kv_heads != 0) {
    return fail(errc::invalid_argument, fmt::format("{}: n_heads={} is not a multiple of "
                                                    "n_kv_heads={}",
                                                    name, c.n_heads, c.n_kv_heads));
  }
  if (c.head_size() % 2 != 0) {
    return fail(errc::invalid_argument,
                fmt::format("{}: head size dim/n_heads={} is odd, RoPE needs it even", name,
                            c.head_size()));
  }
  return {};
}

expected<model> model::load(const std::string& path) {
  auto file = mapped_file::open(path);
  if (!file) return tl::unexpected(file.error());
  const auto bytes = file->bytes();
  if (bytes.size() < header_bytes) {
    return fail(errc::invalid_argument,
                fmt::format("{}: file is {} bytes, expected at least the {}-byte header", path,
                            bytes.size(), header_bytes));
  }
  std::int32_t header[7];
  std::memcpy(header, bytes.data(), sizeof(header));
  // A negative vocab_size marks a separate classifier; INT32_MIN has no positive twin.
  const std::int32_t vocab = header[5] == INT32_MIN ? 0 : (header[5] < 0 ? -header[5] : header[5]);
  model_config c{header[0], header[1], header[2], header[3],
                 header[4], vocab,     header[6], header[5] > 0};
  if (auto ok = validate(c, path); !ok) return tl::unexpected(ok.error());
  if (bytes.size() != c.file_bytes()) {
    return fail(errc::invalid_argument,
                fmt::format("{}: file is {} bytes, expected {} for {}", path, bytes.size(),
                            c.file_bytes(), c.describe()));
  }
  model m;
  m.path_ = path;
  m.config_ = c;
  // The weights start right after the 28-byte header, so they are 4-byte aligned.
  const auto* p = reinterpret_cast<const float*>(bytes.data() + header_bytes);
  const weight_counts w = counts_of(c);
  const auto per_layer = [&](std::uint64_t total) { return total / c.n_layers; };
  m.weights_.token_embedding = p;
  p += w.embedding;
  m.weights_.layers.resize(static_cast<std::size_t>(c.n_layers));
  const auto take = [&](const float* layer_weights::*field, std::uint64_t total) {
    for (auto& layer : m.weights_.layers) {
      layer.*field = p;
      p += per_layer(total);
    }
  };
  take(&layer_weights::rms_att, w.layer_vectors);
  take(&layer_weights::wq, w.attention);
  take(&layer_weights::wk, w.kv);
  take(&layer_weights::wv, w.kv);
  take(&layer_weights::wo, w.attention);
  take(&layer_weights::rms_ffn, w.layer_vectors);
  take(&layer_weights::w1, w.ffn);
  take(&layer_weights::w2, w.ffn);
  take(&layer_weights::w3, w.ffn);
  m.weights_.rms_final = p;
  p += c.dim;
  p += w.rope;
  m.weights_.classifier = c.shared_classifier ? m.weights_.token_embedding : p;
  m.file_ = std::move(*file);
  return m;
}

namespace {

/// splitmix64: a small, well-mixed generator for synthetic weights.
class weight_generator {
 public:
  explicit weight_generator(std::uint64_t seed) : state_(seed) {}
  float uniform(float scale) {
    state_ += 0x9E3779B97F4A7C15ULL;
    std::uint64_t z = state_;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    const float unit = static_cast<float>(z >> 40) / 16777216.0f;  // [0, 1)
    return (2.0f * unit - 1.0f) * scale;
  }

 private:
  std::uint64_t state_;
};

struct file_closer {
  void operator()(std::FILE* f) const { std::fclose(f); }
};

}  // namespace

expected<void> write_synthetic_model(const std::string& path, const model_config& config,
                                     std::uint64_t seed) {
  if (auto ok = validate(config, path); !ok) return ok;
  std::unique_ptr<std::FILE, file_closer> out(std::fopen(path.c_str(), "wb"));
  if (!out) return fail(errc::failed, path + ": cannot create: " + std::strerror(errno));
  const std::int32_t vocab_field =
      config.shared_classifier ? config.vocab_size : -config.vocab_size;
  const std::int32_t header[7] = {config.dim,     config.hidden_dim, config.n_layers,
                                  config.n_heads, config.n_kv_heads, vocab_field,
                                  config.seq_len};
  bool ok = std::fwrite(header, sizeof(header), 1, out.get()) == 1;
  weight_generator gen(seed);
  std::vector<float> buffer;
  // Emits `count` floats: constant `fill` if scale is 0, else uniform in +-scale.
  const auto emit = [&](std::uint64_t count, float scale, float fill) {
    constexpr std::uint64_t chunk = 1 << 20;
    while (ok && count > 0) {
      const std::uint64_t n = count < chunk ? count : chunk;
      buffer.resize(n);
      for (auto& v : buffer) v = scale == 0.0f ? fill : gen.uniform(scale);
      ok = std::fwrite(buffer.data(), sizeof(float), n, out.get()) == n;
      count -= n;
    }
  };
  const weight_counts w = counts_of(config);
  const float dim_scale = 1.0f / std::sqrt(static_cast<float>(config.dim));
  const float hidden_scale = 1.0f / std::sqrt(static_cast<float>(config.hidden_dim));
  emit(w.embedding, 1.0f, 0.0f);
  emit(w.layer_vectors, 0.0f, 1.0f);
  emit(w.attention, dim_scale, 0.0f);
  emit(w.kv, dim_scale, 0.0f);
  emit(w.kv, dim_scale, 0.0f);
  emit(w.attention, dim_scale, 0.0f);
  emit(w.layer_vectors, 0.0f, 1.0f);
  emit(w.ffn, dim_scale, 0.0f);
  emit(w.ffn, hidden_scale, 0.0f);
  emit(w.ffn, dim_scale, 0.0f);
  emit(static_cast<std::uint64_t>(config.dim), 0.0f, 1.0f);
  emit(w.rope, 0.0f, 0.0f);
  emit(w.classifier, 1.0f, 0.0f);
  if (!ok || std::fflush(out.get()) != 0) {
    return fail(errc::failed, path + ": write failed: " + std::strerror(errno));
  }
  return {};
}

}  // namespace baton::engine
