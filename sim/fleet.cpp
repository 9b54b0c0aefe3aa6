#include "sim/fleet.hpp"

#include <algorithm>
#include <set>

#include <fmt/format.h>

#include "base/toml_reader.hpp"

namespace baton::sim {
namespace {

void read_model(const toml::table& t, toml_diagnostics& diag,
                const engine::profile_catalog& catalog, fleet_spec& f) {
  toml_table_reader r(t, "model", diag, {"shape", "precision", "kv_block_tokens", "kv_scale"});
  if (auto name = r.string("shape", true)) {
    auto shape = catalog.shape(*name);
    if (!shape) {
      diag.fail(t.get("shape")->source(), "model.shape: " + shape.error().message);
    } else {
      f.shape = *shape;
    }
  }
  if (auto p = r.choice("precision", false, {"bf16", "fp8"})) {
    f.numbers = *p == 0 ? engine::precision::bf16 : engine::precision::fp8;
  }
  if (auto v = r.integer("kv_block_tokens", 1, 4096)) f.block_tokens = *v;
  if (auto v = r.integer("kv_scale", 1, 1 << 20)) f.kv_scale = *v;
}

void read_router(const toml::table& t, toml_diagnostics& diag, fleet_spec& f) {
  toml_table_reader r(t, "router", diag,
                      {"routers", "max_inflight", "max_waiting", "max_wait_ms",
                       "request_timeout_ms", "max_attempts"});
  if (auto v = r.integer("routers", 1, 65'535)) f.routers = *v;
  if (auto v = r.integer("max_inflight", 1, 100'000'000)) f.router.max_inflight = *v;
  if (auto v = r.integer("max_waiting", 0, 100'000'000)) f.router.max_waiting = *v;
  if (auto v = r.integer("max_wait_ms", 1, 86'400'000))
    f.router.max_wait = std::chrono::milliseconds(*v);
  if (auto v = r.integer("request_timeout_ms", 1, 86'400'000)) {
    f.router.default_timeout = std::chrono::milliseconds(*v);
  }
  if (auto v = r.integer("max_attempts", 1, 100)) f.router.max_attempts = *v;
}

void read_runtime(const toml::table& t, toml_diagnostics& diag, fleet_spec& f) {
  toml_table_reader r(t, "runtime", diag, {"message_us", "time_scale"});
  if (auto v = r.number("message_us", 0, 1e6)) f.message_s = *v * 1e-6;
  if (auto v = r.number("time_scale", 0, 1e6)) f.time_scale = *v;
}

void read_failures(const toml::table& t, toml_diagnostics& diag, fleet_spec& f) {
  toml_table_reader r(t, "failures", diag,
                      {"node_deaths_per_hour", "restart_after_s", "detect_ms"});
  if (auto v = r.number("node_deaths_per_hour", 0, 3600)) f.failures.node_deaths_per_hour = *v;
  if (auto v = r.number("restart_after_s", 0, 1e6)) f.failures.restart_after_s = *v;
  if (auto v = r.number("detect_ms", 0, 1e7)) f.failures.detect_s = *v * 1e-3;
}

void read_links(const toml::table& t, toml_diagnostics& diag, fleet_spec& f) {
  for (const auto& [key, value] : t) {
    const std::string path = fmt::format("link.{}", key.str());
    const auto* table = value.as_table();
    if (table == nullptr) {
      diag.fail(value.source(), fmt::format("{}: expected a table", path));
      return;
    }
    toml_table_reader r(*table, path, diag, {"bandwidth_gbytes_per_s", "latency_us"});
    link_spec l;
    l.name = std::string(key.str());
    if (auto v = r.number("bandwidth_gbytes_per_s", 1e-6, 1e6)) l.bandwidth_bytes_per_s = *v * 1e9;
    if (auto v = r.number("latency_us", 0, 1e6)) l.latency_s = *v * 1e-6;
    if (!table->contains("bandwidth_gbytes_per_s")) {
      diag.fail(table->source(), path + ": missing required key 'bandwidth_gbytes_per_s'");
    }
    f.links.push_back(std::move(l));
  }
}

void read_group(const toml::table& t, std::size_t index, toml_diagnostics& diag,
                const engine::profile_catalog& catalog, fleet_spec& f) {
  const std::string path = fmt::format("group[{}]", index);
  toml_table_reader r(
      t, path, diag,
      {"name", "role", "kind", "profile", "count", "link", "kv_blocks", "max_batch"});
  node_group g;
  g.line = static_cast<std::uint32_t>(t.source().begin.line);
  g.name = r.string("name", true).value_or("");
  if (auto role = r.choice("role", true, {"prefill", "decode"})) {
    g.role = *role == 0 ? wire::role::prefill : wire::role::decode;
  }
  g.kind = g.role == wire::role::prefill ? wire::node_kind::trainium : wire::node_kind::wafer_scale;
  if (auto kind = r.choice("kind", false, {"trainium", "wafer-scale", "cpu"})) {
    g.kind = static_cast<wire::node_kind>(*kind);
  }
  if (auto name = r.string("profile", true)) {
    auto profile = catalog.profile(*name);
    if (!profile) {
      diag.fail(t.get("profile")->source(),
                fmt::format("{}.profile: {}", path, profile.error().message));
    } else {
      g.hardware = *profile;
    }
  }
  if (!t.contains("count")) diag.fail(t.source(), path + ": missing required key 'count'");
  if (auto v = r.integer("count", 0, 10'000'000)) g.count = *v;
  if (auto name = r.string("link", true)) {
    const auto it = std::find_if(f.links.begin(), f.links.end(),
                                 [&](const link_spec& l) { return l.name == *name; });
    if (it == f.links.end()) {
      std::string known;
      for (const auto& l : f.links) known += (known.empty() ? "" : ", ") + l.name;
      diag.fail(t.get("link")->source(), fmt::format("{}.link: no [link.{}] table (there are: {})",
                                                     path, *name, known.empty() ? "none" : known));
    } else {
      g.link = static_cast<std::size_t>(it - f.links.begin());
    }
  }
  const bool decode = g.role == wire::role::decode;
  for (const char* key : {"kv_blocks", "max_batch"}) {
    if (!decode && t.contains(key)) {
      diag.fail(t.get(key)->source(),
                fmt::format("{}.{}: only a decode group has {}", path, key, key));
    } else if (decode && !t.contains(key)) {
      diag.fail(t.source(),
                fmt::format("{}: missing required key '{}' (a decode group's)", path, key));
    }
  }
  if (auto v = r.integer("kv_blocks", 1, 4'000'000'000)) g.kv_blocks = *v;
  if (auto v = r.integer("max_batch", 1, 1'000'000)) g.max_batch = *v;
  f.groups.push_back(std::move(g));
}

}  // namespace

std::size_t fleet_spec::nodes(wire::role role) const {
  std::size_t n = 0;
  for (const auto& g : groups) n += g.role == role ? g.count : 0;
  return n;
}

std::size_t fleet_spec::nodes() const {
  return nodes(wire::role::prefill) + nodes(wire::role::decode);
}

expected<fleet_spec> parse_fleet(std::string_view text, const std::filesystem::path& file) {
  auto parsed = parse_toml(text, file.string());
  if (!parsed) return tl::unexpected(parsed.error());
  const toml::table& root = *parsed;
  auto catalog = engine::load_builtin_profiles();
  if (!catalog) return tl::unexpected(catalog.error());
  toml_diagnostics diag(file.string());
  fleet_spec f;
  f.file = file;
  f.router.max_inflight = 1'000'000;  // a fleet's router holds what its routers hold together
  f.router.max_waiting = 1'000'000;
  f.router.default_timeout = std::chrono::minutes(10);
  // The simulated fabric loses nothing, and its decode nodes do not give up on a slow
  // prefill queue (the runtime's do, at 10 s, before a router's silence timeout).
  f.router.silence_timeout = std::chrono::milliseconds(0);
  toml_table_reader top(root, "fleet", diag,
                        {"model", "router", "runtime", "failures", "link", "group"});
  if (const auto* t = top.table("model")) {
    read_model(*t, diag, *catalog, f);
  } else {
    diag.fail(root.source(), "fleet: missing required table [model]");
  }
  if (const auto* t = top.table("router")) read_router(*t, diag, f);
  if (const auto* t = top.table("runtime")) read_runtime(*t, diag, f);
  if (const auto* t = top.table("failures")) read_failures(*t, diag, f);
  if (const auto* t = top.table("link")) read_links(*t, diag, f);
  const toml::node* groups = root.get("group");
  const auto* array = groups != nullptr ? groups->as_array() : nullptr;
  if (array == nullptr || array->empty()) {
    diag.fail(groups != nullptr ? groups->source() : root.source(),
              "fleet: expected [[group]] tables of prefill and decode nodes");
  } else {
    std::set<std::string> names;
    for (std::size_t i = 0; i < array->size() && !diag.failed(); ++i) {
      const auto* t = (*array)[i].as_table();
      if (t == nullptr) {
        diag.fail((*array)[i].source(), fmt::format("group[{}]: expected a table", i));
        break;
      }
      read_group(*t, i, diag, *catalog, f);
      if (!diag.failed() && !names.insert(f.groups.back().name).second) {
        diag.fail(t->source(),
                  fmt::format("group[{}].name: \"{}\" is already used", i, f.groups.back().name));
      }
    }
  }
  if (!diag.failed()) {
    for (const auto role : {wire::role::prefill, wire::role::decode}) {
      if (f.nodes(role) == 0) {
        diag.fail(root.source(), fmt::format("fleet: no {} nodes (every group of that role has "
                                             "count 0, or there is none)",
                                             role == wire::role::prefill ? "prefill" : "decode"));
      }
    }
  }
  if (diag.failed()) return tl::unexpected(diag.first());
  return f;
}

expected<fleet_spec> load_fleet(const std::filesystem::path& file) {
  auto text = read_toml_file(file, "fleet file");
  if (!text) return tl::unexpected(text.error());
  return parse_fleet(*text, file);
}

const std::vector<link_class>& link_classes() {
  static const std::vector<link_class> classes = {
      {"efa", 400e9, 15e-6,
       "EFA 3,200 Gbps per trn2.48xlarge (HARDWARE.md s1 [P2,P4]); latency [A]"},
      {"400gbe", 50e9, 5e-6, "one 400 GbE port; latency [A]"},
      {"100gbe", 12.5e9, 5e-6, "one 100 GbE port; latency [A]"},
      {"loopback", 2e9, 20e-6,
       "libfabric tcp on 127.0.0.1 of a 2-vCPU VM (RMA ~2 GB/s, tagged RTT ~40 us: "
       "notes/deps.md) [A]"},
  };
  return classes;
}

expected<std::string> generate_fleet(const gen_options& o) {
  auto catalog = engine::load_builtin_profiles();
  if (!catalog) return tl::unexpected(catalog.error());
  auto shape = catalog->shape(o.shape);
  if (!shape) return tl::unexpected(shape.error());
  for (const auto& name : {o.profile_prefill, o.profile_decode}) {
    if (auto p = catalog->profile(name); !p) return tl::unexpected(p.error());
  }
  const auto& classes = link_classes();
  const auto link = std::find_if(classes.begin(), classes.end(),
                                 [&](const link_class& c) { return c.name == o.link; });
  if (link == classes.end()) {
    std::string known;
    for (const auto& c : classes) known += fmt::format("{}{}", known.empty() ? "" : ", ", c.name);
    return fail(errc::not_found, fmt::format("link \"{}\": expected one of {}", o.link, known));
  }
  const std::size_t block_tokens = o.block_tokens;
  const std::size_t kv_blocks =
      o.decode_kv_blocks > 0
          ? o.decode_kv_blocks
          : o.decode_max_batch * ((shape->max_context + block_tokens - 1) / block_tokens);
  std::string out = fmt::format(
      "# A simulated fleet (baton sim, docs/simulator.md): {} {} prefill and {} {} decode\n"
      "# nodes for {}. Every node time comes from engine/profiles.toml; the routers run\n"
      "# Baton's router_state.\n\n"
      "[model]\nshape = \"{}\"\nprecision = \"bf16\"\nkv_block_tokens = {}\nkv_scale = {}\n\n"
      "[router]\nrouters = {}            # requests are spread over them; each places on every "
      "node\n"
      "max_inflight = 1000000\nmax_waiting = 1000000\nmax_wait_ms = 10000\n"
      "request_timeout_ms = 600000\nmax_attempts = 3\n\n"
      "[runtime]\nmessage_us = {}        # one hop's fixed cost: half of `baton bench actors`'s "
      "round trip\ntime_scale = {}\n\n"
      "[failures]\nnode_deaths_per_hour = {}   # per node\nrestart_after_s = 60\ndetect_ms = "
      "750\n\n"
      "[link.{}]               # {}\nbandwidth_gbytes_per_s = {}\nlatency_us = {}\n\n"
      "[[group]]\nname = \"prefill\"\nrole = \"prefill\"\nkind = \"trainium\"\nprofile = \"{}\"\n"
      "count = {}\nlink = \"{}\"\n\n"
      "[[group]]\nname = \"decode\"\nrole = \"decode\"\nkind = \"wafer-scale\"\nprofile = \"{}\"\n"
      "count = {}\nlink = \"{}\"\nmax_batch = {}\nkv_blocks = {}\n",
      o.prefill, o.profile_prefill, o.decode, o.profile_decode, o.shape, o.shape, block_tokens,
      o.kv_scale, o.routers, o.message_us, o.time_scale, o.node_deaths_per_hour, link->name,
      link->source, link->bandwidth_bytes_per_s / 1e9, link->latency_s * 1e6, o.profile_prefill,
      o.prefill, link->name, o.profile_decode, o.decode, link->name, o.decode_max_batch, kv_blocks);
  return out;
}

}  // namespace baton::sim
