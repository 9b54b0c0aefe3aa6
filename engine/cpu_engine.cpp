#include "engine/cpu_engine.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>

#include <sys/mman.h>

#include <fmt/format.h>

#include "base/check.hpp"

namespace baton::engine {

struct cpu_engine::sequence_state {
  bool live = false;
  std::size_t length = 0;
  std::vector<block_id> blocks;
};

/// Activations for up to max_batch_tokens rows, plus one attention row per thread.
struct cpu_engine::scratch {
  std::vector<float> x, xb, xb2, q, k, v, hb, hb2;
  std::vector<float> rope;  ///< per row: cos, sin of each pair of a head
  std::vector<std::vector<float>> att;
};

class cpu_engine::huge_buffer {
 public:
  /// At least `bytes` zeroed, committed bytes; nullptr data() when mmap fails.
  explicit huge_buffer(std::size_t bytes) {
    constexpr std::size_t huge_page = std::size_t{2} << 20;
    size_ = (bytes + huge_page - 1) / huge_page * huge_page;
    mapped_bytes_ = size_ + huge_page;  // room to align the start
    void* p =
        ::mmap(nullptr, mapped_bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return;
    mapped_ = p;
    const auto start =
        (reinterpret_cast<std::uintptr_t>(p) + huge_page - 1) / huge_page * huge_page;
    data_ = reinterpret_cast<std::byte*>(start);
    // Advice only: without transparent huge pages the memory works the same, in 4 KiB pages.
    (void)::madvise(data_, size_, MADV_HUGEPAGE);
    // Commit the memory now, as an allocation would, rather than fault it in during the
    // first prefill or decode step that touches it.
    for (std::size_t offset = 0; offset < size_; offset += 4096) data_[offset] = std::byte{0};
  }
  huge_buffer(const huge_buffer&) = delete;
  huge_buffer& operator=(const huge_buffer&) = delete;
  ~huge_buffer() {
    if (mapped_ != nullptr) ::munmap(mapped_, mapped_bytes_);
  }

  [[nodiscard]] std::byte* data() const { return data_; }
  [[nodiscard]] std::size_t size() const { return size_; }

 private:
  void* mapped_ = nullptr;
  std::size_t mapped_bytes_ = 0;
  std::byte* data_ = nullptr;
  std::size_t size_ = 0;
};

namespace {

/// Copies `floats` floats from `from` to `to` and returns where `to` ends.
float* copy_floats(const float* from, std::size_t floats, float* to) {
  std::memcpy(to, from, floats * sizeof(float));
  return to + floats;
}

struct matmul_job {
  const float* w;
  const float* x;
  float* out;
  std::size_t n;     ///< input length
  std::size_t rows;  ///< output rows
};

void rmsnorm(float* out, const float* x, const float* weight, std::size_t size) {
  float ss = 0.0f;
  for (std::size_t j = 0; j < size; ++j) ss += x[j] * x[j];
  ss /= static_cast<float>(size);
  ss += 1e-5f;
  ss = 1.0f / std::sqrt(ss);
  for (std::size_t j = 0; j < size; ++j) out[j] = weight[j] * (ss * x[j]);
}

void softmax(float* x, std::size_t size) {
  float max_value = x[0];
  for (std::size_t i = 1; i < size; ++i) max_value = std::max(max_value, x[i]);
  float sum = 0.0f;
  for (std::size_t i = 0; i < size; ++i) {
    x[i] = std::exp(x[i] - max_value);
    sum += x[i];
  }
  for (std::size_t i = 0; i < size; ++i) x[i] /= sum;
}

/// cos and sin of llama2.c's RoPE angle for each pair (i, i+1) of a head at `position`,
/// computed exactly as llama2.c does, once per row instead of once per layer.
void rope_table(float* out, std::size_t head_size, std::size_t position) {
  for (std::size_t i = 0; i < head_size; i += 2) {
    const float freq =
        1.0f / std::pow(10000.0f, static_cast<float>(i) / static_cast<float>(head_size));
    const float val = static_cast<float>(static_cast<int>(position)) * freq;
    out[i] = std::cos(val);
    out[i + 1] = std::sin(val);
  }
}

/// llama2.c's RoPE: interleaved pairs, keys rotated for i < kv_dim.
void rope(float* q, float* k, std::size_t dim, std::size_t kv_dim, std::size_t head_size,
          const float* table) {
  for (std::size_t i = 0; i < dim; i += 2) {
    const float fcr = table[i % head_size];
    const float fci = table[i % head_size + 1];
    const int rotations = i < kv_dim ? 2 : 1;
    for (int v = 0; v < rotations; ++v) {
      float* vec = v == 0 ? q : k;
      const float v0 = vec[i];
      const float v1 = vec[i + 1];
      vec[i] = v0 * fcr - v1 * fci;
      vec[i + 1] = v0 * fci + v1 * fcr;
    }
  }
}

/// Hints [p, p + floats) into cache ahead of use: the hardware prefetcher does not follow
/// a sequence from one paged KV block to the next. Never faults, never changes a result.
void prefetch_floats(const float* p, std::size_t floats) {
  for (std::size_t i = 0; i < floats; i += 16) __builtin_prefetch(p + i, 0, 2);
}

/// Runs fn(i) for i in [0, count), split over the pool when `work` reaches `min_work`.
void for_each_row(thread_pool& pool, std::size_t count, std::size_t work, std::size_t min_work,
                  const std::function<void(std::size_t)>& fn) {
  const std::size_t parts = work < min_work ? 1 : pool.size();
  const auto part = [&](std::size_t index) {
    const std::size_t per = (count + parts - 1) / parts;
    const std::size_t end = std::min(count, (index + 1) * per);
    for (std::size_t i = index * per; i < end; ++i) fn(i);
  };
  if (parts == 1) {
    part(0);
  } else {
    pool.run(part);
  }
}

/// Runs every job over `tokens` rows of input, splitting each job's output rows among
/// the pool's participants in tile-aligned ranges once the multiply-adds reach `min_work`.
void run_matmuls(thread_pool& pool, kernel_path path, std::span<const matmul_job> jobs,
                 std::size_t tokens, std::size_t min_work) {
  std::size_t work = 0;
  for (const auto& job : jobs) work += job.n * job.rows * tokens;
  const std::size_t parts = work < min_work ? 1 : pool.size();
  const auto part = [&](std::size_t index) {
    for (const auto& job : jobs) {
      const std::size_t per = (job.rows + parts * 4 - 1) / (parts * 4) * 4;
      const std::size_t begin = std::min(job.rows, index * per);
      const std::size_t end = std::min(job.rows, begin + per);
      if (begin < end) matmul(path, job.w, job.x, job.out, job.n, tokens, job.rows, begin, end);
    }
  };
  if (parts == 1) {
    part(0);
  } else {
    pool.run(part);
  }
}

}  // namespace

cpu_engine::cpu_engine(passkey /*key*/, const model& m, const engine_options& options,
                       kernel_path path)
    : model_(m), config_(m.config()), options_(options), kernel_(path) {
  copy_weights();
}

void cpu_engine::copy_weights() {
  const model_weights& w = model_.weights();
  weights_ = w;
  const auto dim = static_cast<std::size_t>(config_.dim);
  const auto kv_dim = static_cast<std::size_t>(config_.kv_dim());
  const auto hidden = static_cast<std::size_t>(config_.hidden_dim);
  const auto vocab = static_cast<std::size_t>(config_.vocab_size);
  // Every matrix of a layer with its float count; copied in this order.
  using matrix = const float* layer_weights::*;
  const std::pair<matrix, std::size_t> matrices[] = {
      {&layer_weights::wq, dim * dim},    {&layer_weights::wk, kv_dim * dim},
      {&layer_weights::wv, kv_dim * dim}, {&layer_weights::wo, dim * dim},
      {&layer_weights::w1, hidden * dim}, {&layer_weights::w2, dim * hidden},
      {&layer_weights::w3, hidden * dim}};
  std::size_t per_layer = 0;
  for (const auto& [m, floats] : matrices) per_layer += floats;
  const std::size_t floats = w.layers.size() * per_layer + vocab * dim;
  auto memory = std::make_unique<huge_buffer>(floats * sizeof(float));
  if (memory->data() == nullptr) return;  // keep reading the model's mapping
  auto* to = reinterpret_cast<float*>(memory->data());
  for (std::size_t l = 0; l < w.layers.size(); ++l) {
    for (const auto& [m, n] : matrices) {
      weights_.layers[l].*m = to;
      to = copy_floats(w.layers[l].*m, n, to);
    }
  }
  weights_.classifier = to;
  copy_floats(w.classifier, vocab * dim, to);
  weight_memory_ = std::move(memory);
}

cpu_engine::~cpu_engine() = default;

expected<std::unique_ptr<cpu_engine>> cpu_engine::create(const model& m,
                                                         const engine_options& options) {
  const kernel_path path = options.kernel.value_or(best_kernel_path());
  if (!supported(path)) {
    return fail(errc::invalid_argument,
                fmt::format("kernel path {} is not supported by this CPU", to_string(path)));
  }
  if (options.threads == 0 || options.block_tokens == 0 || options.max_sequences == 0 ||
      options.max_batch_tokens == 0) {
    return fail(errc::invalid_argument,
                "engine options: threads, block_tokens, max_sequences and max_batch_tokens "
                "must be positive");
  }
  auto e = std::make_unique<cpu_engine>(passkey{}, m, options, path);
  const model_config& c = e->config_;
  const auto seq_len = static_cast<std::size_t>(c.seq_len);
  const kv_layout layout{static_cast<std::size_t>(c.n_layers), static_cast<std::size_t>(c.kv_dim()),
                         static_cast<std::size_t>(c.head_size()), options.block_tokens};
  const std::size_t blocks_per_sequence =
      (seq_len + options.block_tokens - 1) / options.block_tokens;
  const std::size_t fit = options.kv_memory.size() / layout.block_bytes();
  std::size_t n_blocks =
      options.kv_blocks != 0 ? options.kv_blocks : blocks_per_sequence * options.max_sequences;
  if (!options.kv_memory.empty()) {
    if (reinterpret_cast<std::uintptr_t>(options.kv_memory.data()) % alignof(float) != 0) {
      return fail(errc::invalid_argument, "engine options: kv_memory is not aligned for float");
    }
    if (options.kv_blocks == 0) n_blocks = fit;
    if (n_blocks == 0 || n_blocks > fit) {
      return fail(errc::invalid_argument,
                  fmt::format("engine options: kv_memory of {} bytes holds {} blocks of {} bytes, "
                              "kv_blocks wants {}",
                              options.kv_memory.size(), fit, layout.block_bytes(),
                              options.kv_blocks == 0 ? std::size_t{1} : options.kv_blocks));
    }
  }
  e->threads_ = std::make_unique<thread_pool>(options.threads);
  std::span<std::byte> kv_memory = options.kv_memory;
  if (kv_memory.empty()) {
    // Huge pages here too: each decode step streams every sequence's KV.
    e->kv_memory_ = std::make_unique<huge_buffer>(n_blocks * layout.block_bytes());
    if (e->kv_memory_->data() != nullptr)
      kv_memory = {e->kv_memory_->data(), e->kv_memory_->size()};
  }
  e->pool_ = kv_memory.empty() ? std::make_unique<kv_pool>(layout, n_blocks)
                               : std::make_unique<kv_pool>(layout, n_blocks, kv_memory);
  e->sequences_.resize(options.max_sequences);
  auto s = std::make_unique<scratch>();
  const std::size_t rows = options.max_batch_tokens;
  const auto dim = static_cast<std::size_t>(c.dim);
  const auto hidden = static_cast<std::size_t>(c.hidden_dim);
  s->x.resize(rows * dim);
  s->xb.resize(rows * dim);
  s->xb2.resize(rows * dim);
  s->q.resize(rows * dim);
  s->k.resize(rows * layout.kv_dim);
  s->v.resize(rows * layout.kv_dim);
  s->hb.resize(rows * hidden);
  s->hb2.resize(rows * hidden);
  s->rope.resize(rows * static_cast<std::size_t>(c.head_size()));
  s->att.assign(options.threads,
                std::vector<float>(max_group_rows * seq_len * static_cast<std::size_t>(c.n_heads)));
  e->scratch_ = std::move(s);
  return e;
}

std::string numerics_fingerprint(kernel_path path) {
  return fmt::format("{} kernel={}", engine_version, to_string(path));
}

std::string cpu_engine::fingerprint() const {
  return numerics_fingerprint(kernel_);
}

cpu_engine::sequence_state& cpu_engine::state(sequence_id sequence) {
  const auto index = static_cast<std::size_t>(sequence);
  BATON_CHECK(index < sequences_.size() && sequences_[index].live, "unknown sequence id");
  return sequences_[index];
}

expected<sequence_id> cpu_engine::add_sequence() {
  for (std::size_t i = 0; i < sequences_.size(); ++i) {
    if (!sequences_[i].live) {
      sequences_[i] = sequence_state{true, 0, {}};
      return static_cast<sequence_id>(i);
    }
  }
  return fail(errc::overloaded,
              fmt::format("engine: all {} sequence slots are in use", sequences_.size()));
}

expected<sequence_id> cpu_engine::reserve_sequence(std::size_t length) {
  if (length > static_cast<std::size_t>(config_.seq_len)) {
    return fail(errc::invalid_argument,
                fmt::format("reserve: length {} exceeds seq_len {}", length, config_.seq_len));
  }
  const std::size_t needed = (length + options_.block_tokens - 1) / options_.block_tokens;
  if (needed > pool_->free_blocks()) {
    return fail(errc::overloaded,
                fmt::format("kv pool: {} blocks needed, {} free", needed, pool_->free_blocks()));
  }
  auto id = add_sequence();
  if (!id) return id;
  sequence_state& s = state(*id);
  for (std::size_t i = 0; i < needed; ++i) s.blocks.push_back(*pool_->allocate());
  s.length = length;
  return id;
}

expected<sequence_id> cpu_engine::fork_sequence(sequence_id sequence) {
  const std::size_t length = state(sequence).length;
  auto blocks = pool_->fork(state(sequence).blocks, length);
  if (!blocks) return tl::unexpected(blocks.error());
  auto id = add_sequence();
  if (!id) {
    for (const block_id b : *blocks) pool_->release(b);
    return id;
  }
  sequence_state& s = state(*id);
  s.blocks = std::move(*blocks);
  s.length = length;
  return id;
}

void cpu_engine::remove_sequence(sequence_id sequence) {
  sequence_state& s = state(sequence);
  for (const block_id block : s.blocks) pool_->release(block);
  s = sequence_state{};
}

std::size_t cpu_engine::length(sequence_id sequence) const {
  const auto index = static_cast<std::size_t>(sequence);
  BATON_CHECK(index < sequences_.size() && sequences_[index].live, "unknown sequence id");
  return sequences_[index].length;
}

std::span<const block_id> cpu_engine::blocks(sequence_id sequence) const {
  const auto index = static_cast<std::size_t>(sequence);
  BATON_CHECK(index < sequences_.size() && sequences_[index].live, "unknown sequence id");
  return sequences_[index].blocks;
}

expected<void> cpu_engine::admit(std::span<const row> rows) {
  std::size_t needed = 0;
  for (const row& r : rows) {
    if (r.token < 0 || r.token >= config_.vocab_size) {
      return fail(errc::invalid_argument, fmt::format("token {} is outside the vocabulary "
                                                      "(0..{})",
                                                      r.token, config_.vocab_size - 1));
    }
    if (r.position >= static_cast<std::size_t>(config_.seq_len)) {
      return fail(errc::invalid_argument, fmt::format("position {} is past the model's seq_len {}",
                                                      r.position, config_.seq_len));
    }
    // Rows of one sequence continue its positions in order, so a row needs a new block
    // exactly when it is the first position of a block the sequence does not have yet.
    const auto& s = sequences_[r.sequence];
    if (r.position % options_.block_tokens == 0 &&
        r.position / options_.block_tokens >= s.blocks.size()) {
      ++needed;
    }
  }
  if (needed > pool_->free_blocks()) {
    return fail(errc::overloaded,
                fmt::format("kv pool: {} blocks needed, {} free", needed, pool_->free_blocks()));
  }
  for (const row& r : rows) {
    auto& s = sequences_[r.sequence];
    if (r.position / options_.block_tokens >= s.blocks.size()) {
      s.blocks.push_back(*pool_->allocate());
    }
  }
  return {};
}

void cpu_engine::store_kv(std::span<const row> rows, std::size_t layer) {
  const kv_layout& layout = pool_->layout();
  const std::size_t bt = layout.block_tokens;
  const std::size_t hs = layout.head_size;
  const std::size_t kv_heads = layout.kv_dim / hs;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const row& r = rows[i];
    const block_id block = sequences_[r.sequence].blocks[r.position / bt];
    float* keys = pool_->slice(block, layer).data();
    float* values = keys + bt * layout.kv_dim;
    const std::size_t slot = r.position % bt;
    for (std::size_t h = 0; h < kv_heads; ++h) {
      std::memcpy(keys + (h * bt + slot) * hs, scratch_->k.data() + i * layout.kv_dim + h * hs,
                  hs * sizeof(float));
      std::memcpy(values + (h * bt + slot) * hs, scratch_->v.data() + i * layout.kv_dim + h * hs,
                  hs * sizeof(float));
    }
  }
}

void cpu_engine::attend(std::span<const row> rows, std::size_t first, std::size_t count,
                        std::size_t head_begin, std::size_t head_end, std::size_t layer,
                        float* att) {
  const auto dim = static_cast<std::size_t>(config_.dim);
  const auto head_size = static_cast<std::size_t>(config_.head_size());
  const std::size_t kv_mul =
      static_cast<std::size_t>(config_.n_heads) / static_cast<std::size_t>(config_.n_kv_heads);
  const std::size_t kv_dim = pool_->layout().kv_dim;
  const std::size_t bt = options_.block_tokens;
  const auto seq_len = static_cast<std::size_t>(config_.seq_len);
  const float scale = std::sqrt(static_cast<float>(head_size));
  const auto& table = sequences_[rows[first].sequence].blocks;
  const std::size_t longest = rows[first + count - 1].position + 1;
  const std::size_t n_blocks = (longest + bt - 1) / bt;
  const float* q = scratch_->q.data() + first * dim;
  // Scores of query j for head h live at att[(h * max_group_rows + j) * seq_len + t].
  const auto scores = [&](std::size_t h, std::size_t j) {
    return att + (h * max_group_rows + j) * seq_len;
  };
  // While one head's keys (values: offset bt * kv_dim) of a block are read, the next ones
  // in scan order are fetched into L2: the hardware prefetcher stops at page boundaries
  // and the blocks are scattered.
  const std::size_t kv_head_floats = bt * head_size;
  const auto prefetch_next = [&](std::size_t b, std::size_t h, std::size_t offset) {
    std::size_t next_b = b;
    std::size_t next_h = h + 1;
    if (next_h == head_end) {
      next_b = b + 1;
      next_h = head_begin;
      if (next_b == n_blocks) return;
    } else if (next_h / kv_mul == h / kv_mul) {
      return;  // the same key/value head again
    }
    prefetch_floats(
        pool_->slice(table[next_b], layer).data() + offset + (next_h / kv_mul) * kv_head_floats,
        kv_head_floats);
  };
  // Block by block, then head by head: the heads' keys (and values) of one block are one
  // contiguous run. The group's queries share each key load; a query also scores keys
  // past its own position (they are stored already) and ignores them.
  for (std::size_t b = 0; b < n_blocks; ++b) {
    const float* keys = pool_->slice(table[b], layer).data();
    const std::size_t in_block = std::min(bt, longest - b * bt);
    for (std::size_t h = head_begin; h < head_end; ++h) {
      prefetch_next(b, h, 0);
      dot_tile(kernel_, keys + (h / kv_mul) * bt * head_size, head_size, in_block,
               q + h * head_size, dim, count, head_size, scores(h, 0) + b * bt, seq_len);
    }
  }
  for (std::size_t j = 0; j < count; ++j) {
    const std::size_t positions = rows[first + j].position + 1;
    float* out = scratch_->xb.data() + (first + j) * dim;
    for (std::size_t h = head_begin; h < head_end; ++h) {
      float* a = scores(h, j);
      for (std::size_t t = 0; t < positions; ++t) a[t] /= scale;
      softmax(a, positions);
      std::fill(out + h * head_size, out + (h + 1) * head_size, 0.0f);
    }
  }
  for (std::size_t b = 0; b < n_blocks; ++b) {
    const float* values = pool_->slice(table[b], layer).data() + bt * kv_dim;
    for (std::size_t j = 0; j < count; ++j) {
      const std::size_t positions = rows[first + j].position + 1;
      if (positions <= b * bt) continue;
      const std::size_t in_block = std::min(bt, positions - b * bt);
      float* out = scratch_->xb.data() + (first + j) * dim;
      for (std::size_t h = head_begin; h < head_end; ++h) {
        if (j == 0) prefetch_next(b, h, bt * kv_dim);
        weighted_sum(kernel_, scores(h, j) + b * bt, values + (h / kv_mul) * bt * head_size,
                     head_size, in_block, head_size, out + h * head_size);
      }
    }
  }
}

void cpu_engine::attention(std::span<const row> rows, std::size_t layer) {
  const auto dim = static_cast<std::size_t>(config_.dim);
  const auto heads = static_cast<std::size_t>(config_.n_heads);
  // Groups of up to max_group_rows consecutive positions of one sequence (a prefill
  // chunk) share key loads; a decode batch makes groups of one.
  std::vector<std::pair<std::size_t, std::size_t>> groups;  // first row, count
  for (std::size_t i = 0; i < rows.size(); ++i) {
    if (!groups.empty()) {
      auto& [first, count] = groups.back();
      const row& previous = rows[first + count - 1];
      if (count < max_group_rows && rows[i].sequence == previous.sequence &&
          rows[i].position == previous.position + 1) {
        ++count;
        continue;
      }
    }
    groups.emplace_back(i, 1);
  }
  std::size_t work = 0;
  for (const row& r : rows) work += (r.position + 1) * dim * 2;
  const std::size_t parts = work < options_.min_parallel_work ? 1 : threads_->size();
  // Whole groups per item when there are enough of them, else single heads.
  const std::size_t heads_per_item = groups.size() >= 2 * parts ? heads : 1;
  const std::size_t items_per_group = heads / heads_per_item;
  const std::size_t items = groups.size() * items_per_group;
  const auto part = [&](std::size_t index) {
    float* att = scratch_->att[index].data();
    const std::size_t per = (items + parts - 1) / parts;
    const std::size_t end = std::min(items, (index + 1) * per);
    for (std::size_t item = index * per; item < end; ++item) {
      const auto [first, count] = groups[item / items_per_group];
      const std::size_t h = (item % items_per_group) * heads_per_item;
      attend(rows, first, count, h, h + heads_per_item, layer, att);
    }
  };
  if (parts == 1) {
    part(0);
  } else {
    threads_->run(part);
  }
}

void cpu_engine::forward(std::span<const row> rows, std::span<const std::size_t> logit_rows,
                         float* logits, const layer_hook* on_layer) {
  const auto dim = static_cast<std::size_t>(config_.dim);
  const auto hidden = static_cast<std::size_t>(config_.hidden_dim);
  const std::size_t kv_dim = pool_->layout().kv_dim;
  const auto head_size = static_cast<std::size_t>(config_.head_size());
  const std::size_t n = rows.size();
  scratch& s = *scratch_;
  const model_weights& w = weights_;
  for (std::size_t i = 0; i < n; ++i) {
    std::memcpy(s.x.data() + i * dim,
                w.token_embedding + static_cast<std::size_t>(rows[i].token) * dim,
                dim * sizeof(float));
    rope_table(s.rope.data() + i * head_size, head_size, rows[i].position);
  }
  for (std::size_t layer = 0; layer < w.layers.size(); ++layer) {
    const layer_weights& lw = w.layers[layer];
    for (std::size_t i = 0; i < n; ++i) {
      rmsnorm(s.xb.data() + i * dim, s.x.data() + i * dim, lw.rms_att, dim);
    }
    const matmul_job qkv[] = {{lw.wq, s.xb.data(), s.q.data(), dim, dim},
                              {lw.wk, s.xb.data(), s.k.data(), dim, kv_dim},
                              {lw.wv, s.xb.data(), s.v.data(), dim, kv_dim}};
    run_matmuls(*threads_, kernel_, qkv, n, options_.min_parallel_work);
    for (std::size_t i = 0; i < n; ++i) {
      rope(s.q.data() + i * dim, s.k.data() + i * kv_dim, dim, kv_dim, head_size,
           s.rope.data() + i * head_size);
    }
    store_kv(rows, layer);
    // Callers pass rows of one sequence at consecutive positions when they set a hook.
    if (on_layer != nullptr) (*on_layer)(layer, rows.front().position, rows.back().position + 1);
    attention(rows, layer);
    const matmul_job wo[] = {{lw.wo, s.xb.data(), s.xb2.data(), dim, dim}};
    run_matmuls(*threads_, kernel_, wo, n, options_.min_parallel_work);
    for (std::size_t j = 0; j < n * dim; ++j) s.x[j] += s.xb2[j];
    for (std::size_t i = 0; i < n; ++i) {
      rmsnorm(s.xb.data() + i * dim, s.x.data() + i * dim, lw.rms_ffn, dim);
    }
    const matmul_job up[] = {{lw.w1, s.xb.data(), s.hb.data(), dim, hidden},
                             {lw.w3, s.xb.data(), s.hb2.data(), dim, hidden}};
    run_matmuls(*threads_, kernel_, up, n, options_.min_parallel_work);
    for_each_row(*threads_, n, n * hidden * 16, options_.min_parallel_work, [&](std::size_t i) {
      for (std::size_t j = i * hidden; j < (i + 1) * hidden; ++j) {
        float val = s.hb[j];
        val *= (1.0f / (1.0f + std::exp(-val)));
        val *= s.hb2[j];
        s.hb[j] = val;
      }
    });
    const matmul_job down[] = {{lw.w2, s.hb.data(), s.xb2.data(), hidden, dim}};
    run_matmuls(*threads_, kernel_, down, n, options_.min_parallel_work);
    for (std::size_t j = 0; j < n * dim; ++j) s.x[j] += s.xb2[j];
  }
  if (logit_rows.empty()) return;
  for (std::size_t i = 0; i < logit_rows.size(); ++i) {
    rmsnorm(s.xb.data() + i * dim, s.x.data() + logit_rows[i] * dim, w.rms_final, dim);
  }
  const matmul_job head[] = {
      {w.classifier, s.xb.data(), logits, dim, static_cast<std::size_t>(config_.vocab_size)}};
  run_matmuls(*threads_, kernel_, head, logit_rows.size(), options_.min_parallel_work);
}

expected<std::span<const float>> cpu_engine::prefill(sequence_id sequence,
                                                     std::span<const std::int32_t> tokens) {
  return prefill(sequence, tokens, layer_hook{});
}

expected<std::span<const float>> cpu_engine::prefill(sequence_id sequence,
                                                     std::span<const std::int32_t> tokens,
                                                     const layer_hook& on_layer) {
  sequence_state& s = state(sequence);
  if (tokens.empty()) return fail(errc::invalid_argument, "prefill: no tokens");
  std::vector<row> rows;
  rows.reserve(tokens.size());
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    rows.push_back({static_cast<std::size_t>(sequence), tokens[i], s.length + i});
  }
  if (auto ok = admit(rows); !ok) return tl::unexpected(ok.error());
  const auto vocab = static_cast<std::size_t>(config_.vocab_size);
  logits_.resize(vocab);
  const std::size_t chunk = options_.max_batch_tokens;
  for (std::size_t begin = 0; begin < rows.size(); begin += chunk) {
    const std::size_t count = std::min(chunk, rows.size() - begin);
    const bool last = begin + count == rows.size();
    const std::size_t last_row = count - 1;
    forward(std::span(rows).subspan(begin, count),
            last ? std::span<const std::size_t>(&last_row, 1) : std::span<const std::size_t>(),
            logits_.data(), on_layer ? &on_layer : nullptr);
  }
  s.length += tokens.size();
  return std::span<const float>(logits_);
}

