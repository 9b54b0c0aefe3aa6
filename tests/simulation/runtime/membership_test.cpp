// Membership state machines wired through the loopback transport with a simulated clock:
// joins, failure detection, refutation, leave, refusal, dissemination at scale, and the
// same under the network's faults (drop, duplicate, delay, reorder, partition, kill).
#include "runtime/membership.hpp"

#include <cstdio>
#include <map>
#include <memory>
#include <set>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "schemas/codec.hpp"
#include "tests/support/test_seeds.hpp"
#include "transport/endpoint.hpp"
#include "transport/loopback/network.hpp"

namespace baton::runtime {
namespace {

using namespace std::chrono_literals;
using wire::member_state;

// fmt, not operator+: g++ 12 at -O3 warns falsely (-Wrestrict) on string concatenation.
std::string node_name(int i) {
  return fmt::format("n{}", i);
}

wire::join identity(const std::string& name, std::uint64_t incarnation = 1) {
  wire::join j;
  j.member = {name,
              incarnation,
              member_state::alive,
              wire::node_kind::cpu,
              "cpu",
              {wire::role::decode},
              fmt::format("fabric-{}", name),
              ""};
  j.member.started = incarnation;
  j.wire_version = wire::wire_version;
  j.model_hash = 0xabc;
  j.layout = {16, 5, 4, 8, 4};
  j.numerics_fingerprint = "baton-cpu/1 avx2";
  return j;
}

/// Membership state machines talking through loopback endpoints (transport/loopback) on
/// a simulated clock: every message is encoded as a frame, sent, delayed, possibly dropped,
/// duplicated or reordered by the network, received and decoded, as between real nodes.
/// The network, every node's state and the fault choices are seeded from `seed`, and
/// nothing depends on wall time or threads, so a run replays exactly from its seed
/// (printed on construction).
class sim_cluster {
 public:
  explicit sim_cluster(std::uint64_t seed, transport::loopback::fault_plan faults = {},
                       membership_config config = {})
      : seed_(seed), config_(config), net_(std::make_shared<transport::loopback::network>(seed)) {
    std::printf("membership over loopback, seed %llu\n", static_cast<unsigned long long>(seed));
    net_->use_manual_clock(time_point{});
    // Messages take 1 ms unless the plan says otherwise.
    if (faults.max_delay == 0us) faults.min_delay = faults.max_delay = 1000us;
    net_->set_faults(faults);
  }

  membership_state& add(const wire::join& self, time_point now,
                        std::shared_ptr<const cluster_secret> secret = nullptr) {
    const auto& name = self.member.node;
    auto ep = transport::make_endpoint({"loopback", {self.member.fabric_address}}, net_);
    EXPECT_TRUE(ep.has_value()) << (ep ? "" : ep.error().message);
    auto& n = nodes_[name];
    n.endpoint = std::move(*ep);
    n.state = std::make_unique<membership_state>(self, std::vector<seed_node>{{"n0", "fabric-n0"}},
                                                 config_, seed_ + nodes_.size());
    if (secret) n.state->require_secret(std::move(secret));
    deliver(name, n.state->start(now), now);
    return *n.state;
  }
  membership_state& at(const std::string& name) { return *nodes_.at(name).state; }
  /// The node's endpoint dies (the network's kill) and its state machine stops.
  void kill(const std::string& name) {
    net_->kill({address_of(name)});
    nodes_.at(name).dead = true;
  }
  /// `name`'s process is killed and a new one started under the same name, at once (before
  /// anyone could notice the death), at a fabric address of its own.
  membership_state& restart(const std::string& name, std::uint64_t incarnation, time_point now) {
    kill(name);
    nodes_.erase(name);
    auto again = identity(name, incarnation);
    again.member.fabric_address = fmt::format("fabric-{}-{}", name, incarnation);
    return add(again, now);
  }
  /// Partitions `name` from every other node, or heals that partition.
  void cut(const std::string& name, bool cut) {
    for (const auto& [other, n] : nodes_) {
      if (other == name) continue;
      if (cut) {
        net_->partition({address_of(name)}, {address_of(other)});
      } else {
        net_->heal({address_of(name)}, {address_of(other)});
      }
    }
  }
  void set_faults(const transport::loopback::fault_plan& faults) { net_->set_faults(faults); }
  /// `name` runs nothing (no message handled, no tick) until `until`, as a process starved
  /// of CPU or paused; what reaches it meanwhile waits in its queue.
  void stall(const std::string& name, time_point until) { nodes_.at(name).stalled_until = until; }
  /// `observer`'s transport reports that it cannot reach `node` (a refused connection), or
  /// its peer_watch that nothing listens at `node`'s admin port.
  void unreachable(const std::string& observer, const std::string& node, time_point now,
                   membership_state::unreachable_evidence why =
                       membership_state::unreachable_evidence::connection_failed) {
    deliver(observer, at(observer).on_unreachable(node, now, why), now);
  }
  /// `name` announces that it drains.
  void drain(const std::string& name, time_point now) { deliver(name, at(name).drain(now), now); }
  /// `observer` hears that the network reaches `node` again (peer_watch's report).
  void reachable(const std::string& observer, const std::string& node, time_point now) {
    deliver(observer, at(observer).on_reachable(node, now), now);
  }
  /// `name` announces that it leaves; returns how many nodes it told directly.
  std::size_t leave(const std::string& name, time_point now) {
    auto out = at(name).leave(now);
    const auto told = out.sends.size();
    deliver(name, std::move(out), now);
    return told;
  }

