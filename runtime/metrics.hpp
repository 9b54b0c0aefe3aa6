#pragma once

// A metrics registry: counters, gauges and histograms, rendered as Prometheus text on a
// node's admin port. Registration takes a lock; updating a metric is lock-free and safe
// from any thread. Metrics live as long as the registry; references stay valid.

#include <atomic>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace baton::runtime {

using metric_labels = std::vector<std::pair<std::string, std::string>>;

/// Monotonically increasing count (requests, bytes, rejections).
class counter {
 public:
  void add(std::uint64_t n = 1) noexcept { value_.fetch_add(n, std::memory_order_relaxed); }
  [[nodiscard]] std::uint64_t value() const noexcept { return value_.load(); }

 private:
  std::atomic<std::uint64_t> value_{0};
};

/// A value that goes up and down (queue depth, free KV blocks).
class gauge {
 public:
  void set(double v) noexcept { value_.store(v, std::memory_order_relaxed); }
  void add(double delta) noexcept { value_.fetch_add(delta, std::memory_order_relaxed); }
  [[nodiscard]] double value() const noexcept { return value_.load(); }

 private:
  std::atomic<double> value_{0.0};
};

/// Observations counted into buckets with fixed upper bounds (latencies, sizes).
class histogram {
 public:
  /// `bounds` are upper bounds, strictly increasing; +Inf is implied.
  explicit histogram(std::vector<double> bounds);

  void observe(double v) noexcept;
  [[nodiscard]] const std::vector<double>& bounds() const noexcept { return bounds_; }
  /// Observations <= bounds()[i] (cumulative, as Prometheus reports them); i ==
  /// bounds().size() gives the total count.
  [[nodiscard]] std::uint64_t cumulative_count(std::size_t i) const noexcept;
  [[nodiscard]] double sum() const noexcept { return sum_.load(); }

 private:
  std::vector<double> bounds_;
  std::deque<std::atomic<std::uint64_t>> buckets_;  // one per bound, plus +Inf
  std::atomic<double> sum_{0.0};
};

/// Buckets from `start` growing by `factor`: exponential_bounds(0.1, 2, 4) = .1 .2 .4 .8
[[nodiscard]] std::vector<double> exponential_bounds(double start, double factor, int count);

class metrics_registry {
 public:
  /// The metric called `name` with `labels`, created on first use. Names follow
  /// Prometheus rules ([a-zA-Z_:][a-zA-Z0-9_:]*) and end in their unit
  /// (`baton_ttft_seconds`, `baton_frames_rejected_total`). Asking for an existing name
  /// with another type is a programming error (BATON_CHECK).
  counter& get_counter(std::string_view name, std::string_view help, metric_labels labels = {});
  gauge& get_gauge(std::string_view name, std::string_view help, metric_labels labels = {});
  histogram& get_histogram(std::string_view name, std::string_view help, std::vector<double> bounds,
                           metric_labels labels = {});

  /// Every metric in the Prometheus text exposition format (version 0.0.4).
  [[nodiscard]] std::string prometheus_text() const;

 private:
  enum class kind : std::uint8_t { counter, gauge, histogram };
  struct entry {
    std::string name;
    std::string help;
    metric_labels labels;
    kind type;
    std::size_t index;  // into the deque of its type
  };
  entry& find_or_add(std::string_view name, std::string_view help, metric_labels labels, kind type,
                     bool& added);

  mutable std::mutex mutex_;
  std::vector<entry> entries_;
  std::deque<counter> counters_;
  std::deque<gauge> gauges_;
  std::deque<histogram> histograms_;
};

/// Prometheus text of other nodes, merged for one exposition (the router's /metrics shows
/// its workers' queue depths, KV pools and transfers): only the families whose names start
/// with one of `prefixes` are kept, each once (HELP and TYPE from the first node that has
/// it), every sample labelled node="NAME". `texts` pairs a node name with its text.
[[nodiscard]] std::string merge_node_metrics(
    const std::vector<std::pair<std::string, std::string>>& texts,
    const std::vector<std::string>& prefixes);

}  // namespace baton::runtime
