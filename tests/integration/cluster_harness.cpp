#include "cluster_harness.hpp"

#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <thread>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "engine/cpu_engine.hpp"
#include "engine/generate.hpp"
#include "engine/model.hpp"
#include "engine/tokenizer.hpp"

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
  return (*this)(prompt, engine::generate_options{t, p, seed, steps});
}

std::string reference::operator()(const std::string& prompt,
                                  const engine::generate_options& options) {
  return *engine::generate_text(*engine_, *tok_, prompt, options);
}

std::string reference::echo(const std::string& prompt) {
  return *engine::prompt_echo(*engine_, *tok_, prompt);
}

test_cluster::test_cluster(const std::vector<cluster_node>& nodes, const std::string& checkpoint,
                           std::string sections)
    : launcher::local_cluster({.name = "test",
                               .checkpoint = checkpoint,
                               .tokenizer = shared("tok512.bin"),
                               .nodes = nodes,
                               .sections = std::move(sections),
                               .binary = BATON_BINARY}) {}

child_process& test_cluster::start(const std::string& name, std::vector<std::string> extra,
                                   std::optional<std::filesystem::path> config) {
  auto ok = local_cluster::start(name, std::move(extra), std::move(config));
  if (!ok) ADD_FAILURE() << ok.error().message;
  return process(name);
}

std::optional<nlohmann::json> test_cluster::status(const std::string& name) const {
  auto body = local_cluster::status(name);
  if (!body) return std::nullopt;
  auto json = nlohmann::json::parse(*body, nullptr, false);
  if (json.is_discarded()) return std::nullopt;
  return json;
}

command_result run(const std::string& command) {
  command_result r;
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return r;
  std::array<char, 4096> buffer{};
  std::size_t n = 0;
  while ((n = std::fread(buffer.data(), 1, buffer.size(), pipe)) > 0)
    r.out.append(buffer.data(), n);
  const int status = pclose(pipe);
  r.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

std::string quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

bool test_cluster::start_serving(const std::map<std::string, std::vector<std::string>>& extra,
                                 std::chrono::milliseconds timeout) {
  auto ok = start_all(extra);
  if (ok) ok = ready(timeout);
  if (!ok) std::printf("the cluster did not start serving: %s\n", ok.error().message.c_str());
  return ok.has_value();
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