  /// Runs until `until`, in 1 ms steps: the network delivers what is due, every live
  /// node handles its messages, then ticks if its deadline passed.
  void run(time_point& now, time_point until) {
    for (; now < until; now += 1ms) {
      net_->advance_to(now);
      for (auto& [name, n] : nodes_) {
        if (n.dead || n.stalled_until > now) continue;
        receive(name, n, now);
      }
      for (auto& [name, n] : nodes_) {
        if (n.dead || n.stalled_until > now || n.state->next_deadline() > now) continue;
        deliver(name, n.state->on_tick(now), now);
      }
    }
  }
  /// The state `observer` holds for `node`, or nullopt if it does not know it.
  std::optional<member_state> view(const std::string& observer, const std::string& node) {
    const auto* m = at(observer).find(node);
    return m ? std::optional(m->state) : std::nullopt;
  }
  std::map<std::string, int> sent;  // messages sent per node
  /// Sends asked to go over a new connection: "<ms> <from> -> <to>".
  std::vector<std::string> fresh_connections;
  std::map<std::string, std::string> refusals;
  std::vector<std::string> refused_joins;  ///< what seeds logged
  /// Every change any node saw, in order: "<ms> <observer>: <node> <state> <incarnation>".
  std::vector<std::string> trace;

 private:
  struct sim_node {
    std::unique_ptr<transport::endpoint> endpoint;
    std::unique_ptr<membership_state> state;
    std::map<std::string, transport::peer_id> peers;  // by fabric address
    bool dead = false;
    time_point stalled_until{};
  };

  static std::string address_of(const std::string& name) { return fmt::format("fabric-{}", name); }

  void receive(const std::string& name, sim_node& n, time_point now) {
    std::vector<transport::event> batch(64);
    while (true) {
      const auto count = n.endpoint->poll(batch);
      if (count == 0) return;
      for (std::size_t i = 0; i < count; ++i) {
        auto& ev = batch[i];
        if (ev.kind != transport::event_kind::message) continue;
        auto f = decoder_.decode(ev.payload);
        ASSERT_TRUE(f.has_value()) << f.error().message;
        ASSERT_EQ(f->target.node, name);
        deliver(name, n.state->on_message(f->source.node, f->sender_incarnation, f->body, now),
                now);
      }
    }
  }

  void deliver(const std::string& from, membership_output out, time_point now) {
    if (out.refused) refusals[from] = *out.refused;
    for (auto& r : out.refused_joins) refused_joins.push_back(std::move(r));
    for (const auto& m : out.changes) {
      trace.push_back(fmt::format("{} {}: {} {} {}", (now - time_point{}) / 1ms, from, m.node,
                                  to_string(m.state), m.incarnation));
    }
    auto& n = nodes_.at(from);
    for (auto& s : out.sends) {
      ++sent[from];
      if (s.fresh_connection) {
        fresh_connections.push_back(
            fmt::format("{} {} -> {}", (now - time_point{}) / 1ms, from, s.node));
      }
      auto peer = n.peers.find(s.fabric_address);
      if (peer == n.peers.end()) {
        // Unreachable now (partitioned or dead): the message is lost, as on a fabric.
        auto id = n.endpoint->add_peer({s.fabric_address}, now + 1s);
        if (!id) continue;
        peer = n.peers.emplace(s.fabric_address, *id).first;
      }
      wire::frame f;
      f.source = {from, "membership"};
      f.target = {s.node, "membership"};
      f.sender_incarnation = at(from).self().incarnation;
      f.body = std::move(s.body);
      auto bytes = wire::encode(f);
      ASSERT_TRUE(bytes.has_value()) << bytes.error().message;
      (void)n.endpoint->send(peer->second, bytes->bytes(), now + 1s);
    }
  }

