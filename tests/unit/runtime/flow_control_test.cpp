#include "runtime/flow_control.hpp"

#include <gtest/gtest.h>

namespace baton::runtime {
namespace {

using verdict = flow_control::verdict;

TEST(FlowControl, SendsAWindowThenQueuesThenRefuses) {
  flow_control flow(4, 2);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(flow.admit(), verdict::send) << i;
  EXPECT_EQ(flow.admit(), verdict::queue);
  EXPECT_EQ(flow.admit(), verdict::queue);
  EXPECT_EQ(flow.admit(), verdict::overloaded);
  EXPECT_EQ(flow.queued(), 2u);
}

TEST(FlowControl, CreditReleasesQueuedFramesInOrderBeforeNewOnes) {
  flow_control flow(4, 8);
  for (int i = 0; i < 6; ++i) (void)flow.admit();  // 4 sent, 2 queued
  EXPECT_EQ(flow.on_credit(3), 2u);                // both queued go; 1 credit left
  EXPECT_EQ(flow.credit(), 1u);
  EXPECT_EQ(flow.admit(), verdict::send);
  EXPECT_EQ(flow.admit(), verdict::queue);
}

TEST(FlowControl, ANewFrameNeverOvertakesAQueuedOne) {
  flow_control flow(2, 8);
  (void)flow.admit();
  (void)flow.admit();
  EXPECT_EQ(flow.admit(), verdict::queue);
  EXPECT_EQ(flow.on_credit(0), 0u);
  EXPECT_EQ(flow.admit(), verdict::queue) << "credit 0 and a queue: the new frame waits too";
}

TEST(FlowControl, CreditIsCappedAtTheWindow) {
  flow_control flow(4, 8);
  EXPECT_EQ(flow.on_credit(100), 0u);
  EXPECT_EQ(flow.credit(), 4u);
}

TEST(FlowControl, ReceiverReturnsCreditEveryHalfWindow) {
  flow_control flow(8, 8);
  for (int i = 0; i < 3; ++i) EXPECT_FALSE(flow.on_delivered()) << i;
  EXPECT_EQ(flow.on_delivered(), 4u);
  for (int i = 0; i < 3; ++i) EXPECT_FALSE(flow.on_delivered()) << i;
  EXPECT_EQ(flow.on_delivered(), 4u);
}

}  // namespace
}  // namespace baton::runtime
