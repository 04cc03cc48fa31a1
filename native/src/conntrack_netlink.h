// SPDX-License-Identifier: Apache-2.0
// ctnetlink over a plain NETLINK_NETFILTER socket: a dump of the conntrack table and NEW/UPDATE/
// DESTROY events, turned into fixed-size records (no N-API here). Plain netlink rather than
// libnetfilter-conntrack or libmnl: we read five attributes of one message type, and a library
// would be a new runtime dependency of the shipped addon for that.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace scope_tracker {

// One record handed to JavaScript (plugin/conntrack/record.ts reads it). Little-endian, packed.
enum CtRecordKind : uint8_t {
  kCtDumped = 1,      // a flow from a dump
  kCtNew = 2,         // NEW event
  kCtEnded = 3,       // UPDATE event into TIME_WAIT or CLOSE: the TCP connection is over
  kCtDestroyed = 4,   // DESTROY event
  kCtDumpBegin = 5,   // a dump starts; count = dumps so far
  kCtDumpEnd = 6,     // the dump is complete; count = flows it carried
  kCtLost = 7,        // the kernel dropped events (ENOBUFS); count = ENOBUFS seen so far; a dump follows
};

#pragma pack(push, 1)
struct CtRecord {
  uint8_t kind;
  uint8_t family;     // 4 or 6
  uint8_t tcp_state;  // enum tcp_conntrack, 0xff when the message had none
  uint8_t flags;      // bit 0: the flow is NATed (IPS_SRC_NAT or IPS_DST_NAT)
  uint32_t status;
  uint32_t id;
  uint32_t count;
  uint8_t orig_src[16];
  uint8_t orig_dst[16];
  uint8_t reply_src[16];
  uint8_t reply_dst[16];
  uint16_t orig_sport;
  uint16_t orig_dport;
  uint16_t reply_sport;
  uint16_t reply_dport;
};
#pragma pack(pop)
static_assert(sizeof(CtRecord) == 88, "CtRecord is read by plugin/conntrack/record.ts: keep it 88 bytes");

constexpr uint8_t kCtNoState = 0xff;

// Parses every ctnetlink message in buf; appends a record per TCP flow. Non-TCP flows and
// UPDATEs that do not end a connection are skipped. Returns how many messages did not parse.
struct ParseResult {
  size_t records = 0;
  size_t malformed = 0;
  bool done = false;       // NLMSG_DONE seen (end of a dump)
  int error = 0;           // NLMSG_ERROR with a non-zero errno (positive)
};
ParseResult ParseCtMessages(const uint8_t* buf, size_t len, bool dump, std::vector<uint8_t>* out);

// A netlink socket on NETLINK_NETFILTER. Open* throw CtError with errno.
struct CtError {
  int err;
  std::string what;
};

class CtSocket {
 public:
  CtSocket() = default;
  ~CtSocket();
  CtSocket(const CtSocket&) = delete;
  CtSocket& operator=(const CtSocket&) = delete;

  // Event socket: joined to the NEW and DESTROY groups, non-blocking, receive buffer forced to
  // rcvbuf bytes (the bound on what the kernel queues for us; past it, ENOBUFS).
  void OpenEvents(int rcvbuf);
  // Joins or leaves the UPDATE group (every TCP state change: several messages per connection,
  // wanted only where a connection's end must be known before DESTROY). Returns 0 or errno.
  int SetUpdates(bool on);
  // Dump socket: blocking, with a receive timeout so a stop is noticed.
  void OpenDump();
  // Sends IPCTNL_MSG_CT_GET with NLM_F_DUMP for every family.
  void RequestDump(uint32_t seq);
  int fd() const { return fd_; }

 private:
  int fd_ = -1;
};

}  // namespace scope_tracker
