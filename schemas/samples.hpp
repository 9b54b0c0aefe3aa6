#pragma once

// One representative, valid frame of every body type, and one message of every native
// client message type. Used by `baton selfcheck`, the codec tests and to seed the codecs'
// fuzz corpora (tests/fuzz/corpus_writer_main.cpp).

#include <vector>

#include "schemas/client.hpp"
#include "schemas/frame.hpp"

namespace baton::wire {

/// Frames in body-index order: sample_frames()[i].body.index() == i.
[[nodiscard]] std::vector<frame> sample_frames();

/// Messages in type order: sample_client_messages()[i].index() == i, with every optional
/// field set (several choices, log-probabilities, a choice's end).
[[nodiscard]] std::vector<client_message> sample_client_messages();

}  // namespace baton::wire
