#include "engine/roofline.hpp"

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <limits>

#include <fmt/format.h>
#include <toml++/toml.h>

#include "base/check.hpp"

namespace baton::engine {
namespace {

/// Tensor-parallel all-reduces per layer and step: after attention and after the FFN.
constexpr double allreduces_per_layer = 2.0;
/// Share of link bandwidth a bulk KV transfer achieves (HARDWARE.md section 2, [A]).
constexpr double kv_link_efficiency = 0.8;

/// Reads one profiles file; remembers the first error, positioned in the file.
class reader {
 public:
  explicit reader(std::string_view file) : file_(file) {}

  [[nodiscard]] bool failed() const { return first_.has_value(); }
  [[nodiscard]] error first() const { return *first_; }

  void fail(const toml::source_region& where, const std::string& what) {
    if (!first_) {
      first_ = error{errc::invalid_argument, fmt::format("{}:{}:{}: {}", file_, where.begin.line,
                                                         where.begin.column, what)};
    }
  }

  /// A { value, source } table at `key`, value in [min, max]; nullopt (after recording an
  /// error) when missing or malformed, nullopt without an error when optional and absent.
  std::optional<figure> read_figure(const toml::table& t, std::string_view key,
                                    const std::string& path, double min, double max,
                                    bool required = true) {
    const toml::node* n = t.get(key);
    const std::string where = fmt::format("{}.{}", path, key);
    if (n == nullptr) {
      if (required) fail(t.source(), fmt::format("{}: missing figure '{}'", path, key));
      return std::nullopt;
    }
    return read_figure_node(*n, where, min, max);
  }

  std::optional<figure> read_figure_node(const toml::node& n, const std::string& where, double min,
                                         double max) {
    const toml::table* f = n.as_table();
    if (f == nullptr) {
      fail(n.source(),
           fmt::format("{}: expected a table {{ value = ..., source = \"...\" }}", where));
      return std::nullopt;
    }
    for (const auto& [k, v] : *f) {
      if (k.str() != "value" && k.str() != "source") {
        fail(k.source(), fmt::format("{}: unknown key '{}'", where, k.str()));
        return std::nullopt;
      }
    }
    const toml::node* value = f->get("value");
    const toml::node* source = f->get("source");
    if (value == nullptr || !(value->is_integer() || value->is_floating_point())) {
      fail(f->source(), fmt::format("{}: 'value' must be a number", where));
      return std::nullopt;
    }
    if (source == nullptr || !source->is_string() || source->as_string()->get().empty()) {
      fail(f->source(), fmt::format("{}: every figure needs a non-empty 'source'", where));
      return std::nullopt;
    }
    figure out{value->value<double>().value_or(0.0), source->as_string()->get()};
    if (!(out.value >= min && out.value <= max)) {
      fail(value->source(), fmt::format("{}: {} is outside [{}, {}]", where, out.value, min, max));
      return std::nullopt;
    }
    return out;
  }

  /// Records the first key of `t` not in `allowed`: a typo would otherwise drop a figure.
  void only(const toml::table& t, const std::string& path,
            std::initializer_list<std::string_view> allowed) {
    for (const auto& [key, value] : t) {
      if (std::find(allowed.begin(), allowed.end(), key.str()) == allowed.end()) {
        fail(key.source(), fmt::format("{}: unknown key '{}'", path, key.str()));
        return;
      }
    }
  }

  std::string read_string(const toml::table& t, std::string_view key, const std::string& path) {
    const toml::node* n = t.get(key);
    if (n == nullptr || !n->is_string()) {
      fail(n ? n->source() : t.source(), fmt::format("{}: '{}' must be a string", path, key));
      return {};
    }
    return n->as_string()->get();
  }

