#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "base/error.hpp"
#include "engine/kernels.hpp"
#include "engine/kv_cache.hpp"
#include "engine/model.hpp"
#include "engine/thread_pool.hpp"

namespace baton::engine {

/// The engine's version; part of the numerics fingerprint.
inline constexpr const char* engine_version = "baton-cpu-engine 0.1.0";

/// "<engine_version> kernel=<path>": nodes promise bit-identical numbers to each other only
/// when their fingerprints are equal; the join handshake compares them.
[[nodiscard]] std::string numerics_fingerprint(kernel_path path);

enum class sequence_id : std::uint32_t {};

struct engine_options {
  std::size_t threads = 2;        ///< participants in each parallel step (>= 1)
  std::size_t block_tokens = 16;  ///< positions per KV block
  std::size_t max_sequences = 8;  ///< live sequences at once
  /// Blocks in the KV pool, allocated and zeroed up front; 0 means enough for
  /// max_sequences sequences of seq_len positions each (with kv_memory: as many as fit).
  std::size_t kv_blocks = 0;
  /// When non-empty, the KV pool lives here instead of in memory the engine allocates:
  /// caller-owned (typically a transport-registered region), aligned for float, outliving
  /// the engine. Block b then starts at byte b * pool().layout().block_bytes().
  std::span<std::byte> kv_memory;
  std::size_t max_batch_tokens = 256;  ///< rows per internal forward pass (a memory bound)
  std::optional<kernel_path> kernel;   ///< default: the best this CPU supports
  /// Steps with fewer multiply-adds run on the calling thread alone, since waking the
  /// workers costs more than it saves. Never changes results (tests set 0).
  std::size_t min_parallel_work = std::size_t{1} << 19;
};

/// Told during prefill that positions [first_position, end_position) of layer `layer` are
/// in the KV pool for good. Runs on the engine's calling thread; must not call the engine.
using layer_hook =
    std::function<void(std::size_t layer, std::size_t first_position, std::size_t end_position)>;

/// One decode step's input for one sequence.
struct decode_input {
  sequence_id sequence;
  std::int32_t token;
};

/// The CPU reference engine: real fp32 arithmetic on a llama2.c model, a paged KV cache
/// and continuous batching. Bit-exact: each number a sequence sees depends only on its
/// own tokens and the kernel path, never on batch neighbours, prompt chunking, whether a
/// position ran in prefill or decode, or the thread count.
///
/// Not thread-safe: one owner calls it; it uses its own worker threads internally. The
/// model passed to create() must outlive the engine.
class cpu_engine {
 public:
  [[nodiscard]] static expected<std::unique_ptr<cpu_engine>> create(const model& m,
                                                                    const engine_options& options);
  /// Only create() can make this key; the constructor is public for make_unique.
  class passkey {
    friend class cpu_engine;
    passkey() = default;
  };
  cpu_engine(passkey key, const model& m, const engine_options& options, kernel_path path);
  cpu_engine(const cpu_engine&) = delete;
  cpu_engine& operator=(const cpu_engine&) = delete;
  ~cpu_engine();

  /// "<engine_version> kernel=<path>": bit-identity holds among equal fingerprints.
  [[nodiscard]] std::string fingerprint() const;
  [[nodiscard]] kernel_path kernel() const { return kernel_; }
  [[nodiscard]] const model_config& config() const { return config_; }

  /// A new, empty sequence; errc::overloaded when max_sequences are live.
  [[nodiscard]] expected<sequence_id> add_sequence();
  /// A new sequence holding `sequence`'s positions, for another choice of its request:
  /// full KV blocks shared, the partly filled last one copied (kv_pool::fork).
  /// errc::overloaded when sequence slots or KV blocks run out.
  [[nodiscard]] expected<sequence_id> fork_sequence(sequence_id sequence);
  /// Ends `sequence` and frees its KV blocks. Unknown ids are a programming error.
  void remove_sequence(sequence_id sequence);
  /// Positions already in the sequence's KV cache.
  [[nodiscard]] std::size_t length(sequence_id sequence) const;

