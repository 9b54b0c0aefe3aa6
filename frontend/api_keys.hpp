#pragma once

// API keys for the router's client ports (docs/security.md, docs/http-api.md): a TOML file
// of keys, each with a name and its own limits, reloaded when it changes, so keys are
// added, revoked and re-limited without a restart.
//
//   [[key]]
//   name = "alice"              # in logs and metrics, never the key itself
//   key = "bk-..."              # at least 16 characters (baton secret api-key makes one)
//   max_streams = 4             # generations open at once; 0 or absent: no limit
//   tokens_per_minute = 20000   # prompt + generated tokens; 0 or absent: no limit

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.hpp"

namespace baton::frontend {

struct api_key {
  std::string name;
  std::uint32_t max_streams = 0;        ///< 0: no limit
  std::uint64_t tokens_per_minute = 0;  ///< 0: no limit
};

/// The keys of one file. Keys are held as SHA-256 digests: a lookup never compares the
/// presented key with a stored one byte by byte.
class api_keys {
 public:
  /// Reads `file` (mode 0600 or stricter, as the cluster secret): a TOML document of
  /// [[key]] tables. An error names the file, the line and the field.
  [[nodiscard]] static expected<api_keys> load(const std::filesystem::path& file);
  /// The same from `text` (`file` names it in errors).
  [[nodiscard]] static expected<api_keys> parse(std::string_view text, const std::string& file);

  /// The key `presented` is, or null.
  [[nodiscard]] const api_key* find(std::string_view presented) const;
  /// The key named `name`, or null.
  [[nodiscard]] const api_key* named(std::string_view name) const;
  [[nodiscard]] std::size_t size() const { return keys_.size(); }

 private:
  std::vector<api_key> keys_;
  std::map<std::string, std::size_t> by_digest_;
};

/// What the front door decides for a request presenting a key.
struct key_verdict {
  enum class kind { admitted, unauthorized, limited } what = kind::unauthorized;
  std::string name;                 ///< the key's name (admitted or limited)
  std::string message;              ///< why not, for the client
  std::uint32_t retry_after_s = 0;  ///< limited: when to try again
};

/// The keys of a server and what each has open and spent. One thread only (the server's
/// io thread). The file is looked at again at most once a second; a changed file that
/// does not load keeps the keys before it (the error is logged and counted).
class api_gate {
 public:
  using clock = std::chrono::steady_clock;

  api_gate(std::filesystem::path file, api_keys keys);

  /// Admits one generation for the key in `authorization` (the header's value,
  /// "Bearer KEY"). `trusted_channel`: the connection is TLS or from loopback; a key is
  /// never accepted over anything else, since it would cross the network in the clear.
  [[nodiscard]] key_verdict admit(std::string_view authorization, bool trusted_channel,
                                  clock::time_point now);
  /// The generation admitted for `name` ended having used `tokens` (prompt and generated).
  void finished(const std::string& name, std::uint64_t tokens, clock::time_point now);
  /// Whether the key in `authorization` is valid (for requests that are not generations).
  [[nodiscard]] key_verdict check(std::string_view authorization, bool trusted_channel,
                                  clock::time_point now);

  [[nodiscard]] std::uint64_t reloads() const { return reloads_; }
  [[nodiscard]] std::uint64_t reload_failures() const { return reload_failures_; }

 private:
  struct usage {
    std::uint32_t open = 0;
    double budget = 0;  ///< tokens that may still be spent; refills at tokens_per_minute
    clock::time_point refilled{};
    bool started = false;
  };
  void maybe_reload(clock::time_point now);
  void refill(const api_key& key, usage& u, clock::time_point now) const;

  std::filesystem::path file_;
  api_keys keys_;
  std::map<std::string, usage> usage_;  // by key name
  clock::time_point checked_{};
  std::filesystem::file_time_type stamp_{};
  std::uintmax_t size_ = 0;
  std::uint64_t reloads_ = 0;
  std::uint64_t reload_failures_ = 0;
};

}  // namespace baton::frontend
