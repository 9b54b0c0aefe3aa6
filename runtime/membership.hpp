#pragma once

// Membership and failure detection in the style of SWIM (Das et al., 2002): each node
// probes one member per period and disseminates what it learns by piggybacking updates
// on its probes, so the load on each node stays constant as the cluster grows. A probe
// is retried while unanswered, and then makes its target suspect; a suspect is probed
// with the news until it refutes (by gossiping a higher incarnation) or, in time, is
// declared dead. (Retries stand in for SWIM's indirect probes: they cover lost messages,
// not a link that is down while the nodes are alive.) Joining goes through a seed, which
// refuses a node whose wire version, model or numerics do not match, and, in a cluster
// with a secret, one that cannot prove it holds it (require_secret()). A partition longer
// than the dead timeout buries nodes that are alive, on both sides; frames from a buried
// incarnation are not accepted, so each node also sends a reconnect probe to one dead
// member now and then (as Serf reconnects to failed members), telling it it was declared
// dead. A live node that hears so refutes with a higher incarnation, whose frames the
// other side accepts again; a frame from a buried incarnation is read for that news alone.
//
// Failure detection that does not lie, after Lifeguard (Dadgar, Phillips and Currey, 2018):
// a node keeps a local health score that rises when the answer to one of its probes comes
// after the probe's timeout, when it has to refute a suspicion of itself, and when its
// ticks run late (it is the slow one, starved of CPU), and falls with each probe answered
// in time; its probe period and probe
// timeout are multiplied by (1 + score). A suspicion starts long (suspicion_max_multiplier
// times the base) and shrinks towards the base as other members independently suspect the
// same incarnation (each suspect update names its suspecter). A member whose connection
// the transport reports refused or reset (its process is gone; on_unreachable) is declared
// dead after unreachable_confirm unless it answers: fast failover for crashed processes,
// patience for slow ones.
//
// An event-driven state class: no threads, no clock, no I/O. Each call takes the time and
// returns the messages to send; the caller owns delivery and calls on_tick() by
// next_deadline().

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "runtime/cluster_secret.hpp"
#include "schemas/frame.hpp"

namespace baton::runtime {

using time_point = std::chrono::steady_clock::time_point;
using std::chrono::milliseconds;

struct membership_config {
  milliseconds probe_interval{100};  ///< one probe per node per interval (x local health)
  milliseconds suspect_after{250};   ///< an unanswered probe makes its target suspect...
  /// ...and, unrefuted, dead this long after the probe when independently confirmed
  /// (suspicion_confirmations times); unconfirmed, the suspicion lasts
  /// suspicion_max_multiplier times longer.
  milliseconds dead_after{750};
  milliseconds join_timeout{500};  ///< then the next seed is tried
  /// An unanswered probe is sent again this often until its target answers or becomes
  /// suspect, and a suspect is probed this often until it refutes or is declared dead:
  /// a lost message alone then rarely makes a node suspect, and a suspect that is alive
  /// learns of the suspicion (and refutes it) within a round trip.
  milliseconds probe_retry{20};
  /// One dead member (not one that left) is sent a reconnect probe this often.
  milliseconds reconnect_interval{500};
  int max_local_health = 8;          ///< the local health score's ceiling
  int suspicion_max_multiplier = 4;  ///< an unconfirmed suspicion lasts this many times the base
  int suspicion_confirmations = 3;   ///< independent suspicions that shrink it to the base
  /// A member reported unreachable (on_unreachable) is dead this long later unless it
  /// answers.
  milliseconds unreachable_confirm{60};
  /// For this long after a dead member comes back, a transport failure to it is blamed on
  /// the connection from before its return (reset by the peer that buried it), not on the
  /// member: it is probed over a new connection instead of suspected.
  milliseconds returned_grace{2000};
  /// A challenge to a joiner is answered within this long, once, or not at all.
  milliseconds challenge_ttl{30'000};
  std::size_t max_challenges = 1024;  ///< outstanding at once; beyond, the oldest go
  int gossip_multiplier = 3;          ///< an update rides on multiplier*log2(n) messages
  std::size_t max_piggyback = 8;      ///< updates per message
};

/// A seed a joining node contacts.
struct seed_node {
  std::string node;
  std::string fabric_address;
};

struct membership_output {
  struct send {
    std::string node;
    std::string fabric_address;
    wire::body body;
    /// When the transport should give up sending it (none: its default). A probe, or its
    /// answer, that has not left by the time its target would be suspected is of no use,
    /// and one to a node that is really dead must not keep the transport retrying.
    time_point until{};
    /// Over a new connection (on_reachable): the old one may be stuck in TCP's backoff.
    bool fresh_connection = false;
  };
  std::vector<send> sends;
  std::vector<wire::member> changes;  ///< members whose state or incarnation changed
  /// This node heard it had been declared dead, and refuted it: its peers gave up what
  /// they held for it.
  bool buried = false;
  std::optional<std::string> refused;  ///< this node's join was refused, and why
  /// Joins this node refused as a seed: what to log ("join of NODE at ADDRESS refused: ...").
  std::vector<std::string> refused_joins;
};

/// "alive", "suspect", "dead" or "left".
[[nodiscard]] std::string_view to_string(wire::member_state state) noexcept;

/// Whether a frame from `incarnation` of a node is current, given what is `known` of it
/// (nullptr: nothing). Frames from an older incarnation, or from the incarnation that was
/// declared dead or left, are not.
[[nodiscard]] bool accepts_incarnation(const wire::member* known, std::uint64_t incarnation);

class membership_state {
 public:
  /// `self` describes this node and what a peer must match to join. A node that is the
  /// first seed bootstraps the cluster; every other node joins through a seed.
  membership_state(wire::join self, std::vector<seed_node> seeds, membership_config config,
                   std::uint64_t random_seed);