  std::uint64_t seed_;
  membership_config config_;
  std::shared_ptr<transport::loopback::network> net_;
  std::map<std::string, sim_node> nodes_;
  wire::decoder decoder_;
};

TEST(Membership, NodesJoinThroughTheSeed) {
  sim_cluster sim(baton::testing::test_seeds(11, 1).front());
  time_point now{};
  for (int i = 0; i < 3; ++i) sim.add(identity(node_name(i)), now);
  sim.run(now, now + 1s);
  for (int i = 0; i < 3; ++i) {
    auto& node = sim.at(node_name(i));
    EXPECT_TRUE(node.joined());
    ASSERT_EQ(node.members().size(), 3u) << "n" << i;
    for (const auto& m : node.members()) EXPECT_EQ(m.state, member_state::alive) << m.node;
  }
}

/// A node that dies silently (no connection refused: its host is gone) is found by probes:
/// suspect after suspect_after (250 ms), dead once the other member confirms (750 ms).
TEST(Membership, ASilentlyKilledNodeIsDeclaredDeadWithin1200ms) {
  for (const auto seed : baton::testing::test_seeds(1, 20)) {
    SCOPED_TRACE(baton::testing::replay_hint(seed));
    sim_cluster sim(seed);
    time_point now{};
    for (int i = 0; i < 3; ++i) sim.add(identity(node_name(i)), now);
    sim.run(now, now + 1s);
    sim.kill("n2");
    const auto killed_at = now;
    while (sim.view("n0", "n2") != member_state::dead ||
           sim.view("n1", "n2") != member_state::dead) {
      ASSERT_LT(now - killed_at, 1200ms) << "seed " << seed;
      sim.run(now, now + 1ms);
    }
  }
}

TEST(Membership, ANewNodeJoinsARunningClusterAndEveryoneSeesIt) {
  sim_cluster sim(baton::testing::test_seeds(5, 1).front());
  time_point now{};
  for (int i = 0; i < 4; ++i) sim.add(identity(node_name(i)), now);
  sim.run(now, now + 1s);
  sim.add(identity("n9"), now);
  sim.run(now, now + 1s);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(sim.view(node_name(i), "n9"), member_state::alive) << i;
  }
  EXPECT_EQ(sim.at("n9").members().size(), 5u);
}

TEST(Membership, ALeavingNodeIsSeenAsLeft) {
  sim_cluster sim(baton::testing::test_seeds(6, 1).front());
  time_point now{};
  for (int i = 0; i < 4; ++i) sim.add(identity(node_name(i)), now);
  sim.run(now, now + 1s);
  ASSERT_GT(sim.leave("n3", now), 0u);
  sim.run(now, now + 500ms);
  sim.kill("n3");
  sim.run(now, now + 1s);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(sim.view(node_name(i), "n3"), member_state::left) << i;
  }
}

TEST(Membership, AMismatchedNodeIsRefusedWithAReason) {
  sim_cluster sim(baton::testing::test_seeds(7, 1).front());
  time_point now{};
  sim.add(identity("n0"), now);
  auto odd = identity("n1");
  odd.numerics_fingerprint = "baton-cpu/1 scalar";
  sim.add(odd, now);
  auto old = identity("n2");
  old.wire_version = 0;
  sim.add(old, now);
  sim.run(now, now + 1s);
  EXPECT_FALSE(sim.at("n1").joined());
  EXPECT_NE(sim.refusals["n1"].find("numerics fingerprint 'baton-cpu/1 scalar' differs"),
            std::string::npos)
      << sim.refusals["n1"];
  EXPECT_NE(sim.refusals["n2"].find("wire version 0 differs"), std::string::npos);
  EXPECT_EQ(sim.at("n0").members().size(), 1u) << "a refused node never half-joins";
}

TEST(Membership, ARetriedJoinIsAnsweredAgainButANameInUseIsRefused) {
  time_point now{};
  membership_state seed(identity("n0"), {{"n0", "fabric-n0"}}, membership_config{}, 1);
  (void)seed.start(now);
  auto accepted = [](const membership_output& out) {
    const auto* reply = std::get_if<wire::join_reply>(&out.sends.at(0).body);
    return reply != nullptr && reply->accepted;
  };
  const auto join = identity("n1");
  EXPECT_TRUE(accepted(seed.on_message("n1", 1, join, now)));
  // Its reply was lost (or the join duplicated): the same join is answered again.
  EXPECT_TRUE(accepted(seed.on_message("n1", 1, join, now + 1ms)));
  // Another process under the same name and incarnation is not.
  auto impostor = identity("n1");
  impostor.member.fabric_address = "fabric-elsewhere";
  EXPECT_FALSE(accepted(seed.on_message("n1", 1, impostor, now + 2ms)));
  EXPECT_TRUE(seed.on_message("n1", 0, identity("n1", 0), now + 3ms).sends.empty())
      << "an older incarnation is not even answered";
}

std::shared_ptr<const cluster_secret> secret_of(std::uint8_t fill) {
  std::array<std::uint8_t, 32> key{};
  key.fill(fill);
  return std::make_shared<const cluster_secret>(key);
}

