#pragma once

// The router's logic, without CAF: admission with a bounded number of requests in flight,
// tokenization, placement of each attempt on a decode and a prefill worker, a bounded
// queue of requests waiting for a worker, the request table, token streaming in position
// order, migration when a worker fails, dies, drains or restarts, resumption of a request
// whose router died (claiming its sequences from the decode nodes), and cancellation. The
// router actor is a thin shell that feeds it client requests, worker messages and
// membership changes, and delivers what it returns.

#include <algorithm>
#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <variant>
#include <vector>

#include "actors/effects.hpp"
#include "engine/tokenizer.hpp"
#include "schemas/client.hpp"
#include "schemas/inference.hpp"

namespace baton::actors {

/// What to do when a request needs a prefill worker and none is alive.
enum class no_prefill_policy : std::uint8_t {
  wait,               ///< wait for one in the queue (errc::unavailable when the wait ends)
  prefill_on_decode,  ///< compute the prompt on the decode node
};

/// Why a request's work moved to other workers.
enum class migration_cause : std::uint8_t {
  node_death,      ///< its worker's node died
  router_death,    ///< its router died: a client resumed it here
  drain,           ///< its worker's node drained and left
  actor_crash,     ///< its worker's actor crashed (restarted by its supervisor) or took nothing
  worker_failure,  ///< its worker gave the attempt up (refused, timed out, failed)
  lost,  ///< a message of its attempt was lost: silence for silence_timeout, or a token gap
};
inline constexpr std::size_t migration_causes = 6;
[[nodiscard]] std::string_view to_string(migration_cause cause) noexcept;

struct router_config {
  std::size_t max_inflight = 256;  ///< admitted requests at once; beyond: overloaded at once
  /// Prompts of at most this many tokens are prefilled on the decode node (the transfer
  /// would cost more than it saves); 0: never.
  std::uint32_t prefill_on_decode_max_tokens = 0;
  no_prefill_policy when_no_prefill = no_prefill_policy::wait;
  /// Placements per request that workers may give up (refusals, timeouts) before it fails;
  /// migrations after a death, drain or crash do not count (the deadline bounds them).
  std::uint32_t max_attempts = 3;
  std::chrono::milliseconds default_timeout{30'000};
  std::uint64_t seed = 1;  ///< seeds the sampling seeds assigned to requests without one
  /// Kind-awareness: a worker of the other kind counts as this many requests more loaded.
  std::size_t kind_penalty = 2;
  /// Back-pressure: while its client has room, a request's decode may run this many
  /// positions ahead of what was delivered; a slow client gets no new window.
  std::uint32_t stream_window = wire::initial_stream_window;
  /// Requests waiting for a worker (none alive for a role, or no KV room) at most; one
  /// more is answered overloaded.
  std::size_t max_waiting = 256;
  /// How long a request waits for a worker before it fails with errc::unavailable (its
  /// deadline, when sooner, fails it first).
  std::chrono::milliseconds max_wait{10'000};
  /// How long a resumed request waits for the decode nodes to answer its claim before it
  /// places what nobody handed over.
  std::chrono::milliseconds claim_timeout{250};
  /// An attempt whose decode node has said nothing of it (no token, finish or abort) this
  /// long after its admit or its last tokens, while its window lets it go on, moves
  /// elsewhere: the admit, a window or its tokens were lost (a connection that is reset
  /// loses what it carried, and nobody is told). Longer than a decode node's own wait for
  /// its prefill (10 s), which it reports itself. 0: never.
  std::chrono::milliseconds silence_timeout{15'000};
  /// A worker a frame could not reach (or whose prefill job did not arrive) gets no new
  /// attempt for this long; what it had waits or goes elsewhere. Placed again at once, a
  /// node membership has not declared dead yet would take the same requests back
  /// thousands of times a second.
  std::chrono::milliseconds unreachable_backoff{100};
  /// Request ids count up from this (in their low 40 bits; the top 24 name the router).
  /// The router actor sets the microseconds since the epoch at its start, so a restarted
  /// router never reuses an id of the one before it, whose attempts decode nodes may still
  /// hold for a claim (unless that one issued more than one id per microsecond).
  std::uint64_t first_request = 0;
};

/// Something for the client of `request`. The shell fills in the client's tag.
struct client_event {
  wire::request_id request{};
  std::variant<wire::accepted, wire::token_chunk, wire::finished, wire::rejected> what;
};

struct [[nodiscard]] router_effects : effects {
  std::vector<client_event> events;
  /// Lines for the shell's log: one per request that failed, migrated, waited or resumed,
  /// naming its id, the cause and the node.
  std::vector<std::string> log;

  void append(router_effects&& other) {
    effects::append(std::move(other));
    for (auto& e : other.events) events.push_back(std::move(e));
    for (auto& l : other.log) log.push_back(std::move(l));
  }
};

struct router_stats {
  std::uint64_t accepted = 0;
  std::uint64_t overloaded = 0;  ///< refused at once: too many in flight or the queue full
  std::uint64_t invalid = 0;
  std::uint64_t finished = 0;
  std::uint64_t failed = 0;  ///< ended with an error after being accepted
  std::uint64_t client_gone = 0;
  std::uint64_t timed_out = 0;
  std::uint64_t unavailable = 0;  ///< failed: no worker came back within max_wait
  std::uint64_t retries = 0;
  std::uint64_t disaggregated = 0;        ///< attempts placed prefill -> decode
  std::uint64_t prefill_on_decode = 0;    ///< attempts prefilled on the decode node by policy
  std::uint64_t no_prefill_fallback = 0;  ///< ... because no prefill worker was alive
  std::uint64_t tokens = 0;
  std::uint64_t stale_messages = 0;  ///< from an old attempt or an unknown request, dropped
  std::uint64_t waited = 0;          ///< requests that waited for a worker
  std::uint64_t resumed = 0;         ///< requests resumed here after their router died
  std::uint64_t claimed = 0;         ///< attempts decode nodes handed over (no recompute)
  std::array<std::uint64_t, migration_causes> migrations{};  ///< requests moved, by cause
};

/// Placement is O(log n) in the number of workers: each role keeps its workers ordered by
/// load (attempts in flight, plus kind_penalty when the kind is not the role's preferred
/// one: prefill prefers trainium, decode prefers wafer-scale), equal loads in an order of
/// this router's own (a hash of the node name seeded by the router's: routers that do not
/// see each other's load spread instead of herding); the first that fits wins,
/// skipping nodes that already failed the request unless no other fits. A draining worker
/// keeps its attempts but gets no new ones.
///
/// Waiting: a request (or the part of it a failure left unplaced) that finds no live
/// worker for a role, or no decode worker with room, waits in a FIFO queue of at most
/// max_waiting requests; every event that may bring capacity (a worker joins, an attempt
/// ends) places what waits, in order. A wait ends after max_wait with errc::unavailable.
///
/// Resuming: a request that arrives with wire::resume_state continues one whose router
/// died. It keeps the client's tokens per choice, asks every decode worker to hand over
/// that request's orphaned sequences (claim), waits for their answers (claim_timeout at
/// most) and places only what nobody handed over, from the client's position.
///
/// Not thread-safe; `tok` must outlive this.
class router_state {
 public:
  router_state(const engine::tokenizer& tok, std::int32_t seq_len, std::size_t block_tokens,
               wire::actor_address self, router_config config = {});

  /// Makes the actor `address` (named "prefill" or "decode") a worker of `role` (once);
  /// what waits for one is placed. A decode node that was gone before is first told to end
  /// every attempt of this router (they were moved when it went). A prefill worker's `incarnation`
  /// (its node's) goes in the admits that name it as the writer.
  router_effects add_worker(const wire::actor_address& address, wire::role role,
                            wire::node_kind kind, std::size_t kv_blocks, time_point now,
                            std::uint64_t incarnation = 0);
  /// `node` drains: its workers get no new attempts (theirs go on).
  void on_draining(const std::string& node);
  /// This router's node had been declared dead (it refuted, and lives on): the workers
  /// that buried it gave up what they held for it, so every request with an attempt is
  /// placed again (from the tokens its client has).
  router_effects on_buried(time_point now);
  /// Forgets `node`'s workers and migrates every request that had an attempt on it.
  router_effects on_node_gone(const std::string& node, time_point now,
                              migration_cause cause = migration_cause::node_death);
  /// A message to `node` could not be delivered (its actor is gone or restarting):
  /// migrates every request that had an attempt on it, keeping the worker.
  router_effects on_undeliverable(const std::string& node, time_point now);
  /// `node`'s actor of `role` restarted: what it held is lost; its requests migrate.
  router_effects on_actor_restarted(const std::string& node, wire::role role, time_point now);

  /// A new request (or one resumed from another router). The events carry its id:
  /// accepted, or rejected at once.
  router_effects on_generate(const wire::generate_request& r, time_point now);
  /// The same for a caller that holds the prompt's tokens (`r.prompt` is ignored): no
  /// tokenizing, and no prompt text in accepted. A token outside the vocabulary, or none,
  /// is invalid.
  router_effects on_generate_tokens(const wire::generate_request& r,
                                    std::vector<std::int32_t> prompt, time_point now);
  /// Tokens for a client (and the end of the request when the batch says so);
  /// `client_has_room` is false while the client reads too slowly,
  /// and then the decode node gets no new window until on_client_ready(). Tokens of an
  /// attempt the router does not have on that node are answered with its cancel.
  router_effects on_tokens(const wire::actor_address& from, const wire::token_batch& m,
                           bool client_has_room, time_point now);
  /// A slow client has room again: the decode node may go on.
  router_effects on_client_ready(wire::request_id request, time_point now);
  router_effects on_finish(const wire::actor_address& from, const wire::finish& m, time_point now);
  router_effects on_abort(const wire::actor_address& from, const wire::abort_attempt& m,
                          time_point now);
  /// A decode node's answer to a claim.
  router_effects on_claimed(const wire::actor_address& from, const wire::claimed& m,
                            time_point now);
  /// The client cancelled or is gone: the workers are told, nothing goes to the client.
  router_effects on_client_gone(wire::request_id request, time_point now);
  router_effects on_timer(std::uint64_t id, time_point now);
  /// This router stops (it drains past its deadline): forgets every request without a
  /// message to any worker, so that their decode nodes keep the sequences for the routers
  /// their clients resume through.
  void forget_all();

  [[nodiscard]] std::size_t inflight() const { return requests_.size(); }
  [[nodiscard]] std::size_t waiting() const { return waiting_.size(); }
  [[nodiscard]] std::size_t workers(wire::role role) const;
  [[nodiscard]] const router_stats& stats() const { return stats_; }
  [[nodiscard]] std::uint64_t seed() const { return config_.seed; }

 private:
  /// prefilling: the decode node has the admit and sends the job to the prefill node.
  enum class stage : std::uint8_t { prefilling, decoding };
  enum class timer_kind : std::uint8_t { deadline, wait, claim, silence };
  /// How placing an attempt went.
  enum class fit : std::uint8_t { placed, wait, never };
  /// One choice of the request (OpenAI's n): what its client has been sent.
  struct choice_state {
    std::vector<std::int32_t> delivered;
    bool done = false;
    wire::finish_reason reason = wire::finish_reason::length;
  };
  /// One placement of some choices on a decode node (and a prefill node, unless
  /// prefilled on the decode node or handed over by a claim).
  struct attempt_state {
    std::vector<std::uint32_t> choices;  ///< ascending
    stage at = stage::prefilling;
    std::string prefill;  ///< node of the prefill; empty: on the decode node
    std::string decode;
    std::size_t blocks = 0;            ///< blocks it commits on its decode node
    std::uint32_t window = 0;          ///< its stream window limit
    std::optional<time_point> placed;  ///< when its admit went (claimed: never)
    std::optional<time_point> heard;   ///< when its decode node last said something of it
    [[nodiscard]] bool serves(std::uint32_t c) const {
      return std::find(choices.begin(), choices.end(), c) != choices.end();
    }
  };
  /// Choices of one request share a placement while none has delivered anything; a retry
  /// cancels every attempt of the request and places its unfinished choices anew (each on
  /// its own once they have delivered different tokens). Attempt numbers only grow, so a
  /// message from a replaced attempt is recognised as stale.
  struct request {
    std::vector<std::int32_t> prompt;
    std::uint32_t max_tokens = 0;  ///< generated tokens at most per choice, over all attempts
    wire::sampling params;
    std::vector<choice_state> choices;
    std::map<std::uint32_t, attempt_state> attempts;  ///< live, by attempt number
    std::uint32_t last_attempt = 0;                   ///< attempt numbers given so far
    std::uint32_t failures = 0;   ///< attempts workers gave up (counted against max_attempts)
    std::set<std::string> avoid;  ///< nodes that refused or failed this request
    std::optional<error> last_error;
    std::uint64_t timer = 0;
    std::uint64_t wait_timer = 0;  ///< while waiting
    bool waiting = false;
    /// Resuming: the first router's id, and the decode nodes whose claimed answer is due.
    wire::request_id resumed_from{};
    std::set<std::string> claiming;
    std::uint64_t claim_timer = 0;
    std::uint64_t silence_timer = 0;  ///< while an attempt is unheard
  };
  struct worker {
    wire::actor_address address;
    wire::node_kind kind = wire::node_kind::cpu;
    std::size_t kv_blocks = 0;
    std::size_t load = 0;           ///< attempts in flight
    std::size_t committed = 0;      ///< blocks our attempts hold (decode)
    std::size_t score = 0;          ///< the key in the role's ordered set
    bool draining = false;          ///< not ranked: no new attempts
    std::uint64_t incarnation = 0;  ///< its node's, when it was added
    /// Orders workers of equal score: a hash of the node's name seeded by this router's,
    /// so that independent routers do not all pick the same idle worker first.
    std::uint64_t tie = 0;
  };
  using ranking = std::set<std::tuple<std::size_t, std::uint64_t, std::string>>;

  /// on_generate with the prompt's tokens, or with its text tokenized when `tokens` is empty.
  router_effects admit(const wire::generate_request& in,
                       std::optional<std::vector<std::int32_t>> tokens, time_point now);
  /// Places every choice that is neither done nor in a live attempt, or completes the
  /// request when no choice is left, or queues it when a worker is missing.
  router_effects place(wire::request_id id, request& r, time_point now);
  /// Places `choices` as one attempt, appending its messages to `out`.
  fit place_attempt(wire::request_id id, request& r, const std::vector<std::uint32_t>& choices,
                    router_effects& out);
  /// Queues the request for a worker (or fails it overloaded when the queue is full).
  void wait(wire::request_id id, request& r, time_point now, router_effects& out);
  /// Places what waits, in order, once capacity may have appeared.
  void settle(time_point now, router_effects& out);
  /// Sends the claim of a resumed request to every decode worker.
  /// What is wrong with `in` beyond what the codec checks, or nullopt.
  [[nodiscard]] std::optional<std::string> check(const wire::generate_request& in) const;
  /// Takes what the client of a resumed request received as delivered.
  void take_resume(const wire::resume_state& from, request& r) const;
  void claim(wire::request_id id, request& r, time_point now, router_effects& out);
  /// The claim is answered (or timed out): places what nobody handed over.
  void end_claim(wire::request_id id, request& r, time_point now, router_effects& out);
  /// Ends an attempt's bookkeeping (loads and blocks) without messages.
  void end_attempt(request& r, std::uint32_t attempt);
  /// Cancels every attempt and places the unfinished choices again.
  router_effects migrate(wire::request_id id, request& r, error why, migration_cause cause,
                         time_point now);
  router_effects migrate_all_on(const std::string& node, const error& why, migration_cause cause,
                                time_point now, std::optional<wire::role> only = std::nullopt);
  router_effects fail(wire::request_id id, error why);
  /// Tells the workers of every attempt of the request that it is over.
  void cancel_workers(wire::request_id id, const request& r, router_effects& out);
  void finish_request(wire::request_id id);
  /// Choice `c` ended for `reason`; with its last choice the request ends well.
  void choice_done(wire::request_id id, request& r, std::uint32_t attempt, std::uint32_t c,
                   wire::finish_reason reason, router_effects& out);
  /// The request ends well when every choice is done.
  void maybe_finished(wire::request_id id, request& r, router_effects& out);
  /// Widens an attempt's window when the client has room and a quarter of it was used.
  void widen_window(wire::request_id id, request& r, std::uint32_t attempt, router_effects& out);
  /// The request and its live attempt `attempt`, if `from` is that attempt's decode node.
  [[nodiscard]] std::pair<request*, attempt_state*> current(wire::request_id id,
                                                            std::uint32_t attempt,
                                                            const std::string& from);
  /// The token_chunk of `m`'s new tokens for choice `c` (repeats dropped), with their text
  /// and log-probabilities.
  [[nodiscard]] wire::token_chunk chunk_of(request& r, std::uint32_t c, const wire::token_batch& m);
  /// `node` gets no new attempt for unreachable_backoff.
  void back_off(const std::string& node, time_point now, router_effects& out);
  [[nodiscard]] std::uint64_t add_timer(wire::request_id id, timer_kind kind, time_point at,
                                        router_effects& out);

  worker* pick(wire::role role, const std::set<std::string>& avoid, std::size_t blocks);
  void adjust(wire::role role, worker& w, std::ptrdiff_t load, std::ptrdiff_t blocks);
  [[nodiscard]] std::size_t score(wire::role role, const worker& w) const;
  [[nodiscard]] std::size_t blocks_for(std::size_t positions) const;
  /// The KV blocks an attempt of `count` choices needs from `tokens` on.
  [[nodiscard]] std::size_t blocks_needed(const request& r, std::size_t tokens,
                                          std::size_t count) const;

  const engine::tokenizer& tok_;
  std::int32_t seq_len_;
  std::size_t block_tokens_;
  wire::actor_address self_;
  router_config config_;
  std::mt19937_64 seeds_;
  std::uint64_t next_request_ = 0;
  /// Decode workers that went (died, left, declared dead): one that comes back is told
  /// to end what this router had there (a cancel of request 0), which was moved.
  std::unordered_set<std::string> gone_decodes_;
  std::uint64_t seeds_tie_ = 0;  ///< seeds worker::tie
  std::uint64_t next_timer_ = 0;
  /// Hashed: every worker message looks its request up. Whatever walks it sorts by id.
  std::unordered_map<wire::request_id, request> requests_;
  std::map<std::uint64_t, std::pair<wire::request_id, timer_kind>> timers_;
  std::set<std::string> unreachable_;              ///< workers backing off: never picked
  std::map<std::uint64_t, std::string> backoffs_;  ///< timer -> the worker it brings back
  std::vector<wire::request_id> waiting_;          ///< FIFO
  bool capacity_changed_ = false;                  ///< since the last settle()
  /// Hashed by node name: each worker message looks its node up. claim() sorts by name.
  std::unordered_map<std::string, worker> prefill_;
  std::unordered_map<std::string, worker> decode_;
  ranking prefill_rank_;
  ranking decode_rank_;
  router_stats stats_;
};

}  // namespace baton::actors
