// Cap'n Proto readers and builders <-> plain structs. Discriminants and enum values are
// checked here, because a reader hands out unknown values unchecked.
#include "schemas/detail.hpp"
#include "schemas/sampling_codec.hpp"

#include <fmt/format.h>

#include "schemas/common.capnp.h"
#include "schemas/inference.capnp.h"
#include "schemas/membership.capnp.h"
#include "schemas/runtime.capnp.h"

namespace baton::wire::detail {
namespace {

static_assert(static_cast<int>(gen::ErrorCode::FAILED) == static_cast<int>(errc::failed));
static_assert(static_cast<int>(gen::ErrorCode::UNAVAILABLE) == static_cast<int>(errc::unavailable));
static_assert(static_cast<int>(gen::NodeKind::CPU) == static_cast<int>(node_kind::cpu));
static_assert(static_cast<int>(gen::Role::KV) == static_cast<int>(role::kv));
static_assert(static_cast<int>(gen::MemberState::LEFT) == static_cast<int>(member_state::left));
static_assert(static_cast<int>(gen::FinishReason::CANCELLED) ==
              static_cast<int>(finish_reason::cancelled));

/// Maps a wire enum onto the C++ enum with the same order; `last` is its last member.
template <class To, class From>
checked<To> enum_from(From raw, To last, const char* field) {
  const auto value = static_cast<unsigned>(raw);
  if (value > static_cast<unsigned>(last)) {
    return reject(reject_reason::bad_discriminant,
                  fmt::format("{}: unknown enum value {}", field, value));
  }
  return static_cast<To>(value);
}

template <class T>
std::vector<T> list_of(typename capnp::List<T>::Reader list) {
  std::vector<T> out;
  out.reserve(list.size());
  for (auto v : list) out.push_back(v);
  return out;
}

std::string text_of(capnp::Text::Reader t) {
  return std::string(t.cStr(), t.size());
}

actor_address address_from(gen::ActorAddress::Reader r) {
  return {text_of(r.getNode()), text_of(r.getActor())};
}

kv_descriptor kv_from(gen::KvDescriptor::Reader r) {
  return {text_of(r.getNode()),
          r.getRegionKey(),
          r.getOffset(),
          r.getLength(),
          r.getBlockBytes(),
          list_of<std::uint32_t>(r.getBlockIds()),
          list_of<std::uint64_t>(r.getChecksums()),
          r.getFabricNode()};
}

checked<member> member_from(gen::Member::Reader r, const char* field) {
  auto state = enum_from(r.getState(), member_state::left, field);
  if (!state) return tl::unexpected(state.error());
  auto kind = enum_from(r.getKind(), node_kind::cpu, field);
  if (!kind) return tl::unexpected(kind.error());
  member m{text_of(r.getNode()),
           r.getIncarnation(),
           *state,
           *kind,
           text_of(r.getDevice()),
           {},
           text_of(r.getFabricAddress()),
           text_of(r.getAdminAddress()),
           r.getDraining(),
           r.getKvBlocks(),
           text_of(r.getSuspecter()),
           r.getRestarts(),
           r.getStarted()};
  for (auto raw : r.getRoles()) {
    auto each = enum_from(raw, role::kv, field);
    if (!each) return tl::unexpected(each.error());
    m.roles.push_back(*each);
  }
  return m;
}

checked<std::vector<member>> members_from(capnp::List<gen::Member>::Reader list,
                                          const char* field) {
  std::vector<member> out;
  out.reserve(list.size());
  for (auto r : list) {
    auto m = member_from(r, field);
    if (!m) return tl::unexpected(m.error());
    out.push_back(std::move(*m));
  }
  return out;
}

join_auth auth_from(gen::JoinAuth::Reader r) {
  return {{r.getNonce0(), r.getNonce1()},
          {r.getPeer0(), r.getPeer1()},
          {r.getProof0(), r.getProof1(), r.getProof2(), r.getProof3()}};
}

checked<body> join_from(gen::Join::Reader r) {
  auto m = member_from(r.getMember(), "join.member");
  if (!m) return tl::unexpected(m.error());
  auto l = r.getKvLayout();
  return join{std::move(*m),
              r.getWireVersion(),
              r.getModelHash(),
              kv_layout{l.getBlockTokens(), l.getLayers(), l.getKvHeads(), l.getHeadDim(),
                        l.getElementBytes()},
              text_of(r.getNumericsFingerprint()),
              auth_from(r.getAuth())};
}

checked<body> membership_from(gen::Envelope::Body::Reader b) {
  switch (b.which()) {
    case gen::Envelope::Body::JOIN: return join_from(b.getJoin());
    case gen::Envelope::Body::JOIN_REPLY: {
      auto r = b.getJoinReply();
      auto members = members_from(r.getMembers(), "joinReply.members");
      if (!members) return tl::unexpected(members.error());
      return join_reply{r.getAccepted(), text_of(r.getReason()), std::move(*members),
                        r.getChallenge(), auth_from(r.getAuth())};
    }
    case gen::Envelope::Body::HEARTBEAT: {
      auto r = b.getHeartbeat();
      auto updates = members_from(r.getUpdates(), "heartbeat.updates");
      if (!updates) return tl::unexpected(updates.error());
      return heartbeat{r.getSequence(), r.getIsAck(), r.getQueueDepth(), r.getFreeKvBlocks(),
                       std::move(*updates)};
    }
    case gen::Envelope::Body::LEAVE: return leave{text_of(b.getLeave().getReason())};
    default: break;
  }
  return reject(reject_reason::bad_discriminant, "body: not a membership message");
}

checked<body> inference_from(gen::Envelope::Body::Reader b) {
  switch (b.which()) {
    case gen::Envelope::Body::ADMIT: {
      auto r = b.getAdmit();
      return admit{request_id{r.getRequestId()},
                   r.getAttempt(),
                   list_of<std::uint32_t>(r.getTokens()),
                   r.getPromptLength(),
                   r.getMaxTokens(),
                   sampling_from(r.getSampling()),
                   text_of(r.getWriter()),
                   r.getChoice(),
                   std::max<std::uint32_t>(1, r.getChoices()),
                   r.getWriterIncarnation()};
    }
    case gen::Envelope::Body::PREFILL: {
      auto r = b.getPrefill();
      return prefill{request_id{r.getRequestId()},
                     r.getAttempt(),
                     list_of<std::uint32_t>(r.getTokens()),
                     r.getPromptLength(),
                     sampling_from(r.getSampling()),
                     kv_from(r.getTarget()),
                     address_from(r.getDecode()),
                     r.getChoice(),
                     std::max<std::uint32_t>(1, r.getChoices())};
    }
    case gen::Envelope::Body::PREFILL_DONE: {
      auto r = b.getPrefillDone();
      std::vector<std::uint32_t> first = {r.getFirstToken()};
      for (auto t : r.getMoreFirstTokens()) first.push_back(t);
      return prefill_done{request_id{r.getRequestId()},
                          r.getAttempt(),
                          std::move(first),
                          r.getPosition(),
                          list_of<std::uint64_t>(r.getChecksums()),
                          logprobs_from(r.getLogprobs())};
    }
    case gen::Envelope::Body::TOKENS: {
      auto r = b.getTokens();
      std::optional<finish_reason> ends;
      if (r.getFinished()) {
        auto reason = enum_from(r.getReason(), finish_reason::cancelled, "tokens.reason");
        if (!reason) return tl::unexpected(reason.error());
        ends = *reason;
      }
      return token_batch{
          request_id{r.getRequestId()},          r.getAttempt(), r.getFirstPosition(),
          list_of<std::uint32_t>(r.getTokens()), ends,           r.getChoice(),
          logprobs_from(r.getLogprobs())};
    }
    default: break;
  }
  return reject(reject_reason::bad_discriminant, "body: not an inference message");
}

checked<body> runtime_from(gen::Envelope::Body::Reader b) {
  switch (b.which()) {
    case gen::Envelope::Body::MONITOR: return monitor{address_from(b.getMonitor().getWatcher())};
    case gen::Envelope::Body::DOWN: {
      auto r = b.getDown();
      auto code = enum_from(r.getCode(), errc::unavailable, "down.code");
      if (!code) return tl::unexpected(code.error());
      return down{address_from(r.getActor()), *code, text_of(r.getReason())};
    }
    case gen::Envelope::Body::FAILURE: {
      auto r = b.getFailure();
      auto code = enum_from(r.getCode(), errc::unavailable, "failure.code");
      if (!code) return tl::unexpected(code.error());
      return failure{*code, text_of(r.getMessage())};
    }
    case gen::Envelope::Body::CREDIT: return credit{b.getCredit().getFrames()};
    default: break;
  }
  return reject(reject_reason::bad_discriminant,
                fmt::format("body: unknown union member {}", static_cast<unsigned>(b.which())));
}

checked<body> outcome_from(gen::Envelope::Body::Reader b) {
  switch (b.which()) {
    case gen::Envelope::Body::FINISH: {
      auto r = b.getFinish();
      auto reason = enum_from(r.getReason(), finish_reason::cancelled, "finish.reason");
      if (!reason) return tl::unexpected(reason.error());
      return finish{request_id{r.getRequestId()}, r.getAttempt(), *reason, r.getGeneratedTokens(),
                    r.getChoice()};
    }
    case gen::Envelope::Body::CANCEL: {
      auto r = b.getCancel();
      return cancel{request_id{r.getRequestId()}, text_of(r.getReason()), r.getAttempt()};
    }
    case gen::Envelope::Body::CLAIM: {
      auto r = b.getClaim();
      claim c{
          request_id{r.getRequestId()}, request_id{r.getNewRequestId()}, r.getAttemptBase(), {}};
      for (auto x : r.getChoices()) c.choices.push_back({x.getChoice(), x.getPosition()});
      return c;
    }
    case gen::Envelope::Body::CLAIMED: {
      auto r = b.getClaimed();
      claimed c{request_id{r.getRequestId()}, {}};
      for (auto x : r.getAttempts()) {
        c.attempts.push_back(
            {x.getAttempt(), list_of<std::uint32_t>(x.getChoices()), x.getBlocks()});
      }
      return c;
    }
    case gen::Envelope::Body::WINDOW: {
      auto r = b.getWindow();
      return stream_window{request_id{r.getRequestId()}, r.getAttempt(), r.getLimit()};
    }
    case gen::Envelope::Body::ABORT: {
      auto r = b.getAbort();
      auto code = enum_from(r.getCode(), errc::unavailable, "abort.code");
      if (!code) return tl::unexpected(code.error());
      return abort_attempt{request_id{r.getRequestId()}, r.getAttempt(), *code,
                           text_of(r.getMessage())};
    }
    default: break;
  }
  return runtime_from(b);
}

checked<body> body_from(gen::Envelope::Body::Reader b) {
  switch (b.which()) {
    case gen::Envelope::Body::JOIN:
    case gen::Envelope::Body::JOIN_REPLY:
    case gen::Envelope::Body::HEARTBEAT:
    case gen::Envelope::Body::LEAVE: return membership_from(b);
    case gen::Envelope::Body::ADMIT:
    case gen::Envelope::Body::PREFILL:
    case gen::Envelope::Body::PREFILL_DONE:
    case gen::Envelope::Body::TOKENS: return inference_from(b);
    default: return outcome_from(b);
  }
}

}  // namespace

checked<frame> from_capnp(gen::Envelope::Reader reader) {
  auto b = body_from(reader.getBody());
  if (!b) return tl::unexpected(b.error());
  auto tag = reader.getAuthTag();
  return frame{address_from(reader.getSource()),
               address_from(reader.getTarget()),
               reader.getSenderIncarnation(),
               reader.getMessageId(),
               reader.getDeadlineUnixUs(),
               std::vector<std::uint8_t>(tag.begin(), tag.end()),
               reader.getInReplyTo(),
               std::move(*b),
               reader.getTargetIncarnation()};
}

}  // namespace baton::wire::detail