TEST(MembershipAuth, NodesWithTheSecretJoinAndStrangersAreRefusedLoggedAndCounted) {
  for (const auto seed : baton::testing::test_seeds(21, 4)) {
    SCOPED_TRACE(baton::testing::replay_hint(seed));
    sim_cluster sim(seed);
    time_point now{};
    const auto secret = secret_of(7);
    sim.add(identity("n0"), now, secret);
    sim.add(identity("n1"), now, secret);
    sim.add(identity("n2"), now);                // no secret
    sim.add(identity("n3"), now, secret_of(8));  // another secret
    sim.run(now, now + 1s);
    EXPECT_TRUE(sim.at("n1").joined());
    EXPECT_EQ(sim.view("n0", "n1"), member_state::alive);
    EXPECT_EQ(sim.view("n1", "n0"), member_state::alive);
    EXPECT_FALSE(sim.at("n2").joined());
    EXPECT_NE(sim.refusals["n2"].find("it holds no cluster secret"), std::string::npos)
        << sim.refusals["n2"];
    EXPECT_FALSE(sim.at("n3").joined());
    EXPECT_NE(sim.refusals["n3"].find("it does not hold this cluster's secret"), std::string::npos)
        << sim.refusals["n3"];
    EXPECT_EQ(sim.at("n0").members().size(), 2u) << "strangers never half-join";
    // Each stranger is refused (again each time it retries), logged and counted.
    EXPECT_GE(sim.at("n0").auth_failures(), 2u);
    EXPECT_EQ(sim.at("n0").auth_failures(), sim.refused_joins.size());
    std::set<std::string> refused;
    for (const auto& line : sim.refused_joins) {
      EXPECT_NE(line.find("authentication failed"), std::string::npos) << line;
      refused.insert(line.substr(0, line.find(' ', 8)));
    }
    EXPECT_EQ(refused, (std::set<std::string>{"join of n2", "join of n3"}));
  }
}

TEST(MembershipAuth, ARecordedHandshakeReplayedLaterIsRefused) {
  time_point now{};
  const auto secret = secret_of(3);
  membership_state seed(identity("n0", 5), {{"n0", "fabric-n0"}}, membership_config{}, 1);
  seed.require_secret(secret);
  (void)seed.start(now);
  membership_state joiner(identity("n1"), {{"n0", "fabric-n0"}}, membership_config{}, 2);
  joiner.require_secret(secret);
  const auto body = [](const membership_output& out) { return out.sends.at(0).body; };

  const auto ask = std::get<wire::join>(body(joiner.start(now)));
  EXPECT_EQ(ask.auth.proof, proof{}) << "the first join asks for a challenge";
  const auto challenge = std::get<wire::join_reply>(body(seed.on_message("n1", 1, ask, now)));
  ASSERT_TRUE(challenge.challenge);
  EXPECT_EQ(challenge.auth.peer, ask.auth.nonce);
  const auto answer = std::get<wire::join>(body(joiner.on_message("n0", 5, challenge, now)));
  EXPECT_NE(answer.auth.proof, proof{});
  const auto accepted = std::get<wire::join_reply>(body(seed.on_message("n1", 1, answer, now)));
  ASSERT_TRUE(accepted.accepted) << accepted.reason;
  (void)joiner.on_message("n0", 5, accepted, now);
  EXPECT_TRUE(joiner.joined());
  EXPECT_EQ(seed.auth_failures(), 0u);

  // The recorded answer, replayed: its challenge was answered once already. Refused,
  // logged and counted, and not answered (an answer would go to n1 itself).
  const auto replayed = seed.on_message("n1", 1, answer, now + 1s);
  EXPECT_TRUE(replayed.sends.empty());
  EXPECT_EQ(seed.auth_failures(), 1u);
  ASSERT_EQ(replayed.refused_joins.size(), 1u);
  EXPECT_NE(replayed.refused_joins[0].find("replayed"), std::string::npos);
  // Nor does it answer a new challenge: that one has a fresh nonce.
  const auto again = std::get<wire::join_reply>(body(seed.on_message("n1", 1, ask, now + 2s)));
  ASSERT_TRUE(again.challenge);
  EXPECT_NE(again.auth.nonce, challenge.auth.nonce);
  EXPECT_TRUE(seed.on_message("n1", 1, answer, now + 2s).sends.empty());
  EXPECT_EQ(seed.auth_failures(), 2u);
}

TEST(MembershipAuth, AJoinerRefusesASeedThatDoesNotAskForTheSecret) {
  sim_cluster sim(baton::testing::test_seeds(23, 1).front());
  time_point now{};
  sim.add(identity("n0"), now);
  sim.add(identity("n1"), now, secret_of(1));
  sim.run(now, now + 1s);
  EXPECT_FALSE(sim.at("n1").joined());
  EXPECT_NE(sim.refusals["n1"].find("without asking for the cluster secret"), std::string::npos)
      << sim.refusals["n1"];
}

TEST(Membership, ASuspectedNodeRefutesAndStaysAMember) {
  sim_cluster sim(baton::testing::test_seeds(8, 1).front());
  time_point now{};
  for (int i = 0; i < 3; ++i) sim.add(identity(node_name(i)), now);
  sim.run(now, now + 1s);
  const auto before = sim.at("n2").self().incarnation;
  sim.cut("n2", true);
  sim.run(now, now + 400ms);  // past suspect_after, short of dead_after
  sim.cut("n2", false);
  sim.run(now, now + 2s);
  EXPECT_GT(sim.at("n2").self().incarnation, before);
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(sim.view(node_name(i), "n2"), member_state::alive) << i;
  }
}

