#include "sim/workload.hpp"

#include <cmath>
#include <fstream>
#include <random>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "base/toml_reader.hpp"

namespace baton::sim {
namespace {

void read_arrivals(const toml::table& t, toml_diagnostics& diag, workload_spec& w) {
  toml_table_reader r(
      t, "arrivals", diag,
      {"process", "rate", "load", "requests", "burst_s", "idle_s", "trace", "seed"});
  if (auto p = r.choice("process", true, {"poisson", "bursty", "trace"})) {
    w.arrivals = static_cast<arrival_process>(*p);
  }
  w.rate = r.number("rate", 1e-9, 1e12);
  w.load = r.number("load", 1e-6, 100);
  if (auto v = r.integer("requests", 1, 100'000'000)) w.requests = *v;
  if (auto v = r.number("burst_s", 1e-6, 1e9)) w.burst_s = *v;
  if (auto v = r.number("idle_s", 0, 1e9)) w.idle_s = *v;
  if (auto v = r.number("seed", 0, 1.8e19)) w.seed = static_cast<std::uint64_t>(*v);
  if (auto trace = r.string("trace", w.arrivals == arrival_process::trace)) {
    w.trace = w.file.parent_path() / *trace;
  }
  if (diag.failed()) return;
  if (w.arrivals == arrival_process::trace) {
    if (w.rate || w.load)
      diag.fail(t.source(), "arrivals: a trace sets its own times (no rate or load)");
  } else if (w.rate.has_value() == w.load.has_value()) {
    diag.fail(t.source(),
              "arrivals: expected exactly one of 'rate' (requests/s) or 'load' "
              "(a fraction of the fleet's capacity)");
  }
}

void read_lengths(const toml::table& t, toml_diagnostics& diag, workload_spec& w) {
  toml_table_reader r(t, "lengths", diag, {"prompt", "output"});
  for (const auto& [key, dist] : {std::pair{"prompt", &w.prompt}, std::pair{"output", &w.output}}) {
    auto text = r.string(key, true);
    if (!text) continue;
    auto parsed = bench::serve::parse_length_dist(*text);
    if (!parsed) {
      diag.fail(t.get(key)->source(), fmt::format("lengths.{}: {}", key, parsed.error().message));
    } else {
      *dist = *parsed;
    }
  }
}

void read_prefix(const toml::table& t, toml_diagnostics& diag, workload_spec& w) {
  toml_table_reader r(t, "prefix", diag, {"groups", "tokens"});
  if (auto v = r.integer("groups", 1, 1'000'000)) w.prefix_groups = *v;
  if (auto v = r.integer("tokens", 1, 1'000'000)) w.prefix_tokens = *v;
  if (!diag.failed() && (w.prefix_groups == 0) != (w.prefix_tokens == 0)) {
    diag.fail(t.source(), "prefix: expected both 'groups' and 'tokens'");
  }
}

void read_slo(const toml::table& t, toml_diagnostics& diag, workload_spec& w) {
  toml_table_reader r(t, "slo", diag, {"ttft_ms", "tpot_ms"});
  w.slo_ttft_ms = r.number("ttft_ms", 0, 1e9);
  w.slo_tpot_ms = r.number("tpot_ms", 0, 1e9);
}

expected<std::vector<planned_request>> read_trace(const std::filesystem::path& file) {
  std::ifstream in(file);
  if (!in) return fail(errc::not_found, fmt::format("{}: cannot be read", file.string()));
  std::vector<planned_request> out;
  std::string line;
  for (std::size_t number = 1; std::getline(in, line); ++number) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const auto where = fmt::format("{}:{}", file.string(), number);
    const auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
      return fail(errc::invalid_argument, where + ": expected one JSON object per line");
    }
    planned_request r;
    const auto field = [&](const char* key, double min, double max, bool required,
                           double& value) -> expected<void> {
      const auto it = j.find(key);
      if (it == j.end()) {
        if (!required) return {};
        return fail(errc::invalid_argument, fmt::format("{}: missing \"{}\"", where, key));
      }
      if (!it->is_number() || !(it->get<double>() >= min && it->get<double>() <= max)) {
        return fail(errc::invalid_argument,
                    fmt::format("{}: \"{}\": expected a number in [{}, {}], got {}", where, key,
                                min, max, it->dump()));
      }
      value = it->get<double>();
      return {};
    };
    double at = 0, prompt = 0, output = 0, group = 0;
    for (auto e : {field("at_s", 0, 1e9, true, at), field("prompt_tokens", 1, 1e6, true, prompt),
                   field("output_tokens", 1, 1e6, true, output),
                   field("prefix_group", 0, 1e6, false, group)}) {
      if (!e) return tl::unexpected(e.error());
    }
    if (!out.empty() && at < out.back().at_s) {
      return fail(errc::invalid_argument,
                  fmt::format("{}: at_s {} is before the line above's {}: expected times in "
                              "order",
                              where, at, out.back().at_s));
    }
    out.push_back({at, static_cast<std::uint32_t>(prompt), static_cast<std::uint32_t>(output),
                   static_cast<std::uint32_t>(group)});
  }
  if (out.empty()) return fail(errc::invalid_argument, file.string() + ": no requests");
  return out;
}

}  // namespace

