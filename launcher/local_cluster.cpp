#include "launcher/local_cluster.hpp"

#include <csignal>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <random>
#include <thread>

#include <fmt/format.h>

#include "runtime/admin_server.hpp"

namespace baton::launcher {

local_cluster::local_cluster(const local_cluster_options& options)
    : options_(options),
      dir_(std::filesystem::temp_directory_path() /
           fmt::format("baton-bench-{}-{}", options.name, std::random_device{}())) {
  std::filesystem::create_directories(dir_);
  const auto address = [] { return fmt::format("127.0.0.1:{}", runtime::free_port()); };
  native_ = address();
  admin_["router-0"] = address();
  std::string nodes = fmt::format(
      "[[node]]\nname = \"router-0\"\nkind = \"cpu\"\nroles = [\"router\"]\n"
      "fabric = \"{}\"\nadmin = \"{}\"\nnative = \"{}\"\n",
      address(), admin_["router-0"], native_);
  for (const auto& w : options.workers) {
    admin_[w.name] = address();
    nodes += fmt::format(
        "\n[[node]]\nname = \"{}\"\nkind = \"{}\"\ndevice = \"{}\"\nroles = [\"{}\"]\n"
        "fabric = \"{}\"\nadmin = \"{}\"\n",
        w.name, w.kind, w.device, w.role, address(), admin_[w.name]);
    if (w.kv_blocks != 0) nodes += fmt::format("kv_blocks = {}\n", w.kv_blocks);
  }
  std::ofstream(dir_ / "cluster.toml") << fmt::format(
      "[cluster]\nname = \"bench\"\nprovider = \"tcp\"\n\n"
      "[model]\ncheckpoint = \"{}\"\ntokenizer = \"{}\"\n\n{}\n{}",
      std::filesystem::absolute(options.checkpoint).string(),
      std::filesystem::absolute(options.tokenizer).string(), options.extra_toml, nodes);
}

local_cluster::~local_cluster() {
  procs_.clear();
  std::error_code ignored;
  if (std::getenv("BATON_KEEP") == nullptr) std::filesystem::remove_all(dir_, ignored);
}

void local_cluster::start(const std::string& name, std::vector<std::string> extra) {
  std::vector<std::string> argv = {
      "/proc/self/exe", "node", "--config", (dir_ / "cluster.toml").string(), "--name", name};
  argv.insert(argv.end(), extra.begin(), extra.end());
  procs_[name] = std::make_unique<child_process>(argv, dir_ / (name + ".log"));
}

void local_cluster::start_all() {
  start("router-0");
  for (const auto& w : options_.workers) start(w.name);
}

void local_cluster::stop(const std::string& name) {
  procs_.at(name)->signal(SIGTERM);
  (void)procs_.at(name)->wait(std::chrono::seconds(10));
  procs_.erase(name);
}

double local_cluster::metric(const std::string& name, const std::string& series) const {
  auto text = runtime::admin_get(admin_.at(name), "/metrics", std::chrono::milliseconds(500));
  if (!text) return -1;
  const auto at = text->find("\n" + series + " ");
  return at == std::string::npos ? -1 : std::stod(text->substr(at + series.size() + 2));
}

expected<void> local_cluster::ready(std::chrono::seconds timeout) {
  std::size_t prefill = 0;
  std::size_t decode = 0;
  for (const auto& w : options_.workers) (w.role == "prefill" ? prefill : decode) += 1;
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < until) {
    for (auto& [name, proc] : procs_) {
      if (proc->wait(std::chrono::milliseconds(0))) {
        return fail(errc::failed, fmt::format("node {} exited:\n{}", name, log(name)));
      }
    }
    if (metric("router-0", R"(baton_router_workers{role="prefill"})") ==
            static_cast<double>(prefill) &&
        metric("router-0", R"(baton_router_workers{role="decode"})") ==
            static_cast<double>(decode)) {
      return {};
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return fail(errc::timed_out, fmt::format("not ready within {} s; the router's log:\n{}",
                                           timeout.count(), log("router-0")));
}

std::string local_cluster::log(const std::string& name) const {
  std::ifstream in(dir_ / (name + ".log"));
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace baton::launcher
