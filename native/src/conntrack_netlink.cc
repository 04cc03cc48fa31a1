// SPDX-License-Identifier: Apache-2.0
#include "conntrack_netlink.h"

#include <arpa/inet.h>
#include <linux/netfilter/nf_conntrack_common.h>
#include <linux/netfilter/nf_conntrack_tcp.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_conntrack.h>
#include <linux/netlink.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace scope_tracker {
namespace {

// Attributes of one nest, by type; absent ones stay null.
template <size_t N>
struct Attrs {
  const nlattr* at[N + 1] = {};
};

template <size_t N>
bool ParseNest(const uint8_t* p, size_t len, Attrs<N>* out) {
  while (len >= sizeof(nlattr)) {
    const nlattr* a = reinterpret_cast<const nlattr*>(p);
    if (a->nla_len < sizeof(nlattr) || a->nla_len > len) return false;
    uint16_t type = a->nla_type & NLA_TYPE_MASK;
    if (type <= N) out->at[type] = a;
    size_t step = NLA_ALIGN(a->nla_len);
    if (step >= len) break;
    p += step;
    len -= step;
  }
  return true;
}

const uint8_t* Payload(const nlattr* a) { return reinterpret_cast<const uint8_t*>(a) + NLA_HDRLEN; }
size_t PayloadLen(const nlattr* a) { return a->nla_len - NLA_HDRLEN; }

template <size_t N>
bool ParseNested(const nlattr* a, Attrs<N>* out) {
  return a != nullptr && ParseNest(Payload(a), PayloadLen(a), out);
}

bool ReadBe16(const nlattr* a, uint16_t* v) {
  if (a == nullptr || PayloadLen(a) < 2) return false;
  uint16_t raw;
  std::memcpy(&raw, Payload(a), 2);
  *v = ntohs(raw);
  return true;
}

bool ReadBe32(const nlattr* a, uint32_t* v) {
  if (a == nullptr || PayloadLen(a) < 4) return false;
  uint32_t raw;
  std::memcpy(&raw, Payload(a), 4);
  *v = ntohl(raw);
  return true;
}

bool CopyAddr(const nlattr* a, size_t size, uint8_t* dst) {
  if (a == nullptr || PayloadLen(a) < size) return false;
  std::memcpy(dst, Payload(a), size);
  return true;
}

// Returns false when the tuple is malformed; *tcp false when it is not TCP.
bool ParseTuple(const nlattr* nest, uint8_t* family, uint8_t* src, uint8_t* dst, uint16_t* sport, uint16_t* dport,
                bool* tcp) {
  Attrs<CTA_TUPLE_MAX> tuple;
  Attrs<CTA_IP_MAX> ip;
  Attrs<CTA_PROTO_MAX> proto;
  if (!ParseNested(nest, &tuple) || !ParseNested(tuple.at[CTA_TUPLE_IP], &ip) ||
      !ParseNested(tuple.at[CTA_TUPLE_PROTO], &proto)) {
    return false;
  }
  const nlattr* num = proto.at[CTA_PROTO_NUM];
  if (num == nullptr || PayloadLen(num) < 1) return false;
  *tcp = *Payload(num) == IPPROTO_TCP;
  if (!*tcp) return true;
  if (ip.at[CTA_IP_V4_SRC] != nullptr) {
    *family = 4;
    if (!CopyAddr(ip.at[CTA_IP_V4_SRC], 4, src) || !CopyAddr(ip.at[CTA_IP_V4_DST], 4, dst)) return false;
  } else {
    *family = 6;
    if (!CopyAddr(ip.at[CTA_IP_V6_SRC], 16, src) || !CopyAddr(ip.at[CTA_IP_V6_DST], 16, dst)) return false;
  }
  return ReadBe16(proto.at[CTA_PROTO_SRC_PORT], sport) && ReadBe16(proto.at[CTA_PROTO_DST_PORT], dport);
}

// One ctnetlink flow message; returns false when malformed, sets *keep when it is a record.
bool ParseFlow(const nlmsghdr* h, bool dump, CtRecord* r, bool* keep) {
  *keep = false;
  uint8_t msg = NFNL_MSG_TYPE(h->nlmsg_type);
  if (NFNL_SUBSYS_ID(h->nlmsg_type) != NFNL_SUBSYS_CTNETLINK) return true;
  if (msg != IPCTNL_MSG_CT_NEW && msg != IPCTNL_MSG_CT_DELETE) return true;
  size_t header = NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(nfgenmsg));
  if (h->nlmsg_len < header) return false;
  Attrs<CTA_MAX> top;
  const uint8_t* attrs = reinterpret_cast<const uint8_t*>(h) + header;
  if (!ParseNest(attrs, h->nlmsg_len - header, &top)) return false;

  std::memset(r, 0, sizeof(*r));
  bool tcp = false;
  uint8_t reply_family = 0;
  if (!ParseTuple(top.at[CTA_TUPLE_ORIG], &r->family, r->orig_src, r->orig_dst, &r->orig_sport, &r->orig_dport, &tcp))
    return false;
  if (!tcp) return true;
  if (!ParseTuple(top.at[CTA_TUPLE_REPLY], &reply_family, r->reply_src, r->reply_dst, &r->reply_sport,
                  &r->reply_dport, &tcp) || !tcp || reply_family != r->family) {
    return false;
  }
  if (!ReadBe32(top.at[CTA_ID], &r->id)) return false;
  ReadBe32(top.at[CTA_STATUS], &r->status);  // absent from some DESTROY messages
  r->tcp_state = kCtNoState;
  Attrs<CTA_PROTOINFO_MAX> info;
  Attrs<CTA_PROTOINFO_TCP_MAX> tcpinfo;
  if (ParseNested(top.at[CTA_PROTOINFO], &info) && ParseNested(info.at[CTA_PROTOINFO_TCP], &tcpinfo)) {
    const nlattr* state = tcpinfo.at[CTA_PROTOINFO_TCP_STATE];
    if (state != nullptr && PayloadLen(state) >= 1) r->tcp_state = *Payload(state);
  }
  // The addresses tell NAT apart even where the status is missing (DESTROY).
  bool rewritten = std::memcmp(r->orig_src, r->reply_dst, 16) != 0 || std::memcmp(r->orig_dst, r->reply_src, 16) != 0 ||
                   r->orig_sport != r->reply_dport || r->orig_dport != r->reply_sport;
  r->flags = ((r->status & IPS_NAT_MASK) != 0 || rewritten) ? 1 : 0;