 private:
  std::string file_;
  std::optional<error> first_;
};

constexpr double big = 1e30;

void read_profile(reader& r, const std::string& name, const toml::table& t, hardware_profile& out) {
  const std::string path = fmt::format("profile.{}", name);
  out.name = name;
  r.only(
      t, path,
      {"description", "decode_model", "devices", "flops_bf16_per_s", "flops_fp8_per_s", "mem_bytes",
       "mem_bw_bytes_per_s", "net_bw_bytes_per_s", "scale_up_bw_bytes_per_s", "prefill_mfu",
       "prefill_overhead_s", "decode_mbu", "decode_mfu", "allreduce_s", "decode_tokens_per_s"});
  out.description = r.read_string(t, "description", path);
  const std::string model = r.read_string(t, "decode_model", path);
  if (model == "roofline") {
    out.decode = decode_model::roofline;
  } else if (model == "published_tokens_per_s") {
    out.decode = decode_model::published_tokens_per_s;
  } else if (!r.failed()) {
    r.fail(t.source(), fmt::format("{}: decode_model must be \"roofline\" or "
                                   "\"published_tokens_per_s\", got \"{}\"",
                                   path, model));
  }
  auto get = [&](std::string_view key, double min, double max, figure& into) {
    if (auto f = r.read_figure(t, key, path, min, max)) into = std::move(*f);
  };
  get("devices", 1, 1e6, out.devices);
  get("flops_bf16_per_s", 1, big, out.flops_bf16_per_s);
  out.flops_fp8_per_s = r.read_figure(t, "flops_fp8_per_s", path, 1, big, false);
  get("mem_bytes", 1, big, out.mem_bytes);
  get("mem_bw_bytes_per_s", 1, big, out.mem_bw_bytes_per_s);
  get("net_bw_bytes_per_s", 1, big, out.net_bw_bytes_per_s);
  get("scale_up_bw_bytes_per_s", 1, big, out.scale_up_bw_bytes_per_s);
  get("prefill_mfu", 1e-6, 1, out.prefill_mfu);
  get("prefill_overhead_s", 0, 3600, out.prefill_overhead_s);
  if (out.decode == decode_model::roofline) {
    get("decode_mbu", 1e-6, 1, out.decode_mbu);
    get("decode_mfu", 1e-6, 1, out.decode_mfu);
    get("allreduce_s", 0, 1, out.allreduce_s);
    return;
  }
  const toml::node* speeds = t.get("decode_tokens_per_s");
  const toml::table* table = speeds ? speeds->as_table() : nullptr;
  if (table == nullptr || table->empty()) {
    r.fail(t.source(), fmt::format("{}: published_tokens_per_s needs a non-empty "
                                   "decode_tokens_per_s table",
                                   path));
    return;
  }
  for (const auto& [shape, node] : *table) {
    const std::string where = fmt::format("{}.decode_tokens_per_s.{}", path, shape.str());
    if (auto f = r.read_figure_node(node, where, 1e-3, big)) {
      out.decode_tokens_per_s.push_back({std::string(shape.str()), 0, std::move(*f)});
    }
  }
}

void read_shape(reader& r, const std::string& name, const toml::table& t, model_shape& out) {
  const std::string path = fmt::format("shape.{}", name);
  out.name = name;
  out.source = "engine/profiles.toml";
  r.only(t, path,
         {"params", "n_layers", "d_model", "n_heads", "n_kv_heads", "head_dim", "vocab_size",
          "max_context"});
  const double limit = 1e15;
  auto get = [&](std::string_view key, std::uint64_t& into) {
    if (auto f = r.read_figure(t, key, path, 1, limit)) {
      if (f->value != std::floor(f->value)) {
        r.fail(t.source(), fmt::format("{}.{}: must be a whole number", path, key));
      }
      into = static_cast<std::uint64_t>(f->value);
    }
  };
  get("params", out.params);
  get("n_layers", out.n_layers);
  get("d_model", out.d_model);
  get("n_heads", out.n_heads);
  get("n_kv_heads", out.n_kv_heads);
  get("head_dim", out.head_dim);
  get("vocab_size", out.vocab_size);
  get("max_context", out.max_context);
  if (!r.failed() && out.n_heads % out.n_kv_heads != 0) {
    r.fail(t.source(), fmt::format("{}: n_kv_heads must divide n_heads", path));
  }
}

template <class T, class F>
void read_section(reader& r, const toml::table& root, std::string_view key, std::vector<T>& out,
                  F read_one) {
  const toml::node* n = root.get(key);
  const toml::table* section = n ? n->as_table() : nullptr;
  if (section == nullptr || section->empty()) {
    r.fail(root.source(), fmt::format("missing the [{}.<name>] tables", key));
    return;
  }
  for (const auto& [name, node] : *section) {
    const toml::table* t = node.as_table();
    if (t == nullptr) {
      r.fail(node.source(), fmt::format("{}.{}: expected a table", key, name.str()));
      return;
    }
    read_one(r, std::string(name.str()), *t, out.emplace_back());
  }
}

std::chrono::nanoseconds to_ns(double seconds) {
  return std::chrono::nanoseconds(static_cast<std::int64_t>(std::llround(seconds * 1e9)));
}

expected<double> peak_flops(const hardware_profile& profile, precision p) {
  if (p == precision::bf16) return profile.flops_bf16_per_s.value;
  if (!profile.flops_fp8_per_s) {
    return fail(errc::invalid_argument,
                fmt::format("profile {} has no published fp8 peak; use bf16", profile.name));
  }
  return profile.flops_fp8_per_s->value;
}

template <class Named>
std::string names_of(const std::vector<Named>& items) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : ", ") + item.name;
  return out;
}

}  // namespace

