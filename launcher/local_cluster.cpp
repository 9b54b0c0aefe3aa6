#include "launcher/local_cluster.hpp"

#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "base/check.hpp"
#include "launcher/netns_lab.hpp"
#include "runtime/admin_server.hpp"
#include "runtime/cluster_secret.hpp"

namespace baton::launcher {
namespace {

constexpr auto listening_timeout = std::chrono::seconds(30);

bool has_role(const cluster_node& n, const char* role) {
  return std::find(n.roles.begin(), n.roles.end(), role) != n.roles.end();
}

/// A path with a folder made absolute (the nodes run elsewhere); a bare name stays a name,
/// which nodes look up in the model search path.
std::string absolute_path(const std::filesystem::path& p) {
  return p.has_parent_path() ? std::filesystem::absolute(p).string() : p.string();
}

}  // namespace

std::optional<node_addresses> parse_listening_line(const std::string& line) {
  std::istringstream words(line);
  std::string word, name, verb;
  if (!(words >> word >> name >> verb) || word != "node" || verb != "listening") return {};
  node_addresses a;
  while (words >> word) {
    const auto eq = word.find('=');
    if (eq == std::string::npos) return {};
    const auto key = word.substr(0, eq);
    auto value = word.substr(eq + 1);
    if (key == "fabric") a.fabric = std::move(value);
    if (key == "admin") a.admin = std::move(value);
    if (key == "native") a.native = std::move(value);
    if (key == "http") a.http = std::move(value);
  }
  if (a.fabric.empty() || a.admin.empty()) return {};
  return a;
}

local_cluster::local_cluster(local_cluster_options options)
    : options_(std::move(options)),
      dir_(std::filesystem::temp_directory_path() /
           fmt::format("baton-{}-{}-{}", options_.name, getpid(), std::random_device{}())),
      topology_(dir_ / "cluster.toml") {
  std::filesystem::create_directories(dir_);
  // Nodes bind non-loopback addresses only with a secret (a failure here shows in the
  // nodes' own refusal to start).
  if (options_.lab != nullptr) (void)runtime::cluster_secret::create(dir_ / "cluster.secret");
  std::ofstream(topology_) << topology_text(options_.checkpoint);
}

std::string local_cluster::host_address(std::size_t i) {
  return fmt::format("10.77.0.{}", i + 1);
}

expected<void> local_cluster::add_hosts(netns_lab& lab, const std::vector<cluster_node>& nodes) {
  for (std::size_t i = 0; i < nodes.size(); ++i) {
    if (auto ok = lab.add_host(nodes[i].name, {host_address(i)}); !ok) return ok;
  }
  return {};
}

local_cluster::~local_cluster() {
  procs_.clear();  // kills and reaps
  std::error_code ignored;
  if (std::getenv("BATON_KEEP") == nullptr) std::filesystem::remove_all(dir_, ignored);
}

std::string local_cluster::topology_text(const std::filesystem::path& checkpoint) const {
  std::string text = fmt::format(
      "[cluster]\nname = \"{}\"\nprovider = \"{}\"\nseeds = [\"{}\"]\n{}\n"
      "[model]\ncheckpoint = \"{}\"\ntokenizer = \"{}\"\n\n{}\n",
      options_.name, options_.provider, options_.nodes.front().name,
      options_.lab != nullptr ? fmt::format("secret = \"{}\"\n", (dir_ / "cluster.secret").string())
                              : std::string(),
      absolute_path(checkpoint), absolute_path(options_.tokenizer), options_.sections);
  for (std::size_t i = 0; i < options_.nodes.size(); ++i) {
    const auto& n = options_.nodes[i];
    std::string roles;
    for (const auto& r : n.roles) roles += fmt::format("{}\"{}\"", roles.empty() ? "" : ", ", r);
    // With a lab, each node is a host of its own: the same ports everywhere.
    const auto at = [&](int port) {
      return options_.lab != nullptr ? fmt::format("{}:{}", host_address(i), port)
                                     : std::string("127.0.0.1:0");
    };
    const auto fabric = options_.provider == "shm"
                            ? fmt::format("baton-{}-{}-{}", options_.name, getpid(), n.name)
                            : at(7100);
    text += fmt::format(
        "[[node]]\nname = \"{}\"\nkind = \"{}\"\ndevice = \"{}\"\nroles = [{}]\nfabric = \"{}\"\n"
        "admin = \"{}\"\n",
        n.name, n.kind, n.device, roles, fabric, at(9100));
    if (has_role(n, "router")) {
      text += fmt::format("native = \"{}\"\nhttp = \"{}\"\n", at(7000), at(8000));
    }
    text += n.extra + "\n\n";
  }
  return text;
}

std::filesystem::path local_cluster::write_variant(const std::string& file,
                                                   const std::filesystem::path& checkpoint) const {
  std::ofstream(dir_ / file) << topology_text(checkpoint);
  return dir_ / file;
}

const cluster_node* local_cluster::find(const std::string& name) const {
  for (const auto& n : options_.nodes) {
    if (n.name == name) return &n;
  }
  return nullptr;
}

bool local_cluster::running(const std::string& name) {
  auto it = procs_.find(name);
  return it != procs_.end() && !it->second->wait(std::chrono::milliseconds(0));
}

expected<void> local_cluster::start(const std::string& name, std::vector<std::string> extra,
                                    std::optional<std::filesystem::path> config) {
  std::vector<std::string> argv = {options_.binary.string(),
                                   "node",
                                   "--config",
                                   (config ? *config : topology_).string(),
                                   "--name",
                                   name};
  // Join through every node running (unless told whom); a node started before binds its
  // ports again.
  if (std::find(extra.begin(), extra.end(), "--join") == extra.end()) {
    for (const auto& n : options_.nodes) {
      if (n.name != name && running(n.name)) argv.insert(argv.end(), {"--join", fabric(n.name)});
    }
  }
  if (auto known = addresses_.find(name); known != addresses_.end()) {
    const auto& a = known->second;
    argv.insert(argv.end(), {"--fabric", a.fabric, "--admin", a.admin});
    if (!a.native.empty()) argv.insert(argv.end(), {"--native", a.native});
    if (!a.http.empty()) argv.insert(argv.end(), {"--http", a.http});
  }
  argv.insert(argv.end(), extra.begin(), extra.end());
  if (options_.lab != nullptr) {  // inside the node's host: `ip netns exec` execs the node
    argv[0] = std::filesystem::canonical(argv[0]).string();  // not /proc/self/exe: the shell's
    std::string script = "exec";
    for (const auto& a : argv) script += " '" + a + "'";
    argv = options_.lab->shell(name, script);
  }
  procs_.erase(name);  // a previous process is reaped first
  auto& proc = *(procs_[name] = std::make_unique<child_process>(argv, dir_ / (name + ".log")));
  auto line = proc.wait_for_line(fmt::format("node {} listening ", name), listening_timeout);
  auto parsed = line ? parse_listening_line(*line) : std::nullopt;
  if (!parsed) {
    return fail(errc::failed,
                fmt::format("node {} did not report its addresses:\n{}", name, proc.log()));
  }
  addresses_[name] = *parsed;
  return {};
}

expected<void> local_cluster::start_all(
    const std::map<std::string, std::vector<std::string>>& extra) {
  for (const auto& n : options_.nodes) {
    const auto args = extra.find(n.name);
    auto ok = start(n.name, args == extra.end() ? std::vector<std::string>{} : args->second);
    if (!ok) return ok;
  }
  return {};
}

void local_cluster::stop(const std::string& name) {
  auto it = procs_.find(name);
  if (it == procs_.end()) return;
  it->second->signal(SIGTERM);
  (void)it->second->wait(std::chrono::seconds(10));
}

child_process& local_cluster::process(const std::string& name) {
  auto it = procs_.find(name);
  BATON_CHECK(it != procs_.end(), "local_cluster::process: the node was never started");
  return *it->second;
}

expected<void> local_cluster::ready(std::chrono::milliseconds timeout) {
  std::vector<std::string> up;
  double prefill = 0;
  double decode = 0;
  for (const auto& n : options_.nodes) {
    if (!procs_.contains(n.name)) continue;
    up.push_back(n.name);
    prefill += has_role(n, "prefill") ? 1 : 0;
    decode += has_role(n, "decode") ? 1 : 0;
  }
  const auto done = [&] {
    for (const auto& a : up) {
      for (const auto& b : up) {
        if (state_of(a, b) != "alive") return false;
      }
    }
    for (const auto& n : options_.nodes) {
      if (!procs_.contains(n.name) || !has_role(n, "router")) continue;
      if (metric(n.name, R"(baton_router_workers{role="prefill"})") != prefill ||
          metric(n.name, R"(baton_router_workers{role="decode"})") != decode) {
        return false;
      }
    }
    return true;
  };
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    for (const auto& name : up) {
      if (procs_.at(name)->wait(std::chrono::milliseconds(0))) {
        return fail(errc::failed, fmt::format("node {} exited:\n{}", name, log(name)));
      }
    }
    if (std::chrono::steady_clock::now() > until) {
      return fail(errc::timed_out,
                  fmt::format("the cluster was not ready within {} ms; {}'s log:\n{}",
                              timeout.count(), up.front(), log(up.front())));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return {};
}

const node_addresses& local_cluster::addresses(const std::string& name) const {
  static const node_addresses none;
  auto it = addresses_.find(name);
  return it == addresses_.end() ? none : it->second;
}

std::string local_cluster::fabric(const std::string& name) const {
  return addresses(name).fabric;
}
std::string local_cluster::admin(const std::string& name) const {
  return addresses(name).admin;
}
std::string local_cluster::native(const std::string& name) const {
  return addresses(name).native;
}
std::string local_cluster::http(const std::string& name) const {
  return addresses(name).http;
}

std::optional<std::string> local_cluster::status(const std::string& name) const {
  if (admin(name).empty()) return std::nullopt;
  auto body = runtime::admin_get(admin(name), "/status", std::chrono::milliseconds(500));
  if (!body) return std::nullopt;
  return std::move(*body);
}

std::string local_cluster::state_of(const std::string& observer, const std::string& node) const {
  auto text = status(observer);
  if (!text) return "";
  const auto s = nlohmann::json::parse(*text, nullptr, false);
  if (!s.is_object() || !s.contains("members") || !s["members"].is_array()) return "";
  for (const auto& m : s["members"]) {
    if (!m.is_object()) continue;
    const auto n = m.find("node");
    const auto state = m.find("state");
    if (n != m.end() && *n == node && state != m.end() && state->is_string()) {
      return state->get<std::string>();
    }
  }
  return "";
}

std::string local_cluster::metrics(const std::string& name) const {
  if (admin(name).empty()) return "";
  auto body = runtime::admin_get(admin(name), "/metrics", std::chrono::milliseconds(500));
  return body ? *body : "";
}

double local_cluster::metric(const std::string& name, const std::string& series) const {
  const std::string text = metrics(name);
  const auto at = text.find("\n" + series + " ");
  if (at == std::string::npos) return -1;
  return std::strtod(text.c_str() + at + series.size() + 2, nullptr);
}

std::string local_cluster::log(const std::string& name) const {
  std::ifstream in(dir_ / (name + ".log"));
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::optional<std::chrono::steady_clock::time_point> local_cluster::logged_at(
    const std::string& name, const std::string& text) const {
  const std::string all = log(name);
  const auto found = all.find(text);
  if (found == std::string::npos) return std::nullopt;
  const auto line = all.rfind("\n[", found);
  const auto at = line == std::string::npos ? all.find('[') + 1 : line + 2;
  std::tm tm{};
  int ms = 0;
  if (std::sscanf(all.c_str() + at, "%d-%d-%d %d:%d:%d.%d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                  &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms) != 7) {
    return std::nullopt;
  }
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  tm.tm_isdst = -1;
  const auto wall =
      std::chrono::system_clock::from_time_t(std::mktime(&tm)) + std::chrono::milliseconds(ms);
  return std::chrono::steady_clock::now() -
         std::chrono::duration_cast<std::chrono::steady_clock::duration>(
             std::chrono::system_clock::now() - wall);
}

}  // namespace baton::launcher