  if (dump) {
    r->kind = kCtDumped;
  } else if (msg == IPCTNL_MSG_CT_DELETE) {
    r->kind = kCtDestroyed;
  } else if (h->nlmsg_flags & (NLM_F_CREATE | NLM_F_EXCL)) {
    r->kind = kCtNew;
  } else {
    // An UPDATE matters only when it ends the connection: DESTROY comes after the TIME_WAIT
    // timeout (two minutes by default), far too late for a connection closed between scans.
    if (r->tcp_state != TCP_CONNTRACK_TIME_WAIT && r->tcp_state != TCP_CONNTRACK_CLOSE) return true;
    r->kind = kCtEnded;
  }
  *keep = true;
  return true;
}

}  // namespace

ParseResult ParseCtMessages(const uint8_t* buf, size_t len, bool dump, std::vector<uint8_t>* out) {
  ParseResult result;
  const nlmsghdr* h = reinterpret_cast<const nlmsghdr*>(buf);
  int remaining = static_cast<int>(len);
  for (; NLMSG_OK(h, remaining); h = NLMSG_NEXT(h, remaining)) {
    if (h->nlmsg_type == NLMSG_DONE) {
      result.done = true;
      break;
    }
    if (h->nlmsg_type == NLMSG_ERROR) {
      if (h->nlmsg_len >= NLMSG_LENGTH(sizeof(nlmsgerr))) {
        const nlmsgerr* e = static_cast<const nlmsgerr*>(NLMSG_DATA(h));
        if (e->error != 0) result.error = -e->error;
      } else {
        result.malformed++;
      }
      continue;
    }
    if (h->nlmsg_type < NLMSG_MIN_TYPE) continue;
    CtRecord r;
    bool keep = false;
    if (!ParseFlow(h, dump, &r, &keep)) {
      result.malformed++;
      continue;
    }
    if (!keep) continue;
    const uint8_t* p = reinterpret_cast<const uint8_t*>(&r);
    out->insert(out->end(), p, p + sizeof(r));
    result.records++;
  }
  if (remaining > 0 && !result.done) result.malformed++;  // a truncated tail
  return result;
}

CtSocket::~CtSocket() {
  if (fd_ >= 0) close(fd_);
}

namespace {

int OpenNetfilter(int flags) {
  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | flags, NETLINK_NETFILTER);
  if (fd < 0) {
    int err = errno;
    throw CtError{err, std::string("socket(NETLINK_NETFILTER): ") + std::strerror(err)};
  }
  return fd;
}

}  // namespace

void CtSocket::OpenEvents(int rcvbuf) {
  fd_ = OpenNetfilter(SOCK_NONBLOCK);
  // FORCE needs CAP_NET_ADMIN, which ctnetlink needs anyway; fall back to the plain limit.
  if (setsockopt(fd_, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf)) != 0) {
    setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
  }
  sockaddr_nl addr{};
  addr.nl_family = AF_NETLINK;
  if (bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    int err = errno;
    throw CtError{err, std::string("bind(NETLINK_NETFILTER): ") + std::strerror(err)};
  }
  for (int group : {NFNLGRP_CONNTRACK_NEW, NFNLGRP_CONNTRACK_DESTROY}) {
    if (setsockopt(fd_, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, &group, sizeof(group)) != 0) {
      int err = errno;
      throw CtError{err, std::string("join the ctnetlink event groups: ") + std::strerror(err)};
    }
  }
}

int CtSocket::SetUpdates(bool on) {
  int group = NFNLGRP_CONNTRACK_UPDATE;
  int option = on ? NETLINK_ADD_MEMBERSHIP : NETLINK_DROP_MEMBERSHIP;
  return setsockopt(fd_, SOL_NETLINK, option, &group, sizeof(group)) == 0 ? 0 : errno;
}

void CtSocket::OpenDump() {
  fd_ = OpenNetfilter(0);
  int rcvbuf = 4 << 20;
  if (setsockopt(fd_, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf)) != 0) {
    setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
  }
  timeval tv{};
  tv.tv_usec = 200 * 1000;
  setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
}

void CtSocket::RequestDump(uint32_t seq) {
  struct {
    nlmsghdr h;
    nfgenmsg g;
  } req{};
  req.h.nlmsg_len = NLMSG_LENGTH(sizeof(nfgenmsg));
  req.h.nlmsg_type = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET;
  req.h.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  req.h.nlmsg_seq = seq;
  req.g.nfgen_family = AF_UNSPEC;  // every family: IPv4 and IPv6 in one dump
  req.g.version = NFNETLINK_V0;
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  if (sendto(fd_, &req, req.h.nlmsg_len, 0, reinterpret_cast<sockaddr*>(&kernel), sizeof(kernel)) < 0) {
    int err = errno;
    throw CtError{err, std::string("request a conntrack dump: ") + std::strerror(err)};
  }
}

}  // namespace scope_tracker