expected<std::span<const float>> cpu_engine::decode(std::span<const decode_input> batch) {
  std::vector<row> rows;
  rows.reserve(batch.size());
  std::vector<bool> seen(sequences_.size(), false);
  for (const decode_input& in : batch) {
    const auto index = static_cast<std::size_t>(in.sequence);
    if (index >= sequences_.size() || !sequences_[index].live || seen[index]) {
      return fail(errc::invalid_argument,
                  fmt::format("decode: sequence {} is unknown or appears twice", index));
    }
    seen[index] = true;
    rows.push_back({index, in.token, sequences_[index].length});
  }
  if (auto ok = admit(rows); !ok) return tl::unexpected(ok.error());
  const auto vocab = static_cast<std::size_t>(config_.vocab_size);
  logits_.resize(batch.size() * vocab);
  const std::size_t chunk = options_.max_batch_tokens;
  std::vector<std::size_t> logit_rows(std::min(chunk, rows.size()));
  for (std::size_t i = 0; i < logit_rows.size(); ++i) logit_rows[i] = i;
  for (std::size_t begin = 0; begin < rows.size(); begin += chunk) {
    const std::size_t count = std::min(chunk, rows.size() - begin);
    forward(std::span(rows).subspan(begin, count), std::span(logit_rows).first(count),
            logits_.data() + begin * vocab);
  }
  for (const row& r : rows) ++sequences_[r.sequence].length;
  return std::span<const float>(logits_);
}

}  // namespace baton::engine