std::vector<std::pair<std::string, const figure*>> hardware_profile::figures() const {
  std::vector<std::pair<std::string, const figure*>> out{
      {"devices", &devices},
      {"flops_bf16_per_s", &flops_bf16_per_s},
      {"mem_bytes", &mem_bytes},
      {"mem_bw_bytes_per_s", &mem_bw_bytes_per_s},
      {"net_bw_bytes_per_s", &net_bw_bytes_per_s},
      {"scale_up_bw_bytes_per_s", &scale_up_bw_bytes_per_s},
      {"prefill_mfu", &prefill_mfu},
      {"prefill_overhead_s", &prefill_overhead_s}};
  if (flops_fp8_per_s) out.emplace_back("flops_fp8_per_s", &*flops_fp8_per_s);
  if (decode == decode_model::roofline) {
    out.emplace_back("decode_mbu", &decode_mbu);
    out.emplace_back("decode_mfu", &decode_mfu);
    out.emplace_back("allreduce_s", &allreduce_s);
  }
  for (const auto& speed : decode_tokens_per_s) {
    out.emplace_back(fmt::format("decode_tokens_per_s.{}", speed.shape), &speed.tokens_per_s);
  }
  return out;
}

std::size_t element_bytes(precision p) {
  return p == precision::fp8 ? 1 : 2;
}

expected<precision> parse_precision(std::string_view text) {
  if (text == "bf16") return precision::bf16;
  if (text == "fp8") return precision::fp8;
  return fail(errc::invalid_argument,
              fmt::format("unknown precision '{}': expected bf16 or fp8", text));
}

std::uint64_t kv_bytes_per_token(const model_shape& shape, precision p) {
  return 2 * shape.n_layers * shape.n_kv_heads * shape.head_dim * element_bytes(p);
}

model_shape shape_from_config(const model_config& config, const std::string& path) {
  auto u = [](std::int32_t v) { return static_cast<std::uint64_t>(v); };
  return model_shape{"custom",
                     config.parameter_count(),
                     u(config.n_layers),
                     u(config.dim),
                     u(config.n_heads),
                     u(config.n_kv_heads),
                     u(config.head_size()),
                     u(config.vocab_size),
                     u(config.seq_len),
                     fmt::format("llama2.c checkpoint {}", path)};
}

expected<hardware_profile> profile_catalog::profile(std::string_view name) const {
  for (const auto& p : profiles) {
    if (p.name == name) return p;
  }
  return fail(errc::not_found, fmt::format("unknown hardware profile '{}': expected one of {}",
                                           name, names_of(profiles)));
}

expected<model_shape> profile_catalog::shape(std::string_view name) const {
  for (const auto& s : shapes) {
    if (s.name == name) return s;
  }
  return fail(errc::not_found,
              fmt::format("unknown model shape '{}': expected one of {}, or custom with a "
                          "llama2.c checkpoint",
                          name, names_of(shapes)));
}

expected<profile_catalog> parse_profiles(std::string_view text, std::string_view file_name) {
  toml::table root;
  try {
    root = toml::parse(text, file_name);
  } catch (const toml::parse_error& e) {
    return fail(errc::invalid_argument,
                fmt::format("{}:{}:{}: {}", file_name, e.source().begin.line,
                            e.source().begin.column, e.description()));
  }
  reader r(file_name);
  profile_catalog catalog;
  for (const auto& [key, node] : root) {
    if (key.str() != "profile" && key.str() != "shape") {
      r.fail(key.source(), fmt::format("unknown top-level key '{}'", key.str()));
    }
  }
  read_section(r, root, "profile", catalog.profiles, read_profile);
  read_section(r, root, "shape", catalog.shapes, read_shape);
  if (r.failed()) return tl::unexpected(r.first());
  for (auto& profile : catalog.profiles) {
    for (auto& speed : profile.decode_tokens_per_s) {
      auto shape = catalog.shape(speed.shape);
      if (!shape) {
        return fail(errc::invalid_argument,
                    fmt::format("{}: profile.{}.decode_tokens_per_s: {}", file_name, profile.name,
                                shape.error().message));
      }
      speed.shape_params = shape->params;
    }
  }
  return catalog;
}

