#include "cluster_harness.hpp"

#include <unistd.h>

#include <fstream>
#include <random>
#include <thread>

#include <fmt/format.h>

#include "engine/cpu_engine.hpp"
#include "engine/generate.hpp"
#include "engine/model.hpp"
#include "engine/tokenizer.hpp"
#include "runtime/admin_server.hpp"

namespace baton::testing {

std::string shared(const char* name) {
  return std::string(BATON_SHARED_MODELS_DIR) + "/" + name;
}

reference::reference() {
  model_ = std::make_unique<engine::model>(*engine::model::load(shared("stories260K.bin")));
  tok_ = std::make_unique<engine::tokenizer>(
      *engine::tokenizer::load(shared("tok512.bin"), model_->config().vocab_size));
  engine::engine_options o;
  o.max_sequences = 1;
  engine_ = std::move(*engine::cpu_engine::create(*model_, o));
}

reference::~reference() = default;

std::string reference::operator()(const std::string& prompt, float t, float p, std::uint64_t seed,
                                  int steps) {
  return *engine::generate_text(*engine_, *tok_, prompt, {t, p, seed, steps});
}

test_cluster::test_cluster(const std::vector<node_def>& nodes, const std::string& checkpoint,
                           std::string sections)
    : nodes_(nodes), sections_(std::move(sections)) {
  dir_ = std::filesystem::temp_directory_path() /
         fmt::format("baton-test-{}-{}", getpid(), std::random_device{}());
  std::filesystem::create_directories(dir_);
  for (const auto& n : nodes_) {
    fabric_[n.name] = fmt::format("127.0.0.1:{}", free_port());
    admin_[n.name] = fmt::format("127.0.0.1:{}", free_port());
    if (n.roles.find("router") != std::string::npos) {
      native_[n.name] = fmt::format("127.0.0.1:{}", free_port());
      http_[n.name] = fmt::format("127.0.0.1:{}", free_port());
    }
  }
  std::ofstream(dir_ / "cluster.toml") << topology_text(checkpoint);
}

test_cluster::~test_cluster() {
  procs_.clear();  // kills and reaps
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
}

std::string test_cluster::topology_text(const std::string& checkpoint) const {
  std::string text = fmt::format(
      "[cluster]\nname = \"test\"\nprovider = \"tcp\"\nseeds = [\"{}\"]\n\n"
      "[model]\ncheckpoint = \"{}\"\ntokenizer = \"{}\"\n\n",
      nodes_.front().name, checkpoint, BATON_SHARED_MODELS_DIR "/tok512.bin");
  text += sections_ + "\n";
  for (const auto& n : nodes_) {
    text += fmt::format(
        "[[node]]\nname = \"{}\"\nkind = \"{}\"\nroles = {}\nfabric = \"{}\"\nadmin = \"{}\"\n",
        n.name, n.kind, n.roles, fabric_.at(n.name), admin_.at(n.name));
    if (auto native = native_.find(n.name); native != native_.end()) {
      text += fmt::format("native = \"{}\"\n", native->second);
      text += fmt::format("http = \"{}\"\n", http_.at(n.name));
    }
    text += n.extra + "\n\n";
  }
  return text;
}

std::filesystem::path test_cluster::write_variant(const std::string& file,
                                                  const std::string& checkpoint) const {
  std::ofstream(dir_ / file) << topology_text(checkpoint);
  return dir_ / file;
}

child_process& test_cluster::start(const std::string& name, std::vector<std::string> extra,
                                   std::optional<std::filesystem::path> config) {
  std::vector<std::string> argv = {
      BATON_BINARY, "node", "--config", (config ? *config : dir_ / "cluster.toml").string(),
      "--name",     name};
  argv.insert(argv.end(), extra.begin(), extra.end());
  auto proc = std::make_unique<child_process>(argv, dir_ / (name + ".log"));
  auto& ref = *proc;
  procs_[name] = std::move(proc);
  return ref;
}

std::optional<nlohmann::json> test_cluster::status(const std::string& name) const {
  auto body = runtime::admin_get(admin_.at(name), "/status", std::chrono::milliseconds(500));
  if (!body) return std::nullopt;
  auto json = nlohmann::json::parse(*body, nullptr, false);
  if (json.is_discarded()) return std::nullopt;
  return json;
}

std::string test_cluster::state_of(const std::string& observer, const std::string& node) const {
  auto s = status(observer);
  if (!s) return "";
  for (const auto& m : (*s)["members"]) {
    if (m.value("node", "") == node) return m.value("state", "");
  }
  return "";
}

std::string test_cluster::metrics(const std::string& name) const {
  auto body = runtime::admin_get(admin_.at(name), "/metrics", std::chrono::milliseconds(500));
  return body ? *body : "";
}

double test_cluster::metric(const std::string& name, const std::string& series) const {
  const std::string text = metrics(name);
  const auto at = text.find("\n" + series + " ");
  if (at == std::string::npos) return -1;
  return std::stod(text.substr(at + series.size() + 2));
}

bool test_cluster::start_serving(const std::map<std::string, std::vector<std::string>>& extra,
                                 std::chrono::milliseconds timeout) {
  double prefills = 0;
  double decodes = 0;
  for (const auto& n : nodes_) {
    const auto args = extra.find(n.name);
    start(n.name, args == extra.end() ? std::vector<std::string>{} : args->second);
    prefills += n.roles.find("prefill") != std::string::npos ? 1 : 0;
    decodes += n.roles.find("decode") != std::string::npos ? 1 : 0;
  }
  // Mutual membership first: a decode node grants RMA only to writers it knows.
  return wait_until(
             [&] {
               for (const auto& a : nodes_) {
                 for (const auto& b : nodes_) {
                   if (state_of(a.name, b.name) != "alive") return false;
                 }
               }
               return metric("router-0", R"(baton_router_workers{role="prefill"})") == prefills &&
                      metric("router-0", R"(baton_router_workers{role="decode"})") == decodes;
             },
             timeout)
      .has_value();
}

std::optional<std::chrono::milliseconds> wait_until(const std::function<bool()>& done,
                                                    std::chrono::milliseconds timeout) {
  const auto start = std::chrono::steady_clock::now();
  for (;;) {
    const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - start);
    if (done()) return took;
    if (took > timeout) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

}  // namespace baton::testing
