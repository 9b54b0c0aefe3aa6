#pragma once

// SVG figures for benchmark, chaos and simulator reports: a grid of panels, each with
// axes, ticks, labelled lines (polylines), dashed vertical markers and horizontal bars.
// Text only; no fonts or files. Pure functions and value types.

#include <cstddef>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace baton::report {

using point = std::pair<double, double>;

/// A line through `points` (x ascending for a chart, any order for a path).
struct line {
  std::vector<point> points{};
  std::string color = "#1f77b4";
  std::string label{};  ///< shown in the panel's legend when not empty
};

/// A dashed vertical line at `x`, labelled "label value"; placed at `row` (0, 1, 2: which
/// text line from the top) so that several markers do not overlap. A marker past the
/// x axis is written at the right edge with an arrow.
struct marker {
  std::string label;
  double x = 0;
  std::string color = "#d62728";
  int row = 0;
};

/// A horizontal bar from x0 to x1 at height y (a timeline: a request's stall, say).
struct bar {
  double x0 = 0;
  double x1 = 0;
  double y = 0;
  std::string color = "#ff7f0e";
};

struct panel {
  std::string id;  ///< the SVG group's id
  std::string title;
  std::string x_label;
  std::string y_label;
  /// Axis ranges start at 0; a max of 0 is chosen from the data.
  double x_max = 0;
  double y_max = 0;
  std::vector<line> lines{};
  std::vector<marker> markers{};
  std::vector<bar> bars{};
  std::string note{};  ///< small text at the lower right ("n = 120")
};

/// Panels laid out `columns` wide, under a title; returns the SVG document. Titles and
/// labels are escaped; numbers never use exponents.
[[nodiscard]] std::string render_figure(const std::string& title, const std::vector<panel>& panels,
                                        std::size_t columns = 2);

/// The empirical CDF of `samples` as a line's points (x: the sample, y: the fraction at or
/// below it), at most about `max_points` of them; empty for no samples.
[[nodiscard]] std::vector<point> cdf_points(std::vector<double> samples,
                                            std::size_t max_points = 500);

}  // namespace baton::report