expected<workload_spec> parse_workload(std::string_view text, const std::filesystem::path& file) {
  auto parsed = parse_toml(text, file.string());
  if (!parsed) return tl::unexpected(parsed.error());
  const toml::table& root = *parsed;
  toml_diagnostics diag(file.string());
  workload_spec w;
  w.file = file;
  toml_table_reader top(root, "workload", diag, {"arrivals", "lengths", "prefix", "slo"});
  if (const auto* t = top.table("arrivals")) {
    read_arrivals(*t, diag, w);
  } else if (!diag.failed()) {
    diag.fail(root.source(), "workload: missing required table [arrivals]");
  }
  if (const auto* t = top.table("lengths")) {
    read_lengths(*t, diag, w);
  } else if (!diag.failed() && w.arrivals != arrival_process::trace) {
    diag.fail(root.source(), "workload: missing required table [lengths]");
  }
  if (const auto* t = top.table("prefix")) read_prefix(*t, diag, w);
  if (const auto* t = top.table("slo")) read_slo(*t, diag, w);
  if (diag.failed()) return tl::unexpected(diag.first());
  return w;
}

expected<workload_spec> load_workload(const std::filesystem::path& file) {
  auto text = read_toml_file(file, "workload file");
  if (!text) return tl::unexpected(text.error());
  return parse_workload(*text, file);
}

expected<std::vector<planned_request>> plan_requests(const workload_spec& w, double rate_per_s) {
  if (w.arrivals == arrival_process::trace) return read_trace(w.trace);
  std::mt19937_64 rng(w.seed);
  std::exponential_distribution<double> gap(w.arrivals == arrival_process::bursty
                                                ? rate_per_s * (w.burst_s + w.idle_s) / w.burst_s
                                                : rate_per_s);
  std::uniform_int_distribution<std::uint32_t> group(
      0, static_cast<std::uint32_t>(std::max<std::size_t>(w.prefix_groups, 1) - 1));
  std::vector<planned_request> out;
  out.reserve(w.requests);
  double t = 0;  // time spent in bursts only, for bursty arrivals
  for (std::size_t i = 0; i < w.requests; ++i) {
    if (i > 0) t += gap(rng);
    planned_request r;
    r.at_s = t;
    if (w.arrivals == arrival_process::bursty) {
      // Burst k covers [k·burst_s, (k+1)·burst_s) of burst time and starts at k·(burst+idle).
      const double k = std::floor(t / w.burst_s);
      r.at_s = t + k * w.idle_s;
    }
    r.prompt_tokens = static_cast<std::uint32_t>(bench::serve::sample_length(w.prompt, rng));
    r.output_tokens = static_cast<std::uint32_t>(bench::serve::sample_length(w.output, rng));
    if (w.prefix_groups > 0) {
      r.prefix_group = group(rng);
      r.prompt_tokens = std::max(r.prompt_tokens, static_cast<std::uint32_t>(w.prefix_tokens + 1));
    }
    out.push_back(r);
  }
  return out;
}

std::string trace_line(const planned_request& r) {
  return fmt::format(
      R"({{"at_s": {:.6f}, "prompt_tokens": {}, "output_tokens": {}, "prefix_group": {}}})", r.at_s,
      r.prompt_tokens, r.output_tokens, r.prefix_group);
}

}  // namespace baton::sim