TEST(Membership, FramesFromOldIncarnationsAreNotAccepted) {
  sim_cluster sim(baton::testing::test_seeds(9, 1).front());
  time_point now{};
  sim.add(identity("n0"), now);
  sim.add(identity("n1", 5), now);
  sim.run(now, now + 500ms);
  const auto& n0 = sim.at("n0");
  EXPECT_TRUE(n0.accepts("n1", 5));
  EXPECT_FALSE(n0.accepts("n1", 4));
  EXPECT_TRUE(n0.accepts("n1", 6));  // a restart
  sim.kill("n1");
  sim.run(now, now + 2s);
  EXPECT_FALSE(n0.accepts("n1", 5)) << "the dead incarnation stays dead";
}

TEST(Membership, ANodeRestartedBeforeItsDeathIsNoticedBuriesItsPredecessorEverywhere) {
  // What watched the old process (bridges, routers' attempts on it) must hear it is gone:
  // the new process knows nothing of its work.
  for (const auto seed : baton::testing::test_seeds(33, 4)) {
    SCOPED_TRACE(baton::testing::replay_hint(seed));
    sim_cluster sim(seed);
    time_point now{};
    for (int i = 0; i < 4; ++i) sim.add(identity(node_name(i), 5), now);
    sim.run(now, now + 2s);
    ASSERT_EQ(sim.view("n3", "n1"), member_state::alive);
    sim.trace.clear();
    sim.restart("n1", 9, now);
    sim.run(now, now + 3s);
    for (const auto& observer : {"n0", "n2", "n3"}) {
      const auto seen = [&](const std::string& what) {
        const auto at = std::find_if(sim.trace.begin(), sim.trace.end(), [&](const auto& line) {
          return line.ends_with(fmt::format(" {}: n1 {}", observer, what));
        });
        return at - sim.trace.begin();
      };
      const auto size = static_cast<std::ptrdiff_t>(sim.trace.size());
      EXPECT_LT(seen("dead 5"), size) << observer << " never buried the old process";
      EXPECT_LT(seen("alive 9"), size) << observer << " never saw the new one";
      EXPECT_LT(seen("dead 5"), seen("alive 9")) << observer << ": the death comes first";
      EXPECT_EQ(sim.view(observer, "n1"), member_state::alive);
    }
    // A refutation is not a restart: the same process, a higher incarnation, no death.
    sim.trace.clear();
    sim.cut("n2", true);
    sim.run(now, now + 400ms);  // suspected, short of dead
    sim.cut("n2", false);
    sim.run(now, now + 2s);
    for (const auto& line : sim.trace) EXPECT_EQ(line.find(" dead "), std::string::npos) << line;
  }
}

TEST(Membership, DisseminationScalesWithoutAllToAllTraffic) {
  const int n = 100;
  sim_cluster sim(baton::testing::test_seeds(10, 1).front());
  time_point now{};
  for (int i = 0; i < n; ++i) sim.add(identity(node_name(i)), now);
  sim.run(now, now + 8s);
  for (int i = 0; i < n; i += 9) {
    ASSERT_EQ(sim.at(node_name(i)).members().size(), static_cast<std::size_t>(n));
  }
  sim.sent.clear();
  sim.kill("n50");
  const auto killed_at = now;
  sim.run(now, now + 2s);
  for (int i = 0; i < n; ++i) {
    if (i == 50) continue;
    EXPECT_EQ(sim.view(node_name(i), "n50"), member_state::dead) << i;
  }
  // Each node sends about one probe and one ack per 100 ms period, however large the
  // cluster (plus suspicion traffic about n50): 2 s is 20 periods, so well under 150
  // messages, where all-to-all heartbeats would be 99 x 20.
  for (const auto& [name, count] : sim.sent) EXPECT_LT(count, 150) << name;
  (void)killed_at;
}

transport::loopback::fault_plan lossy() {
  return {.drop_probability = 0.05,
          .duplicate_probability = 0.05,
          .reorder_probability = 0.1,
          .min_delay = 500us,
          .max_delay = 3000us};
}

/// Five nodes join and then run for `run_for` under `faults`; returns the cluster.
std::unique_ptr<sim_cluster> five_nodes(std::uint64_t seed, transport::loopback::fault_plan faults,
                                        std::chrono::milliseconds run_for, time_point& now,
                                        membership_config config = {}) {
  auto sim = std::make_unique<sim_cluster>(seed, faults, config);
  for (int i = 0; i < 5; ++i) sim->add(identity(node_name(i)), now);
  sim->run(now, now + run_for);
  return sim;
}

TEST(MembershipFaults, DropsDuplicatesAndReorderingCauseNoFalseDeaths) {
  for (const auto seed : baton::testing::test_seeds(1, 10)) {
    SCOPED_TRACE(baton::testing::replay_hint(seed));
    time_point now{};
    auto sim = five_nodes(seed, lossy(), 20s, now);
    for (int i = 0; i < 5; ++i) {
      ASSERT_TRUE(sim->at(node_name(i)).joined()) << "seed " << seed << " n" << i;
      for (const auto& m : sim->at(node_name(i)).members()) {
        EXPECT_EQ(m.state, member_state::alive) << "seed " << seed << " n" << i << ": " << m.node;
      }
    }
    for (const auto& line : sim->trace) {
      EXPECT_EQ(line.find(" dead "), std::string::npos) << "seed " << seed << ": " << line;
    }
  }
}

