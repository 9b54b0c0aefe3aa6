// `baton secret init FILE`: makes a cluster secret (32 random bytes, in hex, mode 0600;
// never over an existing file) for [cluster] secret = "FILE" (docs/security.md).
// `baton secret api-key NAME`: prints a fresh API key as a [[key]] table to add to the
// file named by [router] api_keys (frontend/api_keys.hpp).
#include <string>

#include <fmt/format.h>

#include "runtime/cluster_secret.hpp"
#include "tools/commands.hpp"

namespace baton::tools {

void add_secret_command(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("secret", "Cluster secrets");
  cmd->require_subcommand(1);
  auto* init = cmd->add_subcommand(
      "init", "Write a fresh cluster secret to FILE (mode 0600) for [cluster] secret");
  static std::string path;
  init->add_option("file", path, "Where to write it (must not exist)")->required();
  init->callback([&exit_code] {
    if (auto ok = runtime::cluster_secret::create(path); !ok) {
      fmt::print(stderr, "baton secret init: {}\n", ok.error().message);
      exit_code = 1;
      return;
    }
    fmt::print(
        "wrote a cluster secret to {} (mode 0600); name it in the topology:\n"
        "  [cluster]\n  secret = \"{}\"\ncopy it to every node's host, readable by "
        "the user baton runs as only\n",
        path, path);
  });
  auto* key = cmd->add_subcommand(
      "api-key", "Print a fresh API key as a [[key]] table for the [router] api_keys file");
  static std::string name;
  key->add_option("name", name, "The key's name, as logs and metrics show it")->required();
  key->callback([] {
    const auto bits = runtime::random_nonce();
    fmt::print(
        "[[key]]\nname = \"{}\"\nkey = \"bk-{:016x}{:016x}\"\n# max_streams = 4\n"
        "# tokens_per_minute = 20000\n",
        name, bits[0], bits[1]);
  });
}

}  // namespace baton::tools
