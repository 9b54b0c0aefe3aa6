#include "runtime/topology.hpp"

#include "base/address.hpp"
#include "base/toml_reader.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <cstdlib>
#include <set>
#include <utility>

#include <fmt/format.h>

namespace baton::runtime {
namespace {

using diagnostics = toml_diagnostics;
using table_reader = toml_table_reader;

template <class Enum, std::size_t N>
std::optional<Enum> parse_enum(std::string_view text,
                               const std::array<std::string_view, N>& names) {
  for (std::size_t i = 0; i < N; ++i) {
    if (names[i] == text) return static_cast<Enum>(i);
  }
  return std::nullopt;
}

constexpr std::array<std::string_view, 3> kind_names = {"trainium", "wafer-scale", "cpu"};
constexpr std::array<std::string_view, 4> role_names = {"router", "prefill", "decode", "kv"};
constexpr std::array<std::string_view, 4> provider_names = {"tcp", "shm", "verbs", "efa"};

/// Port 0 addresses are never "already used": each binds its own free port.
bool any_port(std::string_view address) {
  auto parsed = parse_host_port(address, port_zero::allowed);
  return parsed && parsed->port == 0;
}

void read_node(const toml::table& t, std::size_t index, const std::string& provider,
               diagnostics& diag, node_spec& node) {
  table_reader r(t, fmt::format("node[{}]", index), diag,
                 {"name", "kind", "device", "roles", "fabric", "admin", "native", "http",
                  "kv_blocks", "max_batch"});
  node.line = static_cast<std::uint32_t>(t.source().begin.line);
  node.name = r.string("name", true).value_or("");
  if (auto kind = r.string("kind", true)) {
    if (auto k = parse_enum<wire::node_kind>(*kind, kind_names)) {
      node.kind = *k;
    } else {
      diag.fail(t.get("kind")->source(),
                fmt::format("{}.kind: expected trainium, wafer-scale or cpu, got \"{}\"", r.path(),
                            *kind));
    }
  }
  node.device = r.string("device", false).value_or("cpu");
  if (node.device != "cpu" && !(node.emulated() && node.device.size() > 9)) {
    diag.fail(t.get("device")->source(),
              fmt::format("{}.device: expected \"cpu\" or \"emulated:PROFILE\", got \"{}\"",
                          r.path(), node.device));
  }
  r.strings("roles", true, [&](const std::string& name, const toml::source_region& where) {
    auto role = parse_enum<wire::role>(name, role_names);
    if (!role) {
      diag.fail(where, fmt::format("{}.roles: expected router, prefill, decode or kv, got \"{}\"",
                                   r.path(), name));
    } else if (node.has_role(*role)) {
      diag.fail(where, fmt::format("{}.roles: \"{}\" listed twice", r.path(), name));
    } else {
      node.roles.push_back(*role);
    }
  });
  if (!diag.failed() && node.roles.empty()) {
    diag.fail(t.source(), fmt::format("{}.roles: expected at least one role", r.path()));
  }
  // A listening address of this node: "host:port" (port 0: any free port, reported).
  const auto address = [&](const char* key, bool required) {
    std::string value = r.string(key, required).value_or("");
    if (diag.failed() || value.empty()) return value;
    if (auto parsed = parse_host_port(value, port_zero::allowed); !parsed) {
      diag.fail(t.get(key)->source(),
                fmt::format("{}.{}: {}", r.path(), key, parsed.error().message));
    }
    return value;
  };
  if (provider == "shm") {
    node.fabric_address = r.string("fabric", true).value_or("");
  } else {
    node.fabric_address = address("fabric", true);
  }
  node.admin_address = address("admin", true);
  const bool router = node.has_role(wire::role::router);
  node.native_address = address("native", false);
  node.http_address = address("http", false);
  for (const char* key : {"native", "http"}) {
    if (!diag.failed() && !router && t.get(key) != nullptr) {
      diag.fail(t.get(key)->source(),
                fmt::format("{}.{}: only a node with the router role has {}", r.path(), key,
                            std::string_view(key) == "http" ? "an HTTP API" : "a client port"));
    }
  }
  const bool holds_kv = node.has_role(wire::role::decode) || node.has_role(wire::role::kv);
  node.kv_blocks = r.integer("kv_blocks", 1, 1 << 24).value_or(holds_kv ? 4096 : 0);
  node.max_batch =
      r.integer("max_batch", 1, 4096).value_or(node.has_role(wire::role::decode) ? 32 : 0);
}

std::filesystem::path find_model_file(const std::string& value, const std::filesystem::path& base,
                                      const std::vector<std::filesystem::path>& search) {
  const std::filesystem::path p(value);
  if (p.has_parent_path() || value.empty()) return (base / p).lexically_normal();
  for (const auto& dir : search) {
    std::error_code ec;
    if (std::filesystem::is_regular_file(dir / p, ec)) return (dir / p).lexically_normal();
  }
  return (search.front() / p).lexically_normal();
}

void read_cluster(const toml::table& t, const std::filesystem::path& file, diagnostics& diag,
                  topology& topo) {
  table_reader r(t, "cluster", diag, {"name", "provider", "seeds", "secret", "insecure"});
  if (auto secret = r.string("secret", false)) {
    topo.secret = std::filesystem::absolute(file).parent_path() / *secret;
  }
  topo.insecure = r.boolean("insecure").value_or(false);
  topo.cluster_name = r.string("name", true).value_or("");
  topo.provider = r.string("provider", false).value_or("tcp");
  if (std::find(provider_names.begin(), provider_names.end(), topo.provider) ==
      provider_names.end()) {
    diag.fail(t.get("provider")->source(),
              fmt::format("cluster.provider: expected tcp, shm, verbs or efa, got \"{}\"",
                          topo.provider));
  }
  r.strings("seeds", false,
            [&](const std::string& s, const toml::source_region&) { topo.seeds.push_back(s); });
}

void read_model(const toml::table& t, const std::filesystem::path& file, diagnostics& diag,
                topology& topo) {
  table_reader r(t, "model", diag, {"checkpoint", "tokenizer"});
  const auto base = std::filesystem::absolute(file).parent_path();
  const auto checkpoint = r.string("checkpoint", true).value_or("");
  const auto tokenizer = r.string("tokenizer", true).value_or("");
  topo.model = resolve_model(checkpoint, tokenizer, base);
}

void read_limits(const toml::table& t, diagnostics& diag, limits_spec& l) {
  table_reader r(t, "limits", diag,
                 {"max_queued_requests", "kv_block_tokens", "max_prompt_tokens", "max_new_tokens"});
  l.max_queued_requests =
      r.integer("max_queued_requests", 1, 1 << 20).value_or(l.max_queued_requests);
  l.kv_block_tokens = r.integer("kv_block_tokens", 1, 1024).value_or(l.kv_block_tokens);
  l.max_prompt_tokens = r.integer("max_prompt_tokens", 1, 1 << 20).value_or(l.max_prompt_tokens);
  l.max_new_tokens = r.integer("max_new_tokens", 1, 1 << 20).value_or(l.max_new_tokens);
}

void read_timeouts(const toml::table& t, diagnostics& diag, timeouts_spec& o) {
  table_reader r(
      t, "timeouts", diag,
      {"request_ms", "probe_interval_ms", "suspect_after_ms", "dead_after_ms", "orphan_grace_ms"});
  o.request_ms = r.integer("request_ms", 1, 86'400'000).value_or(o.request_ms);
  o.probe_interval_ms = r.integer("probe_interval_ms", 1, 60'000).value_or(o.probe_interval_ms);
  o.suspect_after_ms = r.integer("suspect_after_ms", 1, 600'000).value_or(o.suspect_after_ms);
  o.dead_after_ms = r.integer("dead_after_ms", 1, 600'000).value_or(o.dead_after_ms);
  o.orphan_grace_ms = r.integer("orphan_grace_ms", 0, 600'000).value_or(o.orphan_grace_ms);
  if (!diag.failed() && o.suspect_after_ms >= o.dead_after_ms) {
    diag.fail(t.source(), fmt::format("timeouts: expected suspect_after_ms ({}) < "
                                      "dead_after_ms ({})",
                                      o.suspect_after_ms, o.dead_after_ms));
  }
}

void read_router(const toml::table& t, const std::filesystem::path& file, diagnostics& diag,
                 router_spec& o) {
  table_reader r(t, "router", diag,
                 {"prefill_on_decode_max_tokens", "when_no_prefill", "max_attempts", "max_waiting",
                  "max_wait_ms", "api_keys", "tls_certificate", "tls_key"});
  const auto beside = [&](const std::string& name) {
    return std::filesystem::absolute(file).parent_path() / name;
  };
  if (auto keys = r.string("api_keys", false)) o.api_keys = beside(*keys);
  if (auto cert = r.string("tls_certificate", false)) o.tls_certificate = beside(*cert);
  if (auto key = r.string("tls_key", false)) o.tls_key = beside(*key);
  if (o.tls_certificate.empty() != o.tls_key.empty()) {
    diag.fail(t.source(),
              "router: tls_certificate and tls_key go together (PEM files): "
              "name both or neither");
  }
  o.prefill_on_decode_max_tokens =
      r.integer("prefill_on_decode_max_tokens", 0, 1 << 20).value_or(0);
  o.when_no_prefill = r.string("when_no_prefill", false).value_or(o.when_no_prefill);
  if (o.when_no_prefill != "wait" && o.when_no_prefill != "prefill-on-decode") {
    diag.fail(t.get("when_no_prefill")->source(),
              fmt::format("router.when_no_prefill: expected \"wait\" or "
                          "\"prefill-on-decode\", got \"{}\"",
                          o.when_no_prefill));
  }
  o.max_attempts = r.integer("max_attempts", 1, 100).value_or(o.max_attempts);
  o.max_waiting = r.integer("max_waiting", 0, 1 << 20).value_or(o.max_waiting);
  o.max_wait_ms = r.integer("max_wait_ms", 0, 3'600'000).value_or(o.max_wait_ms);
}

void read_emulated(const toml::table& t, diagnostics& diag, emulated_spec& o) {
  table_reader r(t, "emulated", diag, {"shape", "scale", "time_scale"});
  o.shape = r.string("shape", false).value_or(o.shape);
  o.scale = r.integer("scale", 1, 1 << 20).value_or(o.scale);
  o.time_scale = r.number("time_scale", 0.0, 1e6).value_or(o.time_scale);
}

/// Every table of the file; [cluster], [model] and at least one [[node]] are required.
void read_sections(const toml::table& root, const std::filesystem::path& file, diagnostics& diag,
                   topology& topo) {
  table_reader top(root, "topology", diag,
                   {"cluster", "model", "limits", "timeouts", "router", "emulated", "node"});
  if (const auto* t = top.table("cluster")) {
    read_cluster(*t, file, diag, topo);
  } else {
    diag.fail(root.source(), "topology: missing required table [cluster]");
  }
  if (const auto* t = top.table("model")) {
    read_model(*t, file, diag, topo);
  } else {
    diag.fail(root.source(), "topology: missing required table [model]");
  }
  if (const auto* t = top.table("limits")) read_limits(*t, diag, topo.limits);
  if (const auto* t = top.table("timeouts")) read_timeouts(*t, diag, topo.timeouts);
  if (const auto* t = top.table("router")) read_router(*t, file, diag, topo.router);
  if (const auto* t = top.table("emulated")) read_emulated(*t, diag, topo.emulated);
  const toml::node* nodes = root.get("node");
  if (nodes == nullptr || !nodes->is_array_of_tables()) {
    diag.fail(nodes ? nodes->source() : root.source(),
              "node: expected one or more [[node]] tables");
    return;
  }
  std::size_t index = 0;
  for (const auto& element : *nodes->as_array()) {
    read_node(*element.as_table(), index++, topo.provider, diag, topo.nodes.emplace_back());
  }
}

/// Rules across nodes: unique names and addresses, seeds that exist.
void check_cluster(const toml::table& root, diagnostics& diag, const topology& topo) {
  std::set<std::string> names, fabrics, admins;
  const auto* nodes = root.get("node")->as_array();
  for (std::size_t i = 0; i < topo.nodes.size(); ++i) {
    const auto& n = topo.nodes[i];
    const auto& where = (*nodes)[i].source();
    if (!names.insert(n.name).second) {
      diag.fail(where, fmt::format("node[{}].name: \"{}\" is already used", i, n.name));
    }
    if (!any_port(n.fabric_address) && !fabrics.insert(n.fabric_address).second) {
      diag.fail(where, fmt::format("node[{}].fabric: {} is already used", i, n.fabric_address));
    }
    if (!any_port(n.admin_address) && !admins.insert(n.admin_address).second) {
      diag.fail(where, fmt::format("node[{}].admin: {} is already used", i, n.admin_address));
    }
  }
  // KV moves between prefill and decode nodes: they all run the CPU engine or all emulate.
  const node_spec* first_worker = nullptr;
  for (std::size_t i = 0; i < topo.nodes.size(); ++i) {
    const auto& n = topo.nodes[i];
    if (!n.has_role(wire::role::prefill) && !n.has_role(wire::role::decode) &&
        !n.has_role(wire::role::kv)) {
      continue;
    }
    if (first_worker == nullptr) {
      first_worker = &n;
    } else if (n.emulated() != first_worker->emulated()) {
      const auto* key = (*nodes)[i].as_table()->get("device");
      diag.fail(key ? key->source() : (*nodes)[i].source(),
                fmt::format("node[{}].device: \"{}\" cannot serve beside {}'s \"{}\": KV moves "
                            "between prefill and decode nodes, so they all run \"cpu\" or all "
                            "run \"emulated:PROFILE\"",
                            i, n.device, first_worker->name, first_worker->device));
    }
  }
  for (const auto& seed : topo.seeds) {
    if (topo.find(seed) == nullptr) {
      diag.fail(root.get("cluster")->source(),
                fmt::format("cluster.seeds: \"{}\" is not a node of this topology", seed));
    }
  }
}

}  // namespace

bool node_spec::has_role(wire::role r) const {
  return std::find(roles.begin(), roles.end(), r) != roles.end();
}

std::vector<std::string> topology::warnings() const {
  std::vector<std::string> out;
  for (auto r : {wire::role::router, wire::role::prefill, wire::role::decode}) {
    if (std::none_of(nodes.begin(), nodes.end(),
                     [&](const node_spec& n) { return n.has_role(r); })) {
      out.push_back(fmt::format("no node has the role {}: it must join later", to_string(r)));
    }
  }
  std::string kv;
  for (const auto& n : nodes) {
    if (n.has_role(wire::role::router) && n.native_address.empty()) {
      out.push_back(
          fmt::format("router {} has no native address: clients cannot reach it", n.name));
    }
    if (n.has_role(wire::role::kv)) kv += fmt::format("{}{}", kv.empty() ? "" : ", ", n.name);
  }
  if (!kv.empty()) {
    out.push_back(
        fmt::format("the kv role ({}) is accepted but starts no actor yet: KV-cache "
                    "shards are a later issue",
                    kv));
  }
  return out;
}

bool topology::emulated_workers() const {
  return std::any_of(nodes.begin(), nodes.end(), [](const node_spec& n) {
    return n.emulated() && (n.has_role(wire::role::prefill) || n.has_role(wire::role::decode) ||
                            n.has_role(wire::role::kv));
  });
}

const node_spec* topology::find(std::string_view name) const {
  auto it =
      std::find_if(nodes.begin(), nodes.end(), [&](const node_spec& n) { return n.name == name; });
  return it == nodes.end() ? nullptr : &*it;
}

node_spec* topology::find(std::string_view name) {
  return const_cast<node_spec*>(std::as_const(*this).find(name));
}

expected<void> check_exposure(const topology& t, const node_spec& node) {
  if (!t.secret.empty() || t.insecure) return {};
  const auto loopback = [](const std::string& host) {
    return host == "localhost" || host == "::1" || host.starts_with("127.");
  };
  const std::pair<const char*, const std::string*> addresses[] = {{"fabric", &node.fabric_address},
                                                                  {"admin", &node.admin_address},
                                                                  {"native", &node.native_address},
                                                                  {"http", &node.http_address}};
  for (const auto& [field, address] : addresses) {
    if (address->empty()) continue;
    const auto at = parse_host_port(*address, port_zero::allowed);
    if (!at || loopback(at->host)) continue;  // shm names, and what loopback reaches
    return fail(errc::invalid_argument,
                fmt::format("{}: node {} binds {} {}, which other hosts can reach, and the cluster "
                            "has no secret: make one (baton secret init FILE) and name it in "
                            "[cluster] secret = \"FILE\", or write insecure = true in [cluster] "
                            "to let anyone who reaches these ports join",
                            t.file.string(), node.name, field, *address));
  }
  return {};
}

std::string_view to_string(wire::node_kind kind) noexcept {
  return kind_names[static_cast<std::size_t>(kind)];
}

std::string_view to_string(wire::role role) noexcept {
  return role_names[static_cast<std::size_t>(role)];
}

expected<topology> parse_topology(std::string_view text, const std::filesystem::path& file) {
  auto parsed = parse_toml(text, file.string());
  if (!parsed) return tl::unexpected(parsed.error());
  const toml::table& root = *parsed;
  diagnostics diag(file.string());
  topology topo;
  topo.file = file;
  read_sections(root, file, diag, topo);
  if (!diag.failed()) check_cluster(root, diag, topo);
  if (!diag.failed() && topo.seeds.empty()) {
    for (const auto& n : topo.nodes) {
      if (n.has_role(wire::role::router)) topo.seeds.push_back(n.name);
    }
  }
  if (diag.failed()) return tl::unexpected(diag.first());
  return topo;
}

expected<topology> load_topology(const std::filesystem::path& file) {
  auto text = read_toml_file(file, "topology file");
  if (!text) return tl::unexpected(text.error());
  return parse_topology(*text, file);
}

std::vector<std::filesystem::path> model_search_path(const std::filesystem::path& topology_dir) {
  std::vector<std::filesystem::path> dirs;
  const auto add = [&](const std::filesystem::path& dir) {
    const auto normal = std::filesystem::absolute(dir).lexically_normal();
    if (std::find(dirs.begin(), dirs.end(), normal) == dirs.end()) dirs.push_back(normal);
  };
  if (const char* env = std::getenv("BATON_MODEL_PATH")) {
    std::string_view rest(env);
    while (!rest.empty()) {
      const auto colon = rest.find(':');
      const auto dir = rest.substr(0, colon);
      if (!dir.empty()) add(std::filesystem::path(dir));
      rest = colon == std::string_view::npos ? std::string_view{} : rest.substr(colon + 1);
    }
  }
  add("models");
  add("../shared/models");
  add(topology_dir / "models");
  add(topology_dir / "../shared/models");
  return dirs;
}

std::filesystem::path model_file(const std::string& value, const std::filesystem::path& base) {
  return find_model_file(value, base, model_search_path(base));
}

model_spec resolve_model(const std::string& checkpoint, const std::string& tokenizer,
                         const std::filesystem::path& base) {
  const auto search = model_search_path(base);
  const auto bare = [](const std::string& v) {
    return !v.empty() && !std::filesystem::path(v).has_parent_path();
  };
  model_spec m;
  m.checkpoint = find_model_file(checkpoint, base, search);
  m.tokenizer = find_model_file(tokenizer, base, search);
  m.checkpoint_named = bare(checkpoint);
  m.tokenizer_named = bare(tokenizer);
  if (m.checkpoint_named || m.tokenizer_named) m.searched = search;
  return m;
}

std::string model_path_hint() {
  const char* env = std::getenv("BATON_MODEL_PATH");
  return fmt::format(
      "{}; model names are looked up on the host where each command runs, so every host "
      "needs the files in its model search path (BATON_MODEL_PATH, set in the environment of "
      "every `baton node`, or ./models, ../shared/models)",
      env == nullptr ? std::string("BATON_MODEL_PATH is not set in this process's environment")
                     : fmt::format("BATON_MODEL_PATH is \"{}\" here", env));
}

std::string model_spec::missing() const {
  std::string out;
  for (const auto* file : {&checkpoint, &tokenizer}) {
    std::error_code ec;
    if (std::filesystem::is_regular_file(*file, ec)) continue;
    if (!out.empty()) out += "; ";
    const bool is_checkpoint = file == &checkpoint;
    out += fmt::format("no {} '{}'", is_checkpoint ? "checkpoint" : "tokenizer",
                       file->filename().string());
    if (!(is_checkpoint ? checkpoint_named : tokenizer_named)) {
      out += fmt::format(" at {}", file->string());
    } else {
      out += " in the model search path (";
      for (std::size_t i = 0; i < searched.size(); ++i) {
        out += (i == 0 ? "" : ", ") + searched[i].string();
      }
      out += ")";
    }
  }
  return out;
}

}  // namespace baton::runtime