/// The handshake on a network that drops, duplicates, delays and reorders: late and
/// repeated challenges, answers and acceptances refuse no node with the secret.
TEST(MembershipFaults, NodesWithTheSecretAllJoinOnALossyNetwork) {
  const auto secret = secret_of(9);
  for (const auto seed : baton::testing::test_seeds(31, 20)) {
    SCOPED_TRACE(baton::testing::replay_hint(seed));
    time_point now{};
    sim_cluster sim(seed, lossy());
    for (int i = 0; i < 5; ++i) sim.add(identity(node_name(i)), now, secret);
    sim.run(now, now + 5s);
    for (int i = 0; i < 5; ++i) {
      ASSERT_TRUE(sim.at(node_name(i)).joined()) << "n" << i << ": " << sim.refusals[node_name(i)];
      EXPECT_EQ(sim.at(node_name(i)).members().size(), 5u) << "n" << i;
    }
    EXPECT_TRUE(sim.refusals.empty());
  }
}

/// Five nodes: each probes the dead one within four periods; the suspicion shrinks as the
/// others confirm it.
TEST(MembershipFaults, ASilentlyKilledNodeIsStillDeclaredDeadWithin2500msOnALossyNetwork) {
  for (const auto seed : baton::testing::test_seeds(1, 20)) {
    SCOPED_TRACE(baton::testing::replay_hint(seed));
    time_point now{};
    auto sim = five_nodes(seed, lossy(), 1s, now);
    sim->kill("n4");
    const auto killed_at = now;
    for (int i = 0; i < 4; ++i) {
      while (sim->view(node_name(i), "n4") != member_state::dead) {
        ASSERT_LT(now - killed_at, 2500ms) << "seed " << seed << " n" << i;
        sim->run(now, now + 1ms);
      }
    }
  }
}

TEST(MembershipFaults, RunsReplayExactlyFromTheirSeed) {
  auto run = [](std::uint64_t seed) {
    time_point now{};
    auto sim = five_nodes(seed, lossy(), 2s, now);
    sim->kill("n2");
    sim->run(now, now + 1s);
    return std::make_pair(sim->trace, sim->sent);
  };
  const auto first = run(42);
  const auto second = run(42);
  EXPECT_EQ(first.first, second.first);
  EXPECT_EQ(first.second, second.second);
  EXPECT_NE(first.first, run(43).first) << "another seed, another run";
}

TEST(MembershipFaults, APartitionShorterThanTheTimeoutHealsWithoutDeaths) {
  time_point now{};
  auto sim = five_nodes(baton::testing::test_seeds(21, 1).front(), {}, 1s, now);
  const auto before = sim->at("n4").self().incarnation;
  // n3 and n4 are cut off from everyone for less than the dead timeout.
  sim->cut("n3", true);
  sim->cut("n4", true);
  sim->run(now, now + 400ms);
  sim->cut("n3", false);
  sim->cut("n4", false);
  sim->run(now, now + 2s);
  for (const auto& line : sim->trace) {
    EXPECT_EQ(line.find(" dead "), std::string::npos) << line;
  }
  for (int i = 0; i < 5; ++i) {
    for (const auto& m : sim->at(node_name(i)).members()) {
      EXPECT_EQ(m.state, member_state::alive) << node_name(i) << ": " << m.node;
    }
  }
  EXPECT_GT(sim->at("n4").self().incarnation, before) << "n4 was suspected and refuted";
}

TEST(MembershipFaults, APartitionLongerThanTheDeadTimeoutHealsWhenItEnds) {
  for (const auto seed : baton::testing::test_seeds(23, 8)) {
    SCOPED_TRACE(baton::testing::replay_hint(seed));
    time_point now{};
    auto sim = five_nodes(seed, {}, 1s, now);
    std::map<std::string, std::uint64_t> before;
    for (int i = 0; i < 5; ++i) before[node_name(i)] = sim->at(node_name(i)).self().incarnation;
    sim->cut("n4", true);
    sim->run(now, now + 15s);
    // Periodic reconnect probes keep their connections: only the network's return opens new
    // ones (on_reachable, below).
    EXPECT_TRUE(sim->fresh_connections.empty());
    // Both sides buried the other: neither accepts the other's frames any more.
    for (int i = 0; i < 4; ++i) {
      ASSERT_EQ(sim->view(node_name(i), "n4"), member_state::dead) << i;
      ASSERT_EQ(sim->view("n4", node_name(i)), member_state::dead) << i;
    }
    sim->cut("n4", false);
    const auto healed_at = now;
    // Reconnect probes (every 500 ms to one dead member) tell each side it was buried.
    const auto all_alive = [&] {
      for (int i = 0; i < 5; ++i) {
        for (const auto& m : sim->at(node_name(i)).members()) {
          if (m.state != member_state::alive) return false;
        }
      }
      return true;
    };
    while (!all_alive()) {
      ASSERT_LT(now - healed_at, 2s) << "not healed 2 s after the partition ended";
      sim->run(now, now + 1ms);
    }
    sim->run(now, now + 2s);
    EXPECT_TRUE(all_alive()) << "no flapping after healing";
    EXPECT_GT(sim->at("n4").self().incarnation, before["n4"]) << "n4 refuted its burial";
    // No churn: each buried node refutes its burial once, and no live node is suspected.
    for (int i = 0; i < 5; ++i) {
      EXPECT_LE(sim->at(node_name(i)).self().incarnation, before[node_name(i)] + 1) << i;
    }
  }
}

