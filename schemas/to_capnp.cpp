// Plain structs -> Cap'n Proto builders, for frames that validate() accepted.
#include "schemas/detail.hpp"
#include "schemas/sampling_codec.hpp"

#include "schemas/common.capnp.h"
#include "schemas/inference.capnp.h"
#include "schemas/membership.capnp.h"
#include "schemas/runtime.capnp.h"

namespace baton::wire::detail {
namespace {

using detail::fill;  // the Sampling and TokenLogprobs builders (sampling_codec.hpp)

capnp::uint size_of(const auto& v) {
  return static_cast<capnp::uint>(v.size());
}

/// std::string keeps a terminating NUL after size(), as capnp::Text::Reader requires.
capnp::Text::Reader text(const std::string& s) {
  return {s.c_str(), s.size()};
}

template <class T, class Builder>
void fill_list(const std::vector<T>& values, Builder list) {
  for (capnp::uint i = 0; i < values.size(); ++i) list.set(i, values[i]);
}

void fill(const actor_address& a, gen::ActorAddress::Builder b) {
  b.setNode(text(a.node));
  b.setActor(text(a.actor));
}

void fill(const kv_descriptor& kv, gen::KvDescriptor::Builder b) {
  b.setNode(text(kv.node));
  b.setRegionKey(kv.region_key);
  b.setOffset(kv.offset);
  b.setLength(kv.length);
  b.setBlockBytes(kv.block_bytes);
  fill_list(kv.block_ids, b.initBlockIds(static_cast<capnp::uint>(kv.block_ids.size())));
  fill_list(kv.checksums, b.initChecksums(static_cast<capnp::uint>(kv.checksums.size())));
  b.setFabricNode(kv.fabric_node);
}

void fill(const member& m, gen::Member::Builder b) {
  b.setNode(text(m.node));
  b.setIncarnation(m.incarnation);
  b.setState(static_cast<gen::MemberState>(m.state));
  b.setKind(static_cast<gen::NodeKind>(m.kind));
  b.setDevice(text(m.device));
  auto roles = b.initRoles(size_of(m.roles));
  for (capnp::uint i = 0; i < m.roles.size(); ++i) {
    roles.set(i, static_cast<gen::Role>(m.roles[i]));
  }
  b.setFabricAddress(text(m.fabric_address));
  b.setAdminAddress(text(m.admin_address));
  b.setDraining(m.draining);
  b.setKvBlocks(m.kv_blocks);
  b.setSuspecter(text(m.suspecter));
  b.setRestarts(m.restarts);
  b.setStarted(m.started);
}

void fill(const join_auth& a, gen::JoinAuth::Builder b) {
  b.setNonce0(a.nonce[0]);
  b.setNonce1(a.nonce[1]);
  b.setPeer0(a.peer[0]);
  b.setPeer1(a.peer[1]);
  b.setProof0(a.proof[0]);
  b.setProof1(a.proof[1]);
  b.setProof2(a.proof[2]);
  b.setProof3(a.proof[3]);
}

template <class Builder>
void fill_members(const std::vector<member>& members, Builder list) {
  for (capnp::uint i = 0; i < members.size(); ++i) fill(members[i], list[i]);
}

struct body_filler {
  gen::Envelope::Body::Builder b;

