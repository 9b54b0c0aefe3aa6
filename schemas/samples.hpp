#pragma once

// One representative, valid frame of every body type. Used by `baton selfcheck`, the
// codec tests and to seed the codec's fuzz corpus.

#include <vector>

#include "schemas/frame.hpp"

namespace baton::wire {

/// Frames in body-index order: sample_frames()[i].body.index() == i.
[[nodiscard]] std::vector<frame> sample_frames();

}  // namespace baton::wire