TEST(MembershipFaults, TheNetworksReturnSendsAReconnectProbeAtOnceOverANewConnection) {
  time_point now{};
  auto sim = five_nodes(baton::testing::test_seeds(29, 1).front(), {}, 1s, now);
  // Alive: new connections from both sides, and nothing else changes.
  sim->reachable("n0", "n1", now);
  sim->reachable("n1", "n0", now);
  EXPECT_EQ(sim->fresh_connections.size(), 2u);
  sim->run(now, now + 1s);
  EXPECT_EQ(sim->view("n0", "n1"), member_state::alive);
  EXPECT_EQ(sim->view("n1", "n0"), member_state::alive);
  sim->fresh_connections.clear();
  sim->cut("n4", true);
  sim->run(now, now + 10s);
  ASSERT_EQ(sim->view("n0", "n4"), member_state::dead);
  ASSERT_EQ(sim->view("n4", "n0"), member_state::dead);
  sim->cut("n4", false);
  const auto back = now;
  sim->reachable("n0", "n4", now);
  sim->reachable("n4", "n0", now);
  EXPECT_EQ(sim->fresh_connections.size(), 2u);
  while (sim->view("n0", "n4") != member_state::alive ||
         sim->view("n4", "n0") != member_state::alive) {
    ASSERT_LT(now - back, 500ms) << "the reconnect probes did not bring them back at once";
    sim->run(now, now + 1ms);
  }
  std::printf("both sides alive again %lld ms after the network's return\n",
              static_cast<long long>((now - back) / 1ms));
}

TEST(MembershipFaults, TheOldConnectionFailingJustAfterAReturnSuspectsNobody) {
  // Gossip can revive a member before the connection that predates the partition fails
  // (its peer reset it while it was buried): that failure says nothing of the member.
  for (const auto seed : baton::testing::test_seeds(31, 4)) {
    SCOPED_TRACE(baton::testing::replay_hint(seed));
    time_point now{};
    auto sim = five_nodes(seed, {}, 1s, now);
    sim->cut("n4", true);
    sim->run(now, now + 10s);
    ASSERT_EQ(sim->view("n0", "n4"), member_state::dead);
    const auto before = sim->at("n4").self().incarnation;
    sim->cut("n4", false);
    const auto healed = now;
    while (sim->view("n0", "n4") != member_state::alive) {
      ASSERT_LT(now - healed, 2s);
      sim->run(now, now + 1ms);
    }
    sim->fresh_connections.clear();
    sim->unreachable("n0", "n4", now);
    EXPECT_EQ(sim->view("n0", "n4"), member_state::alive) << "not suspected";
    EXPECT_EQ(sim->fresh_connections.size(), 1u) << "probed over a new connection instead";
    sim->run(now, now + 3s);
    EXPECT_EQ(sim->view("n0", "n4"), member_state::alive);
    EXPECT_EQ(sim->at("n4").self().incarnation, before + 1) << "it refuted its burial, once";
    // A process that is gone is gone, returned or not.
    sim->cut("n4", true);
    sim->run(now, now + 10s);
    sim->cut("n4", false);
    for (int ms = 0; ms < 2000 && sim->view("n0", "n4") != member_state::alive; ++ms) {
      sim->run(now, now + 1ms);
    }
    ASSERT_EQ(sim->view("n0", "n4"), member_state::alive);
    sim->unreachable("n0", "n4", now, membership_state::unreachable_evidence::process_gone);
    EXPECT_EQ(sim->view("n0", "n4"), member_state::suspect);
    // Long after its return, the transport's word counts again.
    sim->unreachable("n0", "n4", now);
    EXPECT_EQ(sim->view("n0", "n4"), member_state::suspect);
  }
}

TEST(MembershipFaults, APartitionedNodeIsDeadToTheOthersAndTheRestAgree) {
  time_point now{};
  auto sim = five_nodes(baton::testing::test_seeds(22, 1).front(), lossy(), 1s, now);
  sim->cut("n4", true);
  sim->run(now, now + 3s);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(sim->view(node_name(i), "n4"), member_state::dead) << i;
    for (int j = 0; j < 4; ++j) {
      EXPECT_EQ(sim->view(node_name(i), node_name(j)), member_state::alive) << i << " sees " << j;
    }
  }
}