  void operator()(const join& j) {
    auto r = b.initJoin();
    fill(j.member, r.initMember());
    r.setWireVersion(j.wire_version);
    r.setModelHash(j.model_hash);
    auto l = r.initKvLayout();
    l.setBlockTokens(j.layout.block_tokens);
    l.setLayers(j.layout.layers);
    l.setKvHeads(j.layout.kv_heads);
    l.setHeadDim(j.layout.head_dim);
    l.setElementBytes(j.layout.element_bytes);
    r.setNumericsFingerprint(text(j.numerics_fingerprint));
    fill(j.auth, r.initAuth());
  }
  void operator()(const join_reply& j) {
    auto r = b.initJoinReply();
    r.setAccepted(j.accepted);
    r.setReason(text(j.reason));
    fill_members(j.members, r.initMembers(size_of(j.members)));
    r.setChallenge(j.challenge);
    fill(j.auth, r.initAuth());
  }
  void operator()(const heartbeat& h) {
    auto r = b.initHeartbeat();
    r.setSequence(h.sequence);
    r.setIsAck(h.is_ack);
    r.setQueueDepth(h.queue_depth);
    r.setFreeKvBlocks(h.free_kv_blocks);
    fill_members(h.updates, r.initUpdates(size_of(h.updates)));
  }
  void operator()(const leave& l) { b.initLeave().setReason(text(l.reason)); }
  void operator()(const admit& a) {
    auto r = b.initAdmit();
    r.setRequestId(static_cast<std::uint64_t>(a.request));
    r.setAttempt(a.attempt);
    fill_list(a.tokens, r.initTokens(size_of(a.tokens)));
    r.setPromptLength(a.prompt_length);
    r.setMaxTokens(a.max_tokens);
    fill(a.params, r.initSampling());
    r.setWriter(text(a.writer));
    r.setChoice(a.choice);
    r.setChoices(a.choices);
    r.setWriterIncarnation(a.writer_incarnation);
  }
  void operator()(const prefill& p) {
    auto r = b.initPrefill();
    r.setRequestId(static_cast<std::uint64_t>(p.request));
    r.setAttempt(p.attempt);
    fill_list(p.tokens, r.initTokens(size_of(p.tokens)));
    r.setPromptLength(p.prompt_length);
    fill(p.params, r.initSampling());
    fill(p.target, r.initTarget());
    fill(p.decode, r.initDecode());
    r.setChoice(p.choice);
    r.setChoices(p.choices);
  }
  void operator()(const prefill_done& p) {
    auto r = b.initPrefillDone();
    r.setRequestId(static_cast<std::uint64_t>(p.request));
    r.setAttempt(p.attempt);
    r.setFirstToken(p.first_tokens.front());  // validate() insists on one
    const std::vector<std::uint32_t> more(p.first_tokens.begin() + 1, p.first_tokens.end());
    fill_list(more, r.initMoreFirstTokens(size_of(more)));
    r.setPosition(p.position);
    fill_list(p.checksums, r.initChecksums(size_of(p.checksums)));
    fill(p.logprobs, r.initLogprobs(size_of(p.logprobs)));
  }
  void operator()(const token_batch& t) {
    auto r = b.initTokens();
    r.setRequestId(static_cast<std::uint64_t>(t.request));
    r.setAttempt(t.attempt);
    r.setFirstPosition(t.first_position);
    fill_list(t.tokens, r.initTokens(size_of(t.tokens)));
    r.setFinished(t.finish.has_value());
    if (t.finish) r.setReason(static_cast<gen::FinishReason>(*t.finish));
    r.setChoice(t.choice);
    fill(t.logprobs, r.initLogprobs(size_of(t.logprobs)));
  }
  void operator()(const finish& f) {
    auto r = b.initFinish();
    r.setRequestId(static_cast<std::uint64_t>(f.request));
    r.setAttempt(f.attempt);
    r.setReason(static_cast<gen::FinishReason>(f.reason));
    r.setGeneratedTokens(f.generated_tokens);
    r.setChoice(f.choice);
  }
  void operator()(const cancel& c) {
    auto r = b.initCancel();
    r.setRequestId(static_cast<std::uint64_t>(c.request));
    r.setReason(text(c.reason));
    r.setAttempt(c.attempt);
  }
  void operator()(const claim& c) {
    auto r = b.initClaim();
    r.setRequestId(static_cast<std::uint64_t>(c.request));
    r.setNewRequestId(static_cast<std::uint64_t>(c.new_request));
    r.setAttemptBase(c.attempt_base);
    auto list = r.initChoices(size_of(c.choices));
    for (capnp::uint i = 0; i < c.choices.size(); ++i) {
      list[i].setChoice(c.choices[i].choice);
      list[i].setPosition(c.choices[i].position);
    }
  }
  void operator()(const claimed& c) {
    auto r = b.initClaimed();
    r.setRequestId(static_cast<std::uint64_t>(c.request));
    auto list = r.initAttempts(size_of(c.attempts));
    for (capnp::uint i = 0; i < c.attempts.size(); ++i) {
      list[i].setAttempt(c.attempts[i].attempt);
      fill_list(c.attempts[i].choices, list[i].initChoices(size_of(c.attempts[i].choices)));
      list[i].setBlocks(c.attempts[i].blocks);
    }
  }
  void operator()(const stream_window& w) {
    auto r = b.initWindow();
    r.setRequestId(static_cast<std::uint64_t>(w.request));
    r.setAttempt(w.attempt);
    r.setLimit(w.limit);
  }
  void operator()(const abort_attempt& a) {
    auto r = b.initAbort();
    r.setRequestId(static_cast<std::uint64_t>(a.request));
    r.setAttempt(a.attempt);
    r.setCode(static_cast<gen::ErrorCode>(a.code));
    r.setMessage(text(a.message));
  }
  void operator()(const monitor& m) { fill(m.watcher, b.initMonitor().initWatcher()); }
  void operator()(const down& d) {
    auto r = b.initDown();
    fill(d.actor, r.initActor());
    r.setCode(static_cast<gen::ErrorCode>(d.code));
    r.setReason(text(d.reason));
  }
  void operator()(const failure& f) {
    auto r = b.initFailure();
    r.setCode(static_cast<gen::ErrorCode>(f.code));
    r.setMessage(text(f.message));
  }
  void operator()(const credit& c) { b.initCredit().setFrames(c.frames); }
};

}  // namespace

void to_capnp(const frame& f, gen::Envelope::Builder builder) {
  fill(f.source, builder.initSource());
  fill(f.target, builder.initTarget());
  builder.setSenderIncarnation(f.sender_incarnation);
  builder.setMessageId(f.message_id);
  builder.setDeadlineUnixUs(f.deadline_unix_us);
  builder.setAuthTag(kj::arrayPtr(f.auth_tag.data(), f.auth_tag.size()));
  builder.setInReplyTo(f.in_reply_to);
  builder.setTargetIncarnation(f.target_incarnation);
  std::visit(body_filler{builder.getBody()}, f.body);
}

}  // namespace baton::wire::detail
