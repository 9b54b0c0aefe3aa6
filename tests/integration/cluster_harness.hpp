#pragma once

// Real `baton node` processes on 127.0.0.1 for integration tests: a topology written to a
// temporary folder with free ports, children that are always killed and reaped, and the
// nodes' admin ports read as JSON.

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "launcher/child_process.hpp"
#include "runtime/admin_server.hpp"

namespace baton::engine {
class cpu_engine;
class model;
class tokenizer;
}  // namespace baton::engine

namespace baton::testing {

using launcher::child_process;
using runtime::free_port;

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

 private:
  std::unique_ptr<engine::model> model_;
  std::unique_ptr<engine::tokenizer> tok_;
  std::unique_ptr<engine::cpu_engine> engine_;
};

struct node_def {
  std::string name;
  std::string kind = "cpu";
  std::string roles = R"(["decode"])";
  std::string extra = {};  ///< more TOML lines for the node's table
};

/// A topology of `nodes` in a fresh temporary folder; the first node is the seed.
class test_cluster {
 public:
  /// Routers get a native client port and an HTTP API port. `sections` is more TOML
  /// ([limits], [router], ...).
  explicit test_cluster(const std::vector<node_def>& nodes,
                        const std::string& checkpoint = BATON_SHARED_MODELS_DIR "/stories260K.bin",
                        std::string sections = {});
  ~test_cluster();

  /// Writes the topology again with another checkpoint, as `file`, for a mismatched node.
  [[nodiscard]] std::filesystem::path write_variant(const std::string& file,
                                                    const std::string& checkpoint) const;
  /// Starts `baton node` for `name` (with `extra` arguments).
  child_process& start(const std::string& name, std::vector<std::string> extra = {},
                       std::optional<std::filesystem::path> config = std::nullopt);
  [[nodiscard]] child_process& process(const std::string& name) { return *procs_.at(name); }
  [[nodiscard]] const std::filesystem::path& dir() const { return dir_; }
  [[nodiscard]] std::string admin(const std::string& name) const { return admin_.at(name); }
  [[nodiscard]] std::string fabric(const std::string& name) const { return fabric_.at(name); }
  /// A router's native client address ("127.0.0.1:PORT").
  [[nodiscard]] std::string native(const std::string& name) const { return native_.at(name); }
  /// A router's HTTP API address ("127.0.0.1:PORT").
  [[nodiscard]] std::string http(const std::string& name) const { return http_.at(name); }

  /// `name`'s /status, or nullopt if it does not answer.
  [[nodiscard]] std::optional<nlohmann::json> status(const std::string& name) const;
  /// The state `observer` reports for `node` ("alive", "dead", ...), or "" if unknown.
  [[nodiscard]] std::string state_of(const std::string& observer, const std::string& node) const;
  /// `name`'s /metrics text, or "".
  [[nodiscard]] std::string metrics(const std::string& name) const;
  /// A counter or gauge `series` (name with labels) on node `name`, or -1.
  [[nodiscard]] double metric(const std::string& name, const std::string& series) const;
  /// Starts every node (`extra` arguments by node name) and waits until each sees every
  /// other alive and the router places on every prefill and decode node; false on timeout.
  [[nodiscard]] bool start_serving(
      const std::map<std::string, std::vector<std::string>>& extra = {},
      std::chrono::milliseconds timeout = std::chrono::seconds(20));

 private:
  std::string topology_text(const std::string& checkpoint) const;

  std::filesystem::path dir_;
  std::vector<node_def> nodes_;
  std::map<std::string, std::string> fabric_;
  std::map<std::string, std::string> admin_;
  std::map<std::string, std::string> native_;
  std::map<std::string, std::string> http_;
  std::string sections_;
  std::map<std::string, std::unique_ptr<child_process>> procs_;
};

/// Polls `done` every 10 ms until it holds or `timeout` passes; returns how long it took.
[[nodiscard]] std::optional<std::chrono::milliseconds> wait_until(
    const std::function<bool()>& done, std::chrono::milliseconds timeout);

}  // namespace baton::testing