/// A node starved of CPU (running 250 ms out of every 600, its messages queued meanwhile)
/// answers late, is suspected, refutes, and is never declared dead; its late ticks raise
/// its local health. The detector of the earlier defaults (40/80/160 ms, no Lifeguard)
/// buries it: the test can tell the two apart.
TEST(Lifeguard, AStarvedNodeIsSuspectedButNeverDeclaredDead) {
  const auto starve = [](membership_config config, std::uint64_t seed, int& max_health) {
    time_point now{};
    auto sim = five_nodes(seed, lossy(), 1s, now, config);
    for (int period = 0; period < 40; ++period) {
      sim->stall("n2", now + 350ms);
      sim->run(now, now + 600ms);
      max_health = std::max(max_health, sim->at("n2").local_health());
    }
    return sim;
  };
  for (const auto seed : baton::testing::test_seeds(31, 3)) {
    SCOPED_TRACE(baton::testing::replay_hint(seed));
    int health = 0;
    auto sim = starve({}, seed, health);
    for (const auto& line : sim->trace) {
      EXPECT_EQ(line.find(" dead "), std::string::npos) << line;
    }
    std::uint64_t refuted = 0;
    for (int i = 0; i < 5; ++i) refuted += sim->at(node_name(i)).false_suspicions();
    EXPECT_GT(refuted, 0u) << "its late answers made it suspect, and each suspicion was refuted";
    EXPECT_GT(health, 0) << "its own late ticks raised its local health";
  }
  membership_config old;
  old.probe_interval = 40ms;
  old.suspect_after = 80ms;
  old.dead_after = 160ms;
  old.suspicion_max_multiplier = 1;
  old.max_local_health = 0;
  int ignored = 0;
  auto sim = starve(old, 31, ignored);
  bool buried = false;
  for (const auto& line : sim->trace)
    buried = buried || line.find(": n2 dead ") != std::string::npos;
  EXPECT_TRUE(buried) << "the old defaults declare a starved node dead";
}

TEST(Lifeguard, IndependentConfirmationsShortenASuspicion) {
  time_point now{};
  auto sim = five_nodes(41, {}, 1s, now);
  const auto& n0 = sim->at("n0");
  const membership_config c;
  const auto base = c.dead_after - c.suspect_after;
  EXPECT_EQ(n0.suspicion_timeout(1), base * c.suspicion_max_multiplier);
  EXPECT_LT(n0.suspicion_timeout(2), n0.suspicion_timeout(1));
  EXPECT_LT(n0.suspicion_timeout(3), n0.suspicion_timeout(2));
  EXPECT_EQ(n0.suspicion_timeout(4), base) << "three confirmations: the base";
  EXPECT_EQ(n0.suspicion_timeout(9), base);
}

/// A process that is gone has its connections refused: the node that saw it declares it
/// dead within unreachable_confirm, and the others learn it by gossip.
TEST(Lifeguard, AnUnreachableNodeIsDeclaredDeadAtOnce) {
  for (const auto seed : baton::testing::test_seeds(51, 10)) {
    SCOPED_TRACE(baton::testing::replay_hint(seed));
    time_point now{};
    auto sim = five_nodes(seed, lossy(), 1s, now);
    sim->kill("n4");
    const auto killed_at = now;
    sim->unreachable("n0", "n4", now);
    while (sim->view("n0", "n4") != member_state::dead) {
      ASSERT_LT(now - killed_at, 100ms) << "seed " << seed;
      sim->run(now, now + 1ms);
    }
    for (int i = 1; i < 4; ++i) {
      while (sim->view(node_name(i), "n4") != member_state::dead) {
        ASSERT_LT(now - killed_at, 600ms) << "seed " << seed << " n" << i;
        sim->run(now, now + 1ms);
      }
    }
  }
}

TEST(Lifeguard, AnUnreachableReportAboutALiveNodeIsRefuted) {
  time_point now{};
  auto sim = five_nodes(61, {}, 1s, now);
  const auto before = sim->at("n3").self().incarnation;
  sim->unreachable("n0", "n3", now);
  sim->run(now, now + 2s);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(sim->view(node_name(i), "n3"), member_state::alive) << i;
  EXPECT_GT(sim->at("n3").self().incarnation, before);
}

TEST(Membership, ADrainingNodeStaysAMemberAndEveryoneSeesItDraining) {
  time_point now{};
  auto sim = five_nodes(71, lossy(), 1s, now);
  sim->drain("n3", now);
  sim->run(now, now + 1s);
  for (int i = 0; i < 5; ++i) {
    const auto* m = sim->at(node_name(i)).find("n3");
    ASSERT_NE(m, nullptr);
    EXPECT_EQ(m->state, member_state::alive) << i;
    EXPECT_TRUE(m->draining) << i;
  }
}

}  // namespace
}  // namespace baton::runtime
