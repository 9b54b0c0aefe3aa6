// A network partition between real hosts: three `baton node` processes, each in a network
// namespace of its own (netns_lab), one host's link taken down for longer than the
// detection timeouts and brought back. The two sides must declare each other dead, heal
// on their own and settle; the time to heal and the churn (suspicions, new incarnations)
// are printed. Skips where `ip netns` is not permitted.
#include <chrono>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <thread>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "cluster_harness.hpp"
#include "launcher/netns_lab.hpp"

namespace baton::testing {
namespace {

using launcher::netns_lab;

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

const std::vector<std::pair<std::string, std::string>> hosts = {
    {"n1", "router"}, {"n2", "prefill"}, {"n3", "decode"}};

std::string topology_text() {
  std::string text = fmt::format(
      "[cluster]\nname = \"partition\"\nprovider = \"tcp\"\nseeds = [\"n1\"]\n"
      "secret = \"cluster.secret\"\n\n"
      "[model]\ncheckpoint = \"{}\"\ntokenizer = \"{}\"\n\n",
      shared("stories260K.bin"), shared("tok512.bin"));
  for (std::size_t i = 0; i < hosts.size(); ++i) {
    text += fmt::format(
        "[[node]]\nname = \"{}\"\nkind = \"cpu\"\ndevice = \"cpu\"\nroles = [\"{}\"]\n"
        "fabric = \"10.77.0.{}:7100\"\nadmin = \"10.77.0.{}:9100\"\n\n",
        hosts[i].first, hosts[i].second, i + 1, i + 1);
  }
  return text;
}

/// Whether `log` says, after its first `from` bytes, that `node` is `state`.
bool says(const std::string& log, std::size_t from, const std::string& node,
          const std::string& state) {
  return log.find(fmt::format("member {} is {} ", node, state), from) != std::string::npos;
}

/// The incarnations `log` names for `node` after byte `from`.
std::set<std::string> incarnations(const std::string& log, std::size_t from,
                                   const std::string& node) {
  std::set<std::string> out;
  const std::regex line("member " + node + " is [a-z]+ \\(incarnation ([0-9]+)\\)");
  const auto tail = log.substr(from);
  for (std::sregex_iterator it(tail.begin(), tail.end(), line), end; it != end; ++it) {
    out.insert((*it)[1].str());
  }
  return out;
}

TEST(Partition, AHostCutOffLongerThanTheTimeoutsHealsWithinSecondsOfItsLinkReturning) {
  auto made = netns_lab::create();
  if (!made) GTEST_SKIP() << "needs `ip netns` (root and iproute2): " << made.error().message;
  auto& lab = **made;
  const auto dir =
      std::filesystem::temp_directory_path() / fmt::format("baton-partition-{}", ::getpid());
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "cluster.toml") << topology_text();
  // Hosts on a network: the nodes prove the cluster secret when they join (and rejoin).
  ASSERT_EQ(
      run(fmt::format("{} secret init {}", BATON_BINARY, quote((dir / "cluster.secret").string())))
          .status,
      0);
  std::map<std::string, std::unique_ptr<child_process>> nodes;
  for (std::size_t i = 0; i < hosts.size(); ++i) {
    const auto& name = hosts[i].first;
    ASSERT_TRUE(lab.add_host(name, {fmt::format("10.77.0.{}", i + 1)}));
    nodes[name] = std::make_unique<child_process>(
        lab.shell(name, fmt::format("exec {} node --config {} --name {}", BATON_BINARY,
                                    quote((dir / "cluster.toml").string()), name)),
        dir / (name + ".log"));
  }
  const auto log = [&](const std::string& name) { return nodes.at(name)->log(); };
  const auto everyone_sees_everyone = [&](std::size_t from) {
    for (const auto& [a, role_a] : hosts) {
      for (const auto& [b, role_b] : hosts) {
        if (a == b) continue;
        const auto l = log(a);
        // The last word about b after `from` is "alive".
        const auto alive = l.rfind(fmt::format("member {} is alive ", b));
        if (alive == std::string::npos || alive < from) return false;
        for (const char* other : {"suspect", "dead"}) {
          const auto at = l.rfind(fmt::format("member {} is {} ", b, other));
          if (at != std::string::npos && at > alive) return false;
        }
      }
    }
    return true;
  };
  ASSERT_TRUE(wait_until([&] { return everyone_sees_everyone(0); }, 30s))
      << log("n1") << log("n2") << log("n3");

