/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The records the kernel side hands to user space: struct tracker_event (bpf/tracker.bpf.c ->
 * ring buffer -> native/ reader -> plugin/ebpf/record.ts) and struct tracker_socket
 * (bpf/snapshot.bpf.c -> iterator fd -> native/ snapshot reader -> plugin/ebpf/snapshot.ts).
 * Change a field here and the TypeScript offsets in the same commit.
 */
#ifndef SCOPE_TRACKER_H
#define SCOPE_TRACKER_H

#define TRACKER_COMM_LEN 16

enum tracker_event_type {
	TRACKER_EVENT_CONNECT = 1, /* outgoing connection established (SYN_SENT -> ESTABLISHED) */
	TRACKER_EVENT_ACCEPT = 2,  /* incoming connection returned by accept()/accept4() */
	TRACKER_EVENT_CLOSE = 3,   /* an established connection reached TCP_CLOSE */
	TRACKER_RECORD_SOCKET = 4, /* snapshot: a TCP socket some process holds (struct tracker_socket) */
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

/*
 * One TCP socket held by one process, from the snapshot iterator. 80 bytes, and every field it
 * shares with struct tracker_event sits at the same offset with the same meaning (tuple, family,
 * netns, pid, comm, socket address), so the same field readers serve both. Where the event has
 * its timestamp and CPU, the snapshot has the socket's inode and fd and its TCP state.
 */
struct tracker_socket {
	__u32 inode;                     /* socket inode, as /proc/PID/fd shows it ("socket:[inode]") */
	__u32 fd;                        /* the fd of pid that holds it */
	__u32 pid;                       /* tgid of the process holding it */
	__u32 netns;                     /* network namespace inode of the socket */
	__u8 saddr[16];                  /* local address */
	__u8 daddr[16];                  /* remote address (zero for a listening socket) */
	__u16 sport;                     /* local port */
	__u16 dport;                     /* remote port */
	__u8 type;                       /* TRACKER_RECORD_SOCKET */
	__u8 family;                     /* enum tracker_family */
	__u8 state;                      /* TCP state (include/net/tcp_states.h: 1 ESTABLISHED, 10 LISTEN) */
	__u8 pad;
	char comm[TRACKER_COMM_LEN];     /* comm of the task visited (the thread-group leader, unless it has exited) */
	__u64 sock_cookie;               /* kernel socket address: the same join key the events carry */
};

#endif /* SCOPE_TRACKER_H */
