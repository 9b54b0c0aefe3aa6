#pragma once

// The decode role's logic, without CAF: KV reservations for remote writers, checksum
// verification, continuous batching and token streaming. An attempt may serve several
// choices of one request (OpenAI's n): one prompt's KV, then a sequence per choice that
// shares its full blocks (engine::kv_pool::fork). The decode actor is a thin shell
// that feeds it messages, calls step() while has_work(), and sends what it returns.

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "actors/effects.hpp"
#include "engine/device.hpp"
#include "engine/sampler.hpp"
#include "schemas/inference.hpp"

namespace baton::actors {

struct decode_config {
  std::size_t max_batch = 32;  ///< sequences per decode step
  /// Reserved blocks wait this long for prefill-done; then the attempt is given up (its
  /// blocks stay quarantined until the writer's attempt ends).
  std::chrono::milliseconds kv_timeout{10'000};
  /// A running attempt whose router is gone is kept this long for a router that claims it
  /// (a client resuming through another router); then it is released.
  std::chrono::milliseconds orphan_grace{5'000};
  /// Keep a cancelled attempt's blocks until its writer's attempt ends (see Late writes
  /// below). Off only in the simulation test that shows the chaos simulation catches the
  /// corruption its absence lets through.
  bool quarantine_late_writes = true;
};

/// Where the engine's KV pool sits in transport-registered memory, so descriptors can name it.
struct kv_region {
  std::uint64_t fabric_node = 0;  ///< the transport node id of this endpoint
  std::uint64_t key = 0;          ///< the region's RMA key
  std::uint64_t pool_offset = 0;  ///< byte offset of block 0 within the region
};

struct decode_stats {
  std::uint64_t admitted = 0;
  std::uint64_t refused = 0;  ///< admits answered overloaded or invalid
  std::uint64_t local_prefills = 0;
  std::uint64_t checksum_failures = 0;  ///< prefill-done whose blocks did not verify
  std::uint64_t recomputed = 0;         ///< prompts recomputed here after a bad transfer
  std::uint64_t finished = 0;
  std::uint64_t cancelled = 0;
  std::uint64_t slices_landed = 0;  ///< RMA notifications counted
  std::uint64_t tokens = 0;
  std::uint64_t orphaned = 0;          ///< running attempts kept after their router died
  std::uint64_t claimed = 0;           ///< attempts handed over to a claiming router
  std::uint64_t orphans_released = 0;  ///< orphaned attempts nobody claimed in time
};

/// Policy (documented in docs/serving.md): admission reserves every block a request can
/// need (prompt plus max_tokens), so a running sequence never runs out of KV and nothing is
/// preempted; an admit that does not fit is refused with errc::overloaded and the router
/// places it elsewhere.
///
/// Late writes: blocks handed to a remote writer are never reused before the writer's
/// attempt has ended (its prefill-done or abort, which it sends after all its writes), its
/// node is gone or the job never reached it (undeliverable), even when the attempt was cancelled or
/// timed out here. A retry is a new attempt and always gets fresh blocks.
///
/// Orphans: when a router dies, its running attempts are not dropped but orphaned for
/// orphan_grace: they generate up to their stream window, keep every token (a lane's
/// history) and send nothing. A router resuming the request (claim) takes them over under
/// its own request id and attempt numbers, and gets each choice's tokens from the position
/// its client expects: a stream continues across a router's death without recompute. Only
/// the router an attempt belongs to can cancel it.
///
/// Modelled time: when the device reports one (an emulated device), the messages of that
/// prefill or step are held and sent by on_timer once the time has passed, and no step
/// runs meanwhile (the device is busy); the state itself changes at once.
///
/// Not thread-safe; `engine` must outlive this and is used by nothing else.
class decode_state {
 public:
  decode_state(engine::device& engine, wire::actor_address self, kv_region region,
               decode_config config = {});

  /// Reserves blocks and sends the prefill job, naming them, to the writer's prefill actor,
  /// or computes the prompt here (empty writer) and starts streaming. Refusals are
  /// abort_attempt to `from`.
  effects on_admit(const wire::actor_address& from, const wire::admit& m, time_point now);
  /// Verifies the written blocks (recomputing the prompt here when they are wrong) and
  /// adds the sequence to the batch.
  effects on_prefill_done(const wire::actor_address& from, const wire::prefill_done& m,
                          time_point now);
  /// Ends the request's attempts (or m.attempt only; request 0: every attempt) that belong
  /// to `from`; remote-written
  /// blocks go to quarantine, and a prefill still computing for it is told (after the job
  /// this node sent it).
  effects on_cancel(const wire::actor_address& from, const wire::cancel& m);
  /// A router resumes a request whose router is gone: hands over what this node holds of
  /// it (claimed, then each choice's tokens from the claimed position on).
  effects on_claim(const wire::actor_address& from, const wire::claim& m, time_point now);
  /// Raises the attempt's window: a sequence never generates at or past its limit.
  void on_window(const wire::stream_window& m);
  /// The writer gave up on its attempt: its blocks are free again; the router is told.
  effects on_abort(const wire::actor_address& from, const wire::abort_attempt& m);
  /// `node` died or left: ends its writers' quarantines, and orphans its routers' running
  /// attempts (the others end).
  effects on_node_gone(const std::string& node, time_point now);
  /// The actor `actor` terminated on a live node (a crash its supervisor restarts): a
  /// router's running attempts are orphaned as if its node had died; a prefill's
  /// unfinished jobs end (its writes are over with it).
  effects on_actor_gone(const wire::actor_address& actor, time_point now);
  /// A message to `to` was not delivered: a prefill job that did not reach its prefill
  /// actor ends its attempt (abort_attempt, errc::disconnected, to the router), and frees
  /// the blocks of one already cancelled (quarantined).
  effects on_undeliverable(const wire::actor_address& to);
  effects on_timer(std::uint64_t id, time_point now);
  /// This node learns it was declared dead (it refuted): a prefill node that buried it
  /// refused its jobs meanwhile, without a word. Every attempt still waiting for a remote
  /// prefill ends (abort_attempt, errc::disconnected, to its router, which places it
  /// again; a cancel to its prefill, whose answer ends the quarantine).
  effects on_buried();
  /// This node is leaving: every attempt ends with abort_attempt{unavailable, why} to its
  /// router, which places it elsewhere.
  effects evict(const std::string& why);
  /// A notify value of a landed slice (for counters only: prefill-done is what counts).
  void on_slice_landed(std::uint64_t value);

  /// Where the pool sits, once the transport revealed it (the key comes with a grant).
  void set_region(kv_region region) { region_ = region; }

  /// True when step() has sequences to decode (running and inside their window) and the
  /// device is not busy with a modelled step.
  [[nodiscard]] bool has_work() const;
  /// One decode step over up to max_batch running sequences inside their window (round
  /// robin): samples one token each and streams it.
  effects step(time_point now);

  [[nodiscard]] const decode_stats& stats() const { return stats_; }
  [[nodiscard]] std::size_t active() const { return attempts_.size(); }
  /// Attempts kept for a router that may claim them.
  [[nodiscard]] std::size_t orphans() const;
  /// Running sequences (one per choice of each running attempt).
  [[nodiscard]] std::size_t running() const { return running_.size(); }
  /// Running sequences waiting for a window (their client reads slowly).
  [[nodiscard]] std::size_t parked() const;
  /// Blocks neither held nor promised to an attempt.
  [[nodiscard]] std::size_t uncommitted_blocks() const;
  /// Blocks held by cancelled attempts whose writer has not ended yet.
  [[nodiscard]] std::size_t quarantined_blocks() const;

 private:
  using key = std::pair<wire::request_id, std::uint32_t>;
  enum class phase : std::uint8_t { awaiting_kv, running, quarantined };
  /// One choice of the request the attempt serves: its own sequence (sharing the prompt's
  /// full blocks with the other lanes), sampler and position.
  struct lane {
    std::uint32_t choice = 0;
    engine::sequence_id sequence{};
    bool holds_sequence = false;
    std::optional<engine::sampler> pick;
    std::int32_t last_token = 0;  ///< the next decode input
    std::uint32_t generated = 0;  ///< tokens of this choice sampled so far (all attempts)
    bool done = false;
    /// The choice's tokens after the prompt: the admit's delivered ones, then each one
    /// sampled here; history[i] sits at position prompt_length + i.
    std::vector<std::int32_t> history;
    /// Log-probabilities of the tokens sampled here (when the sampling asks), in order.
    std::vector<wire::token_logprobs> logprobs;
    std::optional<wire::finish_reason> finished;  ///< how it ended (kept while orphaned)
  };
  struct attempt {
    wire::actor_address router;
    std::string writer;                ///< empty: prefilled here
    std::vector<std::int32_t> tokens;  ///< the admit's tokens
    std::uint32_t prompt_length = 0;
    std::uint32_t max_tokens = 0;  ///< per choice
    wire::sampling params;
    phase state = phase::awaiting_kv;
    std::vector<lane> lanes;    ///< lanes[0] holds the reserved sequence while awaiting KV
    std::uint32_t limit = 0;    ///< no token at a position >= limit (the stream window)
    std::size_t committed = 0;  ///< blocks this attempt may grow to
    std::uint64_t timer = 0;
    bool orphaned = false;  ///< its router is gone: kept for a claim until `timer`
  };
  /// A running lane: (attempt, index in its lanes).
  using lane_key = std::pair<key, std::size_t>;

  [[nodiscard]] std::size_t blocks_for(std::size_t positions) const;
  /// Ends attempt `k`; one waiting for its KV from a prefill node tells it (cancel) and
  /// stays quarantined until the prefill's answer.
  void end_waiting(const key& k, const std::string& why, effects& out);
  /// The blocks admitting `m` commits (the prompt's full blocks once, the rest per choice),
  /// or why it cannot be admitted (a malformed admit: invalid_argument; no room in the
  /// pool: overloaded).
  [[nodiscard]] expected<std::size_t> blocks_to_admit(const wire::admit& m) const;
  /// The prefill job for an admitted `a`: its reserved blocks are the KV target.
  [[nodiscard]] wire::prefill prefill_job(const wire::admit& m, const attempt& a) const;
  /// The next step's token would sit inside the attempt's window.
  [[nodiscard]] bool may_step(const attempt& a, const lane& l) const;
  /// Prefills `a` locally from its tokens and samples each lane's first token.
  effects prefill_here(const key& k, attempt& a, time_point now);
  /// With lanes[0] holding the prompt's KV: forks the other lanes' sequences, gives each
  /// lane its sampler, and streams each lane's first token.
  effects start_lanes(const key& k, attempt& a, std::span<const std::int32_t> first_tokens,
                      std::span<const wire::token_logprobs> logprobs);
  /// `out` as is, or held until `modelled` has passed (a timer whose id is in held_).
  effects publish(effects out, std::chrono::nanoseconds modelled, time_point now);
  /// Handles `token` sampled for lane `index` of `a`: stream, finish or continue.
  effects emit(const key& k, attempt& a, std::size_t index, std::int32_t token,
               std::optional<wire::token_logprobs> logprobs);
  /// Lane `index` is over: its sequence goes; the attempt goes with its last lane.
  void end_lane(const key& k, attempt& a, std::size_t index);
  /// Lane `index` is over: its sequence goes (the attempt stays).
  void close_lane(const key& k, attempt& a, std::size_t index);
  effects fail(const key& k, errc code, std::string message);
  /// The prefill writer on `node` is gone: its attempts here end.
  effects writer_gone(const std::string& node);
  /// The router on `node` is gone: its running attempts become orphans, the others end.
  effects router_gone(const std::string& node, time_point now);
  /// Sends `m` to the attempt's router unless it is orphaned (its router is gone).
  void to_router(const attempt& a, wire::body m, effects& out) const;
  /// Hands `a` (at key `k`) over to the claimer as attempt `number`; false when none of its
  /// lanes can serve the claim (then it is released).
  bool hand_over(const key& k, const wire::claim& m, const wire::actor_address& from,
                 std::uint32_t number, effects& out, wire::claimed& reply);
  void release(const key& k);
  void quarantine_or_release(const key& k);

  engine::device& engine_;
  wire::actor_address self_;
  kv_region region_;
  decode_config config_;
  std::map<key, attempt> attempts_;
  std::vector<lane_key> running_;  ///< round-robin order of running lanes
  std::size_t next_ = 0;           ///< where the next step's batch starts in running_
  std::size_t committed_ = 0;
  std::uint64_t next_timer_ = 0;
  std::map<std::uint64_t, key> timers_;
  std::map<std::uint64_t, std::vector<outgoing>> held_;  ///< sends waiting for modelled time
  decode_stats stats_;
};

}  // namespace baton::actors