  /// Requires the cluster secret of every node that joins through this one, and proves it
  /// to the seeds this node joins through (before start()). The handshake: the joiner's
  /// join carries a fresh nonce; the seed answers with a challenge, its own fresh nonce
  /// and its proof over both nonces and both names; the joiner checks that proof and
  /// answers with its proof over both nonces, both names and its incarnation; the seed
  /// accepts only an answer to a challenge it issued (once, within challenge_ttl), so a
  /// recorded handshake replayed later is refused. A joiner without the secret or with
  /// another is refused with the reason; a replayed answer is not answered; each is
  /// counted in auth_failures() and reported in refused_joins. A joiner refuses a seed
  /// that cannot prove the secret or does not ask for it. `nonces` gives fresh
  /// nonces (default: from this state's seeded generator, for simulations).
  void require_secret(std::shared_ptr<const cluster_secret> secret,
                      std::function<nonce()> nonces = {});

  [[nodiscard]] membership_output start(time_point now);
  /// A membership message (join, joinReply, heartbeat, leave) from incarnation
  /// `incarnation` of `from`. From an incarnation accepts() refuses, only what it says of
  /// this node is read (a refutation), and nothing is answered.
  [[nodiscard]] membership_output on_message(const std::string& from, std::uint64_t incarnation,
                                             const wire::body& body, time_point now);
  [[nodiscard]] membership_output on_tick(time_point now);
  /// Announces that this node leaves; the caller keeps ticking briefly so it spreads.
  [[nodiscard]] membership_output leave(time_point now);
  /// Announces that this node takes no new work (a higher incarnation with draining set).
  [[nodiscard]] membership_output drain(time_point now);
  /// What says a member cannot be reached.
  enum class unreachable_evidence : std::uint8_t {
    connection_failed,  ///< a send failed: its fabric connection was refused or reset
    process_gone,       ///< nothing listens at its admin port (peer_watch)
  };
  /// `node` cannot be reached: a live member becomes suspect and is declared dead
  /// unreachable_confirm later unless it refutes. Ignored for a member not alive or
  /// suspect. A connection that failed within returned_grace of a dead member's return is
  /// treated as on_reachable instead: the failure is its connection from before.
  [[nodiscard]] membership_output on_unreachable(const std::string& node, time_point now,
                                                 unreachable_evidence why);
  /// The network reaches `node` again (peer_watch connected to it after failing to): it
  /// is sent a reconnect probe at once over a new connection, since the old one's
  /// retransmissions started while the network was down and back off for seconds (for a
  /// dead member, the probe also tells it it was buried). Ignored for one that left.
  [[nodiscard]] membership_output on_reachable(const std::string& node, time_point now);

  /// When on_tick() next has work to do.
  [[nodiscard]] time_point next_deadline() const;
  [[nodiscard]] bool joined() const { return joined_; }
  [[nodiscard]] const wire::member& self() const { return self_.member; }
  /// Every known node, this one included, sorted by name.
  [[nodiscard]] std::vector<wire::member> members() const;
  [[nodiscard]] const wire::member* find(const std::string& node) const;
  /// False for frames from an older incarnation of `node`, or from the incarnation that
  /// was declared dead or left.
  [[nodiscard]] bool accepts(const std::string& node, std::uint64_t incarnation) const;

