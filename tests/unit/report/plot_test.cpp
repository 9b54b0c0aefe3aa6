// SVG figures: well-formed, escaped, numbers without exponents, every kind of mark.
#include "report/plot.hpp"

#include <numeric>
#include <string>

#include <gtest/gtest.h>

#include "report/stats.hpp"

namespace baton::report {
namespace {

std::size_t occurrences(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

TEST(Plot, AFigureOfEveryMarkIsWellFormed) {
  panel timeline{
      .id = "timeline", .title = "kills & <stalls>", .x_label = "s", .y_label = "request"};
  timeline.lines.push_back(
      line{.points = {{0, 0}, {1, 2}, {2, 1}}, .color = "#000", .label = "in flight"});
  timeline.bars.push_back({0.5, 0.75, 3});
  timeline.markers.push_back({"kill", 1.25, "#d62728", 0});
  timeline.markers.push_back({"end", 1e9, "#2ca02c", 1});
  panel empty{.id = "empty", .title = "nothing", .x_label = "x", .y_label = "y"};
  const auto svg = render_figure("a \"title\"", {timeline, empty}, 2);
  EXPECT_EQ(svg.rfind("<svg xmlns=\"http://www.w3.org/2000/svg\"", 0), 0u);
  EXPECT_EQ(occurrences(svg, "<g "), occurrences(svg, "</g>"));
  EXPECT_EQ(occurrences(svg, "<text"), occurrences(svg, "</text>"));
  EXPECT_NE(svg.find("kills &amp; &lt;stalls&gt;"), std::string::npos);
  EXPECT_NE(svg.find("a &quot;title&quot;"), std::string::npos);
  EXPECT_EQ(occurrences(svg, "<polyline"), 1u);
  EXPECT_EQ(occurrences(svg, "stroke-width=\"3\""), 1u);  // the bar
  EXPECT_NE(svg.find(">kill 1.25<"), std::string::npos);
  EXPECT_NE(svg.find(">end 1000000000 &#8594;<"), std::string::npos);  // off the scale
  EXPECT_EQ(occurrences(svg, "no samples"), 1u);
  EXPECT_EQ(svg.find("e+"), std::string::npos);
  EXPECT_EQ(svg.find("nan"), std::string::npos);
}

TEST(Plot, CdfPointsRiseFromZeroToOne) {
  EXPECT_TRUE(cdf_points({}).empty());
  const auto p = cdf_points({3, 1, 2});
  ASSERT_EQ(p.size(), 5u);
  EXPECT_EQ(p.front(), (point{1, 0}));
  EXPECT_EQ(p[1], (point{1, 1.0 / 3}));
  EXPECT_EQ(p.back(), (point{3, 1}));
  std::vector<double> many(10'000);
  for (std::size_t i = 0; i < many.size(); ++i) many[i] = static_cast<double>(i);
  EXPECT_LE(cdf_points(many, 100).size(), 103u);
}

TEST(Stats, InterpolatesLikeNumpy) {
  std::vector<double> v(10);
  std::iota(v.begin(), v.end(), 1.0);  // 1..10
  EXPECT_DOUBLE_EQ(percentile(v, 0), 1);
  EXPECT_DOUBLE_EQ(percentile(v, 50), 5.5);
  EXPECT_DOUBLE_EQ(percentile(v, 90), 9.1);
  EXPECT_DOUBLE_EQ(percentile(v, 99), 9.91);
  EXPECT_DOUBLE_EQ(percentile(v, 100), 10);
  EXPECT_DOUBLE_EQ(percentile({}, 50), 0);
  EXPECT_DOUBLE_EQ(percentile({4.0}, 99), 4);
  const auto s = summarize({10, 1, 9, 2, 8, 3, 7, 4, 6, 5});  // unsorted input
  EXPECT_EQ(s.count, 10u);
  EXPECT_DOUBLE_EQ(s.mean, 5.5);
  EXPECT_DOUBLE_EQ(s.p50, 5.5);
  EXPECT_DOUBLE_EQ(s.p90, 9.1);
  EXPECT_DOUBLE_EQ(s.p99, 9.91);
}

}  // namespace
}  // namespace baton::report