  /// Appends `tokens` (at least one) at the sequence's next positions, as matrix-matrix
  /// work, and returns the logits (vocab_size floats) after the last one. The span is
  /// valid until the next call. Fails without side effects with errc::invalid_argument
  /// (bad token, past seq_len) or errc::overloaded (no free KV blocks).
  [[nodiscard]] expected<std::span<const float>> prefill(sequence_id sequence,
                                                         std::span<const std::int32_t> tokens);

  /// prefill() that reports progress layer by layer, so KV can ship while later layers
  /// compute. The prompt runs in chunks of at most max_batch_tokens positions; for each
  /// chunk [a, b), in order, on_layer(layer, a, b) is called for layer 0, 1, ... right
  /// after that layer's keys and values of positions [a, b) are stored, before anything
  /// else of that layer or the next is computed. From then on those positions of that
  /// layer never change; the slice (block, layer) of a block is complete once the calls
  /// for `layer` have covered every position of the block, or up to the prompt's end
  /// (slots past the end stay zero until decode writes them). Positions before this
  /// prefill were final already. No call is made when prefill fails; results are
  /// bit-identical to prefill() without a hook.
  [[nodiscard]] expected<std::span<const float>> prefill(sequence_id sequence,
                                                         std::span<const std::int32_t> tokens,
                                                         const layer_hook& on_layer);

  /// One step for a batch of distinct sequences; returns batch.size() x vocab_size logits
  /// in batch order, valid until the next call. Errors as prefill().
  [[nodiscard]] expected<std::span<const float>> decode(std::span<const decode_input> batch);

  /// A sequence whose first `length` positions will arrive as KV from elsewhere (see
  /// kv_transfer.hpp): its blocks are allocated now, their contents are the caller's to
  /// fill before the first decode step. errc::overloaded when slots or blocks run out,
  /// errc::invalid_argument when `length` exceeds seq_len.
  [[nodiscard]] expected<sequence_id> reserve_sequence(std::size_t length);

  /// The KV pool (its bytes are what the transport registers).
  [[nodiscard]] kv_pool& pool() { return *pool_; }
  [[nodiscard]] const kv_pool& pool() const { return *pool_; }
  /// The block table of `sequence`: block i holds positions [i*block_tokens, ...).
  [[nodiscard]] std::span<const block_id> blocks(sequence_id sequence) const;

 private:
  struct row {
    std::size_t sequence;
    std::int32_t token;
    std::size_t position;
  };
  struct sequence_state;
  struct scratch;
  /// Zeroed anonymous memory on 2 MiB boundaries, advised to use transparent huge pages.
  class huge_buffer;

  /// Points weights_ at a huge-page copy of the model's matrices (or at the model).
  void copy_weights();
  [[nodiscard]] expected<void> admit(std::span<const row> rows);
  /// `on_layer`, when set, is told after each layer's KV of `rows` is stored.
  void forward(std::span<const row> rows, std::span<const std::size_t> logit_rows, float* logits,
               const layer_hook* on_layer = nullptr);
  void attention(std::span<const row> rows, std::size_t layer);
  /// Rows of one sequence at consecutive positions that attention handles together.
  static constexpr std::size_t max_group_rows = 4;
  /// Attention of heads [head_begin, head_end) for rows[first, first + count), one
  /// sequence at consecutive positions; `att` has max_group_rows x n_heads x seq_len.
  void attend(std::span<const row> rows, std::size_t first, std::size_t count,
              std::size_t head_begin, std::size_t head_end, std::size_t layer, float* att);
  void store_kv(std::span<const row> rows, std::size_t layer);
  [[nodiscard]] sequence_state& state(sequence_id sequence);

  const model& model_;
  model_config config_;
  engine_options options_;
  kernel_path kernel_;
  /// The weight matrices, copied from the model's file mapping into huge pages so their
  /// stream through the matmuls does not take a TLB miss every 4 KiB; weights_ points
  /// into it (norm vectors and the embedding stay in the model).
  std::unique_ptr<huge_buffer> weight_memory_;
  model_weights weights_;
  std::unique_ptr<thread_pool> threads_;
  /// The KV pool's memory when the caller gives none (declared before pool_, which uses it).
  std::unique_ptr<huge_buffer> kv_memory_;
  std::unique_ptr<kv_pool> pool_;
  std::vector<sequence_state> sequences_;
  std::unique_ptr<scratch> scratch_;
  std::vector<float> logits_;
};

}  // namespace baton::engine
