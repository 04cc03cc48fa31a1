/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The one record the kernel side hands to user space, shared by bpf/tracker.bpf.c,
 * native/ (the ring-buffer reader) and, by layout, plugin/ebpf/decode.ts.
 * Change a field here and the TypeScript decoder's offsets in the same commit.
 */
#ifndef SCOPE_TRACKER_H
#define SCOPE_TRACKER_H

#define TRACKER_COMM_LEN 16

enum tracker_event_type {
	TRACKER_EVENT_CONNECT = 1, /* outgoing connection established (SYN_SENT -> ESTABLISHED) */
	TRACKER_EVENT_ACCEPT = 2,  /* incoming connection returned by accept()/accept4() */
	TRACKER_EVENT_CLOSE = 3,   /* an established connection reached TCP_CLOSE */
};

/* Address family as carried in events: IPv4-mapped IPv6 is already folded to 4. */
enum tracker_family {
	TRACKER_FAMILY_IPV4 = 4,
	TRACKER_FAMILY_IPV6 = 6,
};

/* Indexes into the per-CPU "counters" array map. */
enum tracker_counter {
	TRACKER_COUNTER_LOST = 0,            /* ring-buffer reserve failed: an event is missing */
	TRACKER_COUNTER_FAILED_CONNECT = 1,  /* SYN_SENT -> CLOSE: connect() that never established */
	TRACKER_COUNTER_CONNECT_NO_PID = 2,  /* established connect whose connect() ran before we attached */
	TRACKER_COUNTER_ACCEPT_NO_SOCK = 3,  /* accept() returned an fd we could not resolve to a socket */
	TRACKER_COUNTER_BACKSTOP = 4,        /* state changes the first tp_btf program was skipped for, handled by the second */
	TRACKER_COUNTER_MAX = 5,
};

/*
 * 80 bytes, no implicit padding, little-endian host order for every integer.
 * Addresses are in network byte order; an IPv4 address sits in the first 4 bytes.
 * Ports are in host byte order.
 */
struct tracker_event {
	__u64 timestamp_ns;              /* bpf_ktime_get_ns() (CLOCK_MONOTONIC) */
	__u32 pid;                       /* tgid of the process that connected/accepted; 0 if unknown */
	__u32 netns;                     /* network namespace inode */
	__u8 saddr[16];                  /* local address */
	__u8 daddr[16];                  /* remote address */
	__u16 sport;                     /* local port */
	__u16 dport;                     /* remote port */
	__u8 type;                       /* enum tracker_event_type */
	__u8 family;                     /* enum tracker_family */
	__u16 cpu;                       /* CPU that produced the record (for reorder diagnostics) */
	char comm[TRACKER_COMM_LEN];     /* task comm of pid; empty if unknown */
	__u64 sock_cookie;               /* kernel socket address, stable for the socket's life: joins open and close */
};

#endif /* SCOPE_TRACKER_H */