  /// The local health score, 0 (healthy) to max_local_health.
  [[nodiscard]] int local_health() const { return health_; }
  /// Suspicions of live members that ended in a refutation (the member was alive).
  [[nodiscard]] std::uint64_t false_suspicions() const { return false_suspicions_; }
  /// Joins refused because the joiner did not prove the cluster secret (none, another,
  /// or a replayed answer).
  [[nodiscard]] std::uint64_t auth_failures() const { return auth_failures_; }
  /// How long a suspicion lasts with `suspecters` independent suspecters (>= 1).
  [[nodiscard]] milliseconds suspicion_timeout(std::size_t suspecters) const;

 private:
  struct record {
    wire::member info;
    time_point suspect_since{};
    time_point suspect_deadline{};
    time_point next_reprobe{};            ///< while suspect
    std::vector<std::string> suspecters;  ///< of the suspected incarnation
    std::optional<time_point> returned;   ///< when it last came back from dead
  };
  struct probe {
    std::string target;
    std::uint64_t sequence = 0;
    time_point sent{};
    time_point next_retry{};
  };
  struct gossip {
    wire::member update;
    int remaining = 0;
  };

  void apply(const wire::member& update, time_point now, membership_output& out);
  /// Another member independently suspects `r`'s incarnation: the suspicion shortens.
  void confirm(record& r, const wire::member& update, time_point now);
  void raise_health() { health_ = std::min(health_ + 1, config_.max_local_health); }
  void lower_health() { health_ = std::max(health_ - 1, 0); }
  /// The probe period and timeout, scaled by local health.
  [[nodiscard]] milliseconds probe_period() const;
  [[nodiscard]] milliseconds probe_timeout() const;
  void refute(std::uint64_t incarnation, membership_output& out);
  void spread(const wire::member& update);
  [[nodiscard]] std::vector<wire::member> piggyback();
  [[nodiscard]] wire::heartbeat make_heartbeat(std::uint64_t sequence, bool is_ack);
  /// A probe carrying only this node and `news` (no gossip consumed).
  [[nodiscard]] wire::heartbeat bare_probe(std::uint64_t sequence,
                                           std::optional<wire::member> news) const;
  [[nodiscard]] std::optional<std::string> incompatibility(const wire::join& j) const;
  void handle_join(const wire::join& j, time_point now, membership_output& out);
  /// The seed's half of the handshake: true when `j` proved the secret; otherwise it was
  /// challenged or refused here.
  [[nodiscard]] bool authenticated(const wire::join& j, time_point now, membership_output& out);
  /// The joiner's half: answers a challenge from `from`, or refuses this node's join.
  void answer_challenge(const std::string& from, const wire::join_reply& reply, time_point now,
                        membership_output& out);
  void refuse(const wire::join& j, const std::string& why, membership_output& out);
  [[nodiscard]] nonce fresh_nonce();
  void send_join(time_point now, membership_output& out);
  void start_probe(time_point now, membership_output& out);
  void retry_probes(time_point now, membership_output& out);
  void expire(time_point now, membership_output& out);
  void reconnect(time_point now, membership_output& out);

  wire::join self_;
  std::vector<seed_node> seeds_;
  membership_config config_;
  std::mt19937_64 rng_;
  bool joined_ = false;
  bool leaving_ = false;
  std::size_t join_attempts_ = 0;
  std::shared_ptr<const cluster_secret> secret_;
  std::function<nonce()> nonces_;
  nonce join_nonce_{};        ///< this node's, in its current join round
  bool answered_ = false;     ///< this round's challenge was answered
  bool seed_proved_ = false;  ///< and the seed proved the secret in it
  seed_node asked_;           ///< the seed of the current round
  struct challenge {
    nonce seed;
    time_point expires;
  };
  /// Challenges this node issued as a seed, by joiner, incarnation and joiner nonce.
  std::map<std::tuple<std::string, std::uint64_t, nonce>, challenge> challenges_;
  std::uint64_t auth_failures_ = 0;
  time_point join_deadline_{};
  std::map<std::string, record> members_;  // every other node
  std::vector<gossip> gossip_;
  std::vector<std::string> probe_order_;
  std::size_t probe_index_ = 0;
  std::uint64_t probe_sequence_ = 0;
  std::vector<probe> probes_;  // unanswered, oldest first
  time_point next_probe_{};
  time_point next_reconnect_ = time_point::max();  // while some member is dead
  std::size_t reconnect_index_ = 0;
  int health_ = 0;
  /// Probes that expired unanswered (target, sequence), newest last: an answer to one
  /// shows that this node's probes run late.
  std::vector<std::pair<std::string, std::uint64_t>> late_;
  static constexpr std::size_t max_late_probes = 16;
  std::uint64_t false_suspicions_ = 0;
};

}  // namespace baton::runtime