  // n3 is cut off for longer than dead_after_ms.
  const char* env = std::getenv("BATON_PARTITION_SECONDS");
  const auto cut = std::chrono::seconds(env ? std::atoi(env) : 8);
  std::map<std::string, std::size_t> start;
  for (const auto& [name, role] : hosts) start[name] = log(name).size();
  ASSERT_TRUE(lab.set_link("n3", false));
  std::this_thread::sleep_for(cut);
  for (const auto& side : {"n1", "n2"}) EXPECT_TRUE(says(log(side), 0, "n3", "dead")) << log(side);
  EXPECT_TRUE(says(log("n3"), 0, "n1", "dead")) << log("n3");
  std::map<std::string, std::size_t> mark;
  for (const auto& [name, role] : hosts) mark[name] = log(name).size();

  const auto back = clock_type::now();
  ASSERT_TRUE(lab.set_link("n3", true));
  const auto healed = wait_until([&] { return everyone_sees_everyone(0); }, 30s);
  ASSERT_TRUE(healed) << "the partition did not heal:\n" << log("n1") << log("n2") << log("n3");
  const auto heal_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(clock_type::now() - back);
  // Then quiet: two seconds in a row without a suspicion, within ten of the link's return.
  const auto suspicions = [&] {
    std::size_t n = 0;
    for (const auto& [name, role] : hosts) {
      const auto l = log(name);
      for (auto at = l.find(" is suspect ", mark[name]); at != std::string::npos;
           at = l.find(" is suspect ", at + 1)) {
        ++n;
      }
    }
    return n;
  };
  std::size_t seen = suspicions();
  auto quiet_since = clock_type::now();
  while (clock_type::now() - quiet_since < 2s) {
    ASSERT_LT(clock_type::now() - back, 10s) << "still flapping 10 s after the link returned\n"
                                             << log("n1") << log("n2") << log("n3");
    std::this_thread::sleep_for(50ms);
    if (const auto now_seen = suspicions(); now_seen != seen) {
      seen = now_seen;
      quiet_since = clock_type::now();
    }
  }
  EXPECT_TRUE(everyone_sees_everyone(0)) << log("n1") << log("n2") << log("n3");
  std::size_t flaps = 0;
  // New incarnations since the cut: each member declared dead refutes once, no more.
  std::size_t bumps = 0;
  for (const auto& [b, rb] : hosts) {
    std::set<std::string> before;
    std::set<std::string> after;
    for (const auto& [a, ra] : hosts) {
      const auto l = log(a);
      for (const auto& i : incarnations(l.substr(0, start[a]), 0, b)) before.insert(i);
      for (const auto& i : incarnations(l, start[a], b)) after.insert(i);
      if (a != b) flaps += says(l, mark[a], b, "suspect") ? 1 : 0;
    }
    std::size_t fresh = 0;
    for (const auto& i : after) fresh += before.contains(i) ? 0 : 1;
    bumps = std::max(bumps, fresh);
  }
  fmt::print(
      "figures: a {} s partition healed {} ms after the link came back; {} suspicions while "
      "healing, at most {} new incarnation per member\n",
      cut.count(), heal_ms.count(), flaps, bumps);
  // Without churn: a member buried by the partition refutes that once, and nobody is
  // suspected on the way back.
  EXPECT_LE(bumps, 1u) << log("n1") << log("n2") << log("n3");
  EXPECT_EQ(flaps, 0u) << log("n1") << log("n2") << log("n3");
  nodes.clear();
  std::error_code ignored;
  if (std::getenv("BATON_KEEP") == nullptr) std::filesystem::remove_all(dir, ignored);
}

}  // namespace
}  // namespace baton::testing
