#include "runtime/metrics.hpp"

#include <gtest/gtest.h>

namespace baton::runtime {
namespace {

TEST(Metrics, CountersGaugesAndHistogramsRenderAsPrometheusText) {
  metrics_registry registry;
  auto& ok =
      registry.get_counter("baton_requests_total", "Requests by outcome.", {{"outcome", "ok"}});
  auto& failed =
      registry.get_counter("baton_requests_total", "Requests by outcome.", {{"outcome", "failed"}});
  registry.get_gauge("baton_kv_free_blocks", "Free KV blocks.").set(480);
  auto& ttft =
      registry.get_histogram("baton_ttft_seconds", "Time to first token.", {0.01, 0.1, 1.0});
  ok.add(3);
  failed.add();
  ttft.observe(0.005);
  ttft.observe(0.05);
  ttft.observe(5.0);
  EXPECT_EQ(&ok, &registry.get_counter("baton_requests_total", "", {{"outcome", "ok"}}));

  EXPECT_EQ(registry.prometheus_text(),
            "# HELP baton_requests_total Requests by outcome.\n"
            "# TYPE baton_requests_total counter\n"
            "baton_requests_total{outcome=\"ok\"} 3\n"
            "baton_requests_total{outcome=\"failed\"} 1\n"
            "# HELP baton_kv_free_blocks Free KV blocks.\n"
            "# TYPE baton_kv_free_blocks gauge\n"
            "baton_kv_free_blocks 480\n"
            "# HELP baton_ttft_seconds Time to first token.\n"
            "# TYPE baton_ttft_seconds histogram\n"
            "baton_ttft_seconds_bucket{le=\"0.01\"} 1\n"
            "baton_ttft_seconds_bucket{le=\"0.1\"} 2\n"
            "baton_ttft_seconds_bucket{le=\"1\"} 2\n"
            "baton_ttft_seconds_bucket{le=\"+Inf\"} 3\n"
            "baton_ttft_seconds_sum 5.055\n"
            "baton_ttft_seconds_count 3\n");
}

TEST(Metrics, LabelValuesAreEscaped) {
  metrics_registry registry;
  registry.get_counter("x_total", "h", {{"reason", "bad \"quote\"\\\n"}}).add();
  EXPECT_NE(registry.prometheus_text().find(R"(x_total{reason="bad \"quote\"\\\n"} 1)"),
            std::string::npos)
      << registry.prometheus_text();
}

TEST(Metrics, WorkerMetricsMergeOnceWithANodeLabel) {
  metrics_registry a, b;
  a.get_gauge("baton_decode_kv_free_blocks", "free blocks").set(7);
  a.get_counter("baton_fabric_frames_total", "frames").add(3);
  b.get_gauge("baton_decode_kv_free_blocks", "free blocks").set(9);
  b.get_histogram("baton_prefill_compute_seconds", "compute", {0.1}, {{"kind", "x"}}).observe(0.05);
  const auto merged =
      merge_node_metrics({{"decode-0", a.prometheus_text()}, {"decode-1", b.prometheus_text()}},
                         {"baton_decode_", "baton_prefill_"});
  EXPECT_EQ(merged.find("baton_fabric_frames_total"), std::string::npos) << merged;
  const auto type = merged.find("# TYPE baton_decode_kv_free_blocks gauge");
  ASSERT_NE(type, std::string::npos) << merged;
  EXPECT_EQ(merged.find("# TYPE baton_decode_kv_free_blocks", type + 1), std::string::npos);
  EXPECT_NE(merged.find("baton_decode_kv_free_blocks{node=\"decode-0\"} 7"), std::string::npos);
  EXPECT_NE(merged.find("baton_decode_kv_free_blocks{node=\"decode-1\"} 9"), std::string::npos);
  EXPECT_NE(merged.find("baton_prefill_compute_seconds_bucket{node=\"decode-1\",kind=\"x\","),
            std::string::npos)
      << merged;
}

}  // namespace
}  // namespace baton::runtime
