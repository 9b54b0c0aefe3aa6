#include "launcher/netns_lab.hpp"

#include <fcntl.h>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

#include <fmt/format.h>

namespace baton::launcher {
namespace {

constexpr std::string_view name_prefix = "bwt";

std::string quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

/// Runs `argv` (through /bin/sh, each word quoted); its output, or an error with it.
expected<std::string> run(const std::vector<std::string>& argv) {
  std::string command;
  for (const auto& a : argv) {
    if (!command.empty()) command += ' ';
    command += quote(a);
  }
  std::FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return fail(errc::failed, "popen failed: " + command);
  std::string out;
  char buffer[4096];
  std::size_t n = 0;
  while ((n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) out.append(buffer, n);
  const int status = ::pclose(pipe);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return fail(errc::failed, fmt::format("`{}` failed: {}", command, out));
  }
  return out;
}

std::string find_ip() {
  for (const char* p : {"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"}) {
    if (::access(p, X_OK) == 0) return p;
  }
  return "";
}

/// Kills every process inside namespace `ns` and deletes it.
void remove_namespace(const std::string& ip, const std::string& ns) {
  for (int round = 0; round < 100; ++round) {
    auto pids = run({ip, "netns", "pids", ns});
    if (!pids || pids->empty()) break;
    std::istringstream words(*pids);
    bool others = false;
    for (long pid = 0; words >> pid;) {
      if (pid == ::getpid()) continue;  // a thread of ours entered it (netns_lab::enter)
      ::kill(static_cast<pid_t>(pid), SIGKILL);
      others = true;
    }
    if (!others) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  (void)run({ip, "netns", "del", ns});
}

/// Whether process `pid` runs (a zombie, killed and not reaped yet, does not).
bool running(long pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text;
  if (!std::getline(stat, text)) return false;
  const auto end = text.rfind(')');  // the state follows the command's name: "(name) S"
  return end == std::string::npos || end + 2 >= text.size() || text[end + 2] != 'Z';
}

/// Namespaces of labs whose test process is gone ("bwt<pid>-..." with no such pid).
void remove_stale(const std::string& ip) {
  auto list = run({ip, "netns", "list"});
  if (!list) return;
  std::istringstream lines(*list);
  for (std::string line; std::getline(lines, line);) {
    const auto name = line.substr(0, line.find(' '));
    if (!name.starts_with(name_prefix)) continue;
    const auto pid = std::atol(name.c_str() + name_prefix.size());
    if (pid <= 0 || pid == ::getpid()) continue;
    if (!running(pid)) remove_namespace(ip, name);
  }
}

}  // namespace

netns_lab::netns_lab(std::string ip, std::string prefix)
    : ip_(std::move(ip)), prefix_(std::move(prefix)) {}

expected<std::unique_ptr<netns_lab>> netns_lab::create() {
  auto ip = find_ip();
  if (ip.empty()) return fail(errc::not_found, "iproute2's `ip` is not installed");
  remove_stale(ip);
  std::unique_ptr<netns_lab> lab(new netns_lab(ip, fmt::format("{}{}-", name_prefix, ::getpid())));
  const auto bridge = lab->ns("bridge");
  if (auto ok = run({ip, "netns", "add", bridge}); !ok) return tl::unexpected(ok.error());
  lab->namespaces_.push_back(bridge);
  for (const auto& argv : std::vector<std::vector<std::string>>{
           {ip, "netns", "exec", bridge, ip, "link", "add", "br0", "type", "bridge"},
           {ip, "netns", "exec", bridge, ip, "link", "set", "br0", "up"}}) {
    if (auto ok = run(argv); !ok) return tl::unexpected(ok.error());
  }
  return lab;
}

netns_lab::~netns_lab() {
  for (auto it = namespaces_.rbegin(); it != namespaces_.rend(); ++it) remove_namespace(ip_, *it);
}

expected<void> netns_lab::add_host(const std::string& name,
                                   const std::vector<std::string>& addresses) {
  for (const auto& a : addresses) {
    const auto last = std::atoi(a.c_str() + std::min(a.size(), std::size_t{8}));
    if (!a.starts_with("10.77.0.") || last < 1 || last > 254 ||
        a != fmt::format("10.77.0.{}", last)) {
      return fail(errc::invalid_argument,
                  fmt::format("host {}: {} is not an address of 10.77.0.0/24", name, a));
    }
  }
  const auto host = ns(name);
  if (auto ok = run({ip_, "netns", "add", host}); !ok) return tl::unexpected(ok.error());
  namespaces_.push_back(host);
  const auto port = fmt::format("h{}", namespaces_.size());  // the host's port on the bridge
  ports_[name] = port;
  const auto bridge = ns("bridge");
  std::vector<std::vector<std::string>> steps = {
      {ip_, "netns", "exec", bridge, ip_, "link", "add", port, "type", "veth", "peer", "name",
       "eth0", "netns", host},
      {ip_, "netns", "exec", bridge, ip_, "link", "set", port, "master", "br0", "up"},
      {ip_, "netns", "exec", host, ip_, "link", "set", "lo", "up"},
      {ip_, "netns", "exec", host, ip_, "link", "set", "eth0", "up"}};
  for (const auto& a : addresses) {
    steps.push_back({ip_, "netns", "exec", host, ip_, "addr", "add", a + "/24", "dev", "eth0"});
  }
  for (const auto& argv : steps) {
    if (auto ok = run(argv); !ok) return tl::unexpected(ok.error());
  }
  return {};
}

expected<void> netns_lab::set_link(const std::string& name, bool up) {
  const auto port = ports_.find(name);
  if (port == ports_.end()) return fail(errc::not_found, "no host " + name);
  auto ok = run(
      {ip_, "netns", "exec", ns("bridge"), ip_, "link", "set", port->second, up ? "up" : "down"});
  if (!ok) return tl::unexpected(ok.error());
  return {};
}

expected<void> netns_lab::enter(const std::string& name) const {
  if (!ports_.contains(name)) return fail(errc::not_found, "no host " + name);
  const auto path = "/var/run/netns/" + ns(name);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fail(errc::failed, fmt::format("{}: cannot open", path));
  const int ok = ::setns(fd, CLONE_NEWNET);
  ::close(fd);
  if (ok != 0) return fail(errc::failed, fmt::format("setns into {} failed", ns(name)));
  return {};
}

std::vector<std::string> netns_lab::shell(const std::string& name,
                                          const std::string& script) const {
  return {ip_, "netns", "exec", ns(name), "/bin/sh", "-c", script};
}

}  // namespace baton::launcher
