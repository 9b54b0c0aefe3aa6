#pragma once

// The prefill role's logic, without CAF: computes prompts one at a time and ships each
// (layer, block) slice of KV to the decode node's reserved blocks as soon as that layer of
// that block is final, so the transfer overlaps the remaining layers' compute; then sends
// prefill-done with the first token and the per-block checksums (or abort), only after
// every write of the attempt has completed. An attempt serving several choices of a request
// (OpenAI's n) computes the prompt once and picks each choice's first token from it.

#include <cstdint>
#include <deque>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "actors/effects.hpp"
#include "base/error.hpp"
#include "engine/device.hpp"
#include "schemas/inference.hpp"

namespace baton::actors {

/// One RMA write of a KV slice, as the prefill asks for it. Offsets are relative to the
/// local pool's first byte (source) and to the target region (target).
struct slice_write {
  std::uint64_t tag = 0;  ///< echoed in on_write_done
  std::string node;       ///< the target node
  std::uint64_t source_offset = 0;
  std::uint64_t target_fabric_node = 0;
  std::uint64_t target_key = 0;
  std::uint64_t target_offset = 0;
  std::uint64_t length = 0;
  std::uint64_t notify = 0;  ///< delivered to the target once the bytes landed
};

/// Posts slice writes; the result of each comes back through on_write_done(tag, ...).
class slice_writer {
 public:
  virtual ~slice_writer() = default;
  virtual void post(const slice_write& write) = 0;
};

struct prefill_config {
  std::size_t max_queued = 64;  ///< prefill jobs waiting; beyond: refused overloaded
  /// Ship each (layer, block) slice as soon as it is final (true), or every slice once the
  /// whole prompt is computed (false: the serial baseline `baton bench disagg` measures).
  bool pipeline = true;
  /// Jobs held at once (computing or still writing): each holds an engine sequence, so
  /// this is at most the engine's max_sequences. Queued jobs wait for one to end.
  std::size_t max_in_flight = 8;
  /// Cancelled attempts remembered, so that a job arriving after its cancel is refused.
  std::size_t remembered_cancels = 4096;
};

struct prefill_stats {
  std::uint64_t jobs = 0;
  std::uint64_t refused = 0;
  std::uint64_t aborted = 0;
  std::uint64_t slices = 0;
  std::uint64_t bytes = 0;
  std::uint64_t write_failures = 0;
};

/// Modelled time: when the device reports one (an emulated device), the job counts as
/// computing until on_timer says the time has passed (its slices are posted at once), and
/// no other job starts meanwhile.
///
/// Not thread-safe; `engine` and `writer` must outlive this.
class prefill_state {
 public:
  prefill_state(engine::device& engine, wire::actor_address self, slice_writer& writer,
                prefill_config config = {});

  /// Queues the job (or refuses it with abort_attempt to its decode actor).
  effects on_prefill(const wire::actor_address& from, const wire::prefill& m);
  /// Drops a queued job of the request (of m.attempt only, unless 0); a running one ends in
  /// abort once its writes end. A decode node's cancel of an attempt with no job here (never
  /// arrived: refused from a buried incarnation, or lost) is answered with abort at once,
  /// so its quarantine ends: nothing will write. A cancelled attempt is remembered, and its
  /// job, should it arrive after all (over an older connection), is refused.
  effects on_cancel(const wire::actor_address& from, const wire::cancel& m);
  effects on_write_done(std::uint64_t tag, const expected<void>& status);
  /// Jobs whose decode node is gone are dropped (their writes fail on their own).
  effects on_node_gone(const std::string& node);

  /// The modelled compute time of job `id` has passed.
  effects on_timer(std::uint64_t id);

  /// True when run_next() has a job to compute, room to hold it and a device not busy.
  [[nodiscard]] bool has_work() const {
    return !queue_.empty() && jobs_.size() < config_.max_in_flight && busy_ == 0;
  }
  /// The job run_next() computes next (so a shell can time it).
  [[nodiscard]] const wire::prefill* next_job() const {
    return queue_.empty() ? nullptr : &queue_.front();
  }
  /// Computes the next queued job, posting slice writes while it runs.
  effects run_next(time_point now);

  [[nodiscard]] std::size_t queue_depth() const { return queue_.size(); }
  [[nodiscard]] std::size_t writing() const { return jobs_.size(); }
  [[nodiscard]] const prefill_stats& stats() const { return stats_; }

 private:
  struct job {
    wire::prefill request;
    bool computed = false;
    bool cancelled = false;
    std::optional<error> failure;
    engine::sequence_id sequence{};
    bool holds_sequence = false;
    std::size_t outstanding = 0;
    std::vector<std::uint32_t> first_tokens;     ///< one per choice
    std::vector<wire::token_logprobs> logprobs;  ///< one per choice, when asked
    std::vector<std::uint64_t> checksums;
  };

  /// Posts the slices of `layer` that became final with positions up to `end`.
  void post_layer(std::uint64_t id, job& j, std::size_t layer, std::size_t end,
                  std::vector<std::size_t>& next_block);
  /// Sends done or abort once the job is computed and no write is outstanding.
  effects maybe_finish(std::uint64_t id);

  engine::device& engine_;
  wire::actor_address self_;
  slice_writer& writer_;
  prefill_config config_;
  std::deque<wire::prefill> queue_;
  using attempt_key = std::pair<wire::request_id, std::uint32_t>;
  std::set<attempt_key> cancelled_;       ///< at most remembered_cancels, the newest
  std::deque<attempt_key> cancel_order_;  ///< of cancelled_, oldest first
  std::map<std::uint64_t, job> jobs_;     ///< computed (or computing) jobs with writes out
  std::uint64_t next_job_ = 0;
  std::uint64_t busy_ = 0;  ///< the job whose modelled compute time runs; 0: none
  prefill_stats stats_;
};

}  // namespace baton::actors
