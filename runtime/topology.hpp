#pragma once

// The cluster topology (cluster.toml): what operators write to describe a fleet, loaded
// and checked once. Every error names the file, line and column and what was expected;
// unknown keys are errors, so a typo never silently falls back to a default.

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.hpp"
#include "schemas/types.hpp"

namespace baton::runtime {

/// One node process: the hardware it stands for (`kind`), the engine that actually runs
/// (`device`: "cpu" or "emulated:PROFILE") and the actors it hosts (`roles`).
struct node_spec {
  std::string name;
  wire::node_kind kind = wire::node_kind::cpu;
  std::string device;
  std::vector<wire::role> roles;
  std::string fabric_address;   ///< "host:port" for tcp/verbs/efa, a name for shm
  std::string admin_address;    ///< "host:port" of the health and metrics port
  std::string native_address;   ///< "host:port" of the router's client port; empty: none
  std::string http_address;     ///< "host:port" of the router's HTTP API; empty: none
  std::uint32_t kv_blocks = 0;  ///< KV pool size in blocks (decode and kv roles)
  std::uint32_t max_batch = 0;  ///< sequences decoded together (decode role)
  std::uint32_t line = 0;       ///< where the [[node]] table starts, for messages

  [[nodiscard]] bool has_role(wire::role r) const;
  [[nodiscard]] bool emulated() const { return device.starts_with("emulated:"); }
};

/// `[model]` checkpoint and tokenizer: a bare file name ("stories260K.bin") is looked up
/// in the model search path, the first folder holding it wins; a path with a folder is
/// relative to the topology file's folder.
struct model_spec {
  std::filesystem::path checkpoint;
  std::filesystem::path tokenizer;
  /// Where names were looked up (empty when both are paths).
  std::vector<std::filesystem::path> searched;
  bool checkpoint_named = false;  ///< given as a name, looked up in `searched`
  bool tokenizer_named = false;

  /// Empty when both files exist; else which is missing and where it was looked for.
  [[nodiscard]] std::string missing() const;
};

/// Where model files named in a topology are looked up, in order: each folder of the
/// BATON_MODEL_PATH environment variable (':'-separated), then ./models and
/// ../shared/models from the current folder, then the same two beside `topology_dir`.
[[nodiscard]] std::vector<std::filesystem::path> model_search_path(
    const std::filesystem::path& topology_dir);

/// A model file as `[model]` names it: a bare name ("tok512.bin") is the first match in
/// model_search_path(base) (or, found nowhere, that name in the first folder); a path with
/// a folder is relative to `base`.
[[nodiscard]] std::filesystem::path model_file(const std::string& value,
                                               const std::filesystem::path& base);

/// `[model]`'s two files resolved as model_file does, with what missing() reports: the
/// one resolution nodes, `baton check` and `baton generate --model NAME` share.
[[nodiscard]] model_spec resolve_model(const std::string& checkpoint, const std::string& tokenizer,
                                       const std::filesystem::path& base);

/// For a model file not found by name: BATON_MODEL_PATH as this process sees it, and that
/// it must be set where each node runs (names are looked up on every host).
[[nodiscard]] std::string model_path_hint();

/// How routers place requests (actors/router_state.hpp).
struct router_spec {
  /// Prompts of at most this many tokens are prefilled on the decode node; 0: never.
  std::uint32_t prefill_on_decode_max_tokens = 0;
  /// When no prefill node is alive: "wait" (in the wait queue, for one to come back) or
  /// "prefill-on-decode".
  std::string when_no_prefill = "wait";
  std::uint32_t max_attempts = 3;  ///< placements per request, retries included
  /// Requests waiting for capacity (no live worker for a role, no KV room) at most; one more
  /// is answered overloaded (429).
  std::uint32_t max_waiting = 256;
  /// How long a request waits for capacity before failing unavailable (503).
  std::uint32_t max_wait_ms = 10'000;
  /// The routers' API keys ([router] api_keys, relative to the topology file; empty: none
  /// asked): frontend/api_keys.hpp.
  std::filesystem::path api_keys;
  /// TLS for the routers' HTTP API ([router] tls_certificate and tls_key, PEM files
  /// relative to the topology file; both or neither): HTTPS only.
  std::filesystem::path tls_certificate;
  std::filesystem::path tls_key;
};

/// Nodes whose device is "emulated:PROFILE" (engine/emulated_engine.hpp).
struct emulated_spec {
  std::string shape;        ///< a named shape of profiles.toml; empty: the checkpoint's own
  std::uint32_t scale = 1;  ///< stored KV = modelled KV bytes / scale
  double time_scale = 1.0;  ///< modelled time x this; 0: zero compute time
};

struct limits_spec {
  std::uint32_t max_queued_requests = 256;
  std::uint32_t kv_block_tokens = 16;
  std::uint32_t max_prompt_tokens = 4096;
  std::uint32_t max_new_tokens = 4096;
};

/// Failure detection (runtime/membership.hpp, docs/operations.md "Failure detection"): a
/// probe unanswered for suspect_after_ms makes its target suspect, and dead at
/// dead_after_ms unless it refutes (up to four times later while no other member confirms
/// the suspicion; every period and timeout stretches while this node itself runs late). A
/// killed process, whose connections are refused, is declared dead within about 100 ms.
struct timeouts_spec {
  std::uint32_t request_ms = 30'000;
  std::uint32_t probe_interval_ms = 100;
  std::uint32_t suspect_after_ms = 250;
  std::uint32_t dead_after_ms = 750;
  /// A decode node keeps a dead router's sequences this long for a router that claims them.
  std::uint32_t orphan_grace_ms = 5'000;
};

struct topology {
  std::filesystem::path file;
  std::string cluster_name;
  std::string provider = "tcp";    ///< libfabric provider: tcp, shm, verbs, efa
  std::vector<std::string> seeds;  ///< nodes a joining node may contact
  /// The cluster secret's file ([cluster] secret, relative to the topology file; empty:
  /// none): every node that joins proves it holds it (runtime/cluster_secret.hpp).
  std::filesystem::path secret;
  /// Without a secret, nodes bind only loopback addresses unless this is set.
  bool insecure = false;
  model_spec model;
  limits_spec limits;
  timeouts_spec timeouts;
  router_spec router;
  emulated_spec emulated;
  std::vector<node_spec> nodes;

  /// True when the prefill and decode nodes run emulated devices (all or none do).
  [[nodiscard]] bool emulated_workers() const;

  /// What is valid but probably not meant: a role no node has yet, a router no client can
  /// reach, the kv role (accepted, starts nothing yet).
  [[nodiscard]] std::vector<std::string> warnings() const;

  /// The node called `name`, or nullptr.
  [[nodiscard]] const node_spec* find(std::string_view name) const;
  [[nodiscard]] node_spec* find(std::string_view name);
};

/// Parses topology text; `file` names it in errors and anchors relative paths.
[[nodiscard]] expected<topology> parse_topology(std::string_view text,
                                                const std::filesystem::path& file);

/// Reads and parses a topology file.
[[nodiscard]] expected<topology> load_topology(const std::filesystem::path& file);

/// Whether `node` may bind its addresses: with a secret, or insecure, any; otherwise only
/// loopback ones. The error names the address and what to do.
[[nodiscard]] expected<void> check_exposure(const topology& t, const node_spec& node);

/// The kind's name as written in the topology ("wafer-scale").
[[nodiscard]] std::string_view to_string(wire::node_kind kind) noexcept;
/// The role's name as written in the topology ("prefill").
[[nodiscard]] std::string_view to_string(wire::role role) noexcept;

}  // namespace baton::runtime