expected<profile_catalog> load_builtin_profiles() {
  return parse_profiles(builtin_profiles_toml(), "profiles.toml");
}

expected<prefill_prediction> predict_prefill(const hardware_profile& profile,
                                             const model_shape& shape, std::size_t tokens,
                                             std::size_t prior_tokens, precision p) {
  if (tokens == 0) return fail(errc::invalid_argument, "prefill of zero tokens");
  auto flops_peak = peak_flops(profile, p);
  if (!flops_peak) return tl::unexpected(flops_peak.error());
  const double s = static_cast<double>(tokens);
  const double c = static_cast<double>(prior_tokens);
  const double layers = static_cast<double>(shape.n_layers);
  const double d = static_cast<double>(shape.d_model);
  prefill_prediction out;
  // Section 5: 2·P·S + 2·L·S²·d for an empty cache; with C positions already cached the
  // causal attention term is 2·L·d·((C+S)² - C²).
  out.flops =
      2.0 * static_cast<double>(shape.params) * s + 2.0 * layers * d * ((c + s) * (c + s) - c * c);
  out.compute_s = out.flops / (*flops_peak * profile.prefill_mfu.value);
  const double weight_bytes = static_cast<double>(shape.params * element_bytes(p));
  // The prefill MBU is not calibrated; the decode fit is the closest published figure.
  const double mbu = profile.decode == decode_model::roofline ? profile.decode_mbu.value : 1.0;
  out.memory_s = weight_bytes / (profile.mem_bw_bytes_per_s.value * mbu);
  out.overhead_s = profile.prefill_overhead_s.value;
  out.time = to_ns(std::max(out.compute_s, out.memory_s) + out.overhead_s);
  return out;
}

expected<decode_prediction> predict_decode_step(const hardware_profile& profile,
                                                const model_shape& shape,
                                                std::span<const std::size_t> contexts,
                                                precision p) {
  if (contexts.empty()) return fail(errc::invalid_argument, "decode step with an empty batch");
  decode_prediction out;
  if (profile.decode == decode_model::published_tokens_per_s) {
    if (p != precision::bf16) {
      return fail(errc::invalid_argument,
                  fmt::format("profile {} has published decode speeds for 16-bit weights only; "
                              "use bf16",
                              profile.name));
    }
    // The shape's own published speed, else the nearest by parameter count, scaled
    // linearly in parameters [A] (documented in docs/emulated.md).
    const hardware_profile::published_speed* best = nullptr;
    double best_distance = std::numeric_limits<double>::infinity();
    for (const auto& speed : profile.decode_tokens_per_s) {
      const double distance = std::abs(
          std::log(static_cast<double>(shape.params) / static_cast<double>(speed.shape_params)));
      if (speed.shape == shape.name) {
        best = &speed;
        break;
      }
      if (distance < best_distance) {
        best = &speed;
        best_distance = distance;
      }
    }
    BATON_CHECK(best != nullptr, "a published_tokens_per_s profile without speeds");
    double step_s = 1.0 / best->tokens_per_s.value;
    if (best->shape == shape.name) {
      out.basis = "published";
    } else {
      step_s *= static_cast<double>(shape.params) / static_cast<double>(best->shape_params);
      out.basis = fmt::format("extrapolated from {}", best->shape);
    }
    out.time = to_ns(step_s);
    return out;
  }
  auto flops_peak = peak_flops(profile, p);
  if (!flops_peak) return tl::unexpected(flops_peak.error());
  double kv_tokens = 0.0;
  for (const std::size_t c : contexts) kv_tokens += static_cast<double>(c);
  out.bytes_read = static_cast<double>(shape.params * element_bytes(p)) +
                   kv_tokens * static_cast<double>(kv_bytes_per_token(shape, p));
  out.memory_s = out.bytes_read / (profile.mem_bw_bytes_per_s.value * profile.decode_mbu.value);
  out.compute_s = static_cast<double>(contexts.size()) * 2.0 * static_cast<double>(shape.params) /
                  (*flops_peak * profile.decode_mfu.value);
  out.allreduce_s =
      allreduces_per_layer * static_cast<double>(shape.n_layers) * profile.allreduce_s.value;
  out.time = to_ns(std::max(out.memory_s, out.compute_s) + out.allreduce_s);
  out.basis = "roofline";
  return out;
}

double kv_transfer_s(const hardware_profile& profile, double bytes) {
  return bytes / (profile.net_bw_bytes_per_s.value * kv_link_efficiency);
}

}  // namespace baton::engine
