#pragma once

// Real `baton node` processes on 127.0.0.1 for integration tests: launcher::local_cluster
// (every port 0, reported by the nodes) with the checks tests want, and the one-process
// reference output that served text is compared with.

#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/generate.hpp"
#include "launcher/local_cluster.hpp"

namespace baton::engine {
class cpu_engine;
class model;
class tokenizer;
}  // namespace baton::engine

namespace baton::testing {

using launcher::child_process;
using launcher::cluster_node;

/// `name` in ../shared/models.
[[nodiscard]] std::string shared(const char* name);

/// The single-process output of stories260K for a request (the oracle served text is
/// compared with): what `baton generate` prints for `steps` positions.
class reference {
 public:
  reference();
  ~reference();
  reference(const reference&) = delete;
  reference& operator=(const reference&) = delete;
  std::string operator()(const std::string& prompt, float t, float p, std::uint64_t seed,
                         int steps);
  /// With every option (the sampling parameters, the choice of several).
  std::string operator()(const std::string& prompt, const engine::generate_options& options);
  /// What llama2.c echoes of `prompt` before it samples (no newline).
  std::string echo(const std::string& prompt);

 private:
  std::unique_ptr<engine::model> model_;
  std::unique_ptr<engine::tokenizer> tok_;
  std::unique_ptr<engine::cpu_engine> engine_;
};

/// A local cluster of `nodes` (the first is the seed) on stories260K, or `checkpoint`.
class test_cluster : public launcher::local_cluster {
 public:
  /// Routers get a native client port and an HTTP API port. `sections` is more TOML
  /// ([limits], [router], ...).
  explicit test_cluster(const std::vector<cluster_node>& nodes,
                        const std::string& checkpoint = BATON_SHARED_MODELS_DIR "/stories260K.bin",
                        std::string sections = {});

  /// Starts `name` and waits for it to report its addresses (a test failure otherwise);
  /// its process.
  child_process& start(const std::string& name, std::vector<std::string> extra = {},
                       std::optional<std::filesystem::path> config = std::nullopt);
  /// `name`'s /status, or nullopt if it does not answer.
  [[nodiscard]] std::optional<nlohmann::json> status(const std::string& name) const;
  /// Starts every node (`extra` arguments by node name) and waits until each sees every
  /// other alive and the router places on every prefill and decode node; false (with the
  /// reason printed) on timeout.
  [[nodiscard]] bool start_serving(
      const std::map<std::string, std::vector<std::string>>& extra = {},
      std::chrono::milliseconds timeout = std::chrono::seconds(20));
};

/// A shell command's exit status (-1 if it did not exit) and standard output.
struct command_result {
  int status = -1;
  std::string out;
};

/// Runs `command` with /bin/sh and waits for it.
[[nodiscard]] command_result run(const std::string& command);
/// `s` quoted for /bin/sh.
[[nodiscard]] std::string quote(const std::string& s);

/// Polls `done` every 10 ms until it holds or `timeout` passes; returns how long it took.
[[nodiscard]] std::optional<std::chrono::milliseconds> wait_until(
    const std::function<bool()>& done, std::chrono::milliseconds timeout);

}  // namespace baton::testing
