// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Kernel side of the TCP connection tracker.
 *
 * Emits one struct tracker_event (bpf/tracker.h) per
 *   CONNECT  outgoing connection established  (sock/inet_sock_set_state SYN_SENT -> ESTABLISHED)
 *   ACCEPT   accept()/accept4() returned a TCP socket  (syscalls/sys_exit_accept{,4})
 *   CLOSE    a connection left the open states (ESTABLISHED, FIN_WAIT1/2, CLOSE_WAIT)
 *            for LAST_ACK, CLOSING or CLOSE  (sock/inet_sock_set_state)
 * into the "events" ring buffer, and counts what it could not report in "counters".
 *
 * Only tracepoints are used (no kprobes / fentry): they are stable ABI and are
 * what the target kernels allow. Built CO-RE against build/vmlinux.h.
 *
 * The state change comes twice: as a BTF raw tracepoint (tp_btf, 5.5+) and as the
 * classic tracepoint. User space loads one of them (native/src/attach_plan.c):
 * tp_btf where the kernel takes it, since a classic tracepoint program is skipped
 * whenever any other kprobe/tracepoint program is running on that CPU (the global
 * per-CPU bpf_prog_active guard, e.g. a softirq state change landing inside our
 * accept-exit run), and kernels before 6.7 do not even count those skips. A tp_btf
 * program only guards against itself, and reads its arguments without a trace
 * buffer copy.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_tracing.h>

#include "tracker.h"

#define AF_INET 2
#define AF_INET6 10

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/*
 * events: the record stream to user space.
 * Inserted: every handler below, one record per event (bpf_ringbuf_reserve/submit).
 * Removed:  by the user-space reader (ring_buffer__consume) only.
 * Bound:    max_entries bytes (4 MiB default; user space may override with
 *           bpf_map__set_max_entries before load). When it is full the reserve
 *           fails and the event is counted in counters[TRACKER_COUNTER_LOST].
 */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20);
} events SEC(".maps");

/* Who started a connect(): captured in process context, used at ESTABLISHED. */
struct connecting_value {
	__u32 pid;
	char comm[TRACKER_COMM_LEN];
};

/*
 * connecting: struct sock * -> process that is connecting it.
 * Inserted: inet_sock_set_state CLOSE -> SYN_SENT. That transition runs inside
 *           connect()/sendto(MSG_FASTOPEN)/io_uring connect, in the connecting
 *           task's context, so bpf_get_current_pid_tgid() names the right process
 *           (and it covers paths a sys_enter_connect probe would miss).
 * Deleted:  SYN_SENT -> ESTABLISHED (after copying pid/comm into the CONNECT
 *           record), SYN_SENT -> CLOSE (failed connect), and for the rare
 *           simultaneous open SYN_RECV -> ESTABLISHED / SYN_RECV -> CLOSE.
 * Bound:    65536 entries, LRU: an entry whose delete we missed (e.g. a socket
 *           that was mid-connect when the program was detached and re-attached)
 *           is evicted by newer ones instead of ever filling the map.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct connecting_value);
} connecting SEC(".maps");

/*
 * counters: per-CPU u64 per enum tracker_counter; user space sums over CPUs.
 * Written: only incremented, by the handlers below. Never deleted.
 * Bound:   TRACKER_COUNTER_MAX slots.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TRACKER_COUNTER_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &idx);

	/* Atomic: syscall tracepoints may run preemptible (only migration disabled). */
	if (v)
		__sync_fetch_and_add(v, 1);
}

/*
 * 0 in the real object. The test build (build/test/tracker-record-pad.bpf.o, scripts/build-bpf.sh)
 * makes every record this many bytes longer, so that a test can prove that the reader counts
 * records of a foreign size (badSizeRecords) and never hands them to the decoder.
 */
#ifndef TRACKER_TEST_RECORD_PAD
#define TRACKER_TEST_RECORD_PAD 0
#endif
#define TRACKER_RECORD_BYTES (sizeof(struct tracker_event) + TRACKER_TEST_RECORD_PAD)

static __always_inline struct tracker_event *reserve_event(__u8 type, __u64 cookie)
{
	struct tracker_event *e = bpf_ringbuf_reserve(&events, TRACKER_RECORD_BYTES, 0);

	if (!e) {
		count(TRACKER_COUNTER_LOST);
		return NULL;
	}
	/* Ring memory is reused: clear it so no stale bytes reach user space. */
	__builtin_memset(e, 0, TRACKER_RECORD_BYTES);
	e->timestamp_ns = bpf_ktime_get_ns();
	e->cpu = bpf_get_smp_processor_id();
	e->type = type;
	e->sock_cookie = cookie;
	return e;
}

/*
 * No flag: the kernel's own choice, which wakes the reader's epoll only for a record written
 * into a ring the reader had emptied (consumer position == this record's). A reader draining
 * on its timer is woken at most once per drain (a wake-up with nobody waiting: an irq_work);
 * an idle reader sleeps in epoll until the first record instead of polling an empty ring.
 */
static __always_inline void submit_event(struct tracker_event *e)
{
	bpf_ringbuf_submit(e, 0);
}

/* ::ffff:a.b.c.d */
static __always_inline bool is_v4_mapped(const __u8 *a)
{
	const __u32 *w = (const __u32 *)a;

	return w[0] == 0 && w[1] == 0 && w[2] == bpf_htonl(0x0000ffff);
}

/*
 * e->saddr/daddr hold IPv6 addresses. If the peer is IPv4-mapped (IPv4 traffic on
 * a dual-stack socket) fold the record to family 4: v4 address in bytes 0..3, rest zero.
 */
static __always_inline void set_v6_family(struct tracker_event *e)
{
	__u32 *s = (__u32 *)e->saddr;
	__u32 *d = (__u32 *)e->daddr;

	if (!is_v4_mapped(e->daddr)) {
		e->family = TRACKER_FAMILY_IPV6;
		return;
	}
	e->family = TRACKER_FAMILY_IPV4;
	d[0] = d[3];
	d[1] = d[2] = d[3] = 0;
	s[0] = is_v4_mapped(e->saddr) ? s[3] : 0;
	s[1] = s[2] = s[3] = 0;
}

static __always_inline __u32 sk_netns(const struct sock *sk)
{
	return BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
}

/* Tuple and family from the inet_sock_set_state arguments (ports already host order). */
static __always_inline bool tuple_from_tp(struct tracker_event *e,
					  const struct trace_event_raw_inet_sock_set_state *ctx)
{
	e->sport = ctx->sport;
	e->dport = ctx->dport;
	if (ctx->family == AF_INET) {
		e->family = TRACKER_FAMILY_IPV4;
		__builtin_memcpy(e->saddr, ctx->saddr, 4);
		__builtin_memcpy(e->daddr, ctx->daddr, 4);
		return true;
	}
	if (ctx->family == AF_INET6) {
		/*
		 * CO-RE turns the array address into a computed ctx pointer, which the
		 * verifier refuses to dereference; a helper read of ctx memory is fine.
		 */
		bpf_probe_read_kernel(e->saddr, 16, ctx->saddr_v6);
		bpf_probe_read_kernel(e->daddr, 16, ctx->daddr_v6);
		set_v6_family(e);
		return true;
	}
	return false;
}

/*
 * Tuple and family straight from the socket, as the classic tracepoint's TP_fast_assign reads them
 * (inet_sport, not skc_num: tcp_set_state releases the port before the TCP_CLOSE transition is
 * traced). Under tp_btf only, where `sk` is a BTF pointer: plain loads (a fault reads as zero), no
 * helper call, but for inet_sport, which lies past struct sock where the verifier lets no load of
 * a struct sock pointer reach.
 */
static __always_inline bool tuple_from_btf_sk(struct tracker_event *e, const struct sock *sk)
{
	__u16 family = sk->__sk_common.skc_family;
	__be16 sport = 0;

	bpf_probe_read_kernel(&sport, sizeof(sport), &((const struct inet_sock *)sk)->inet_sport);
	e->sport = bpf_ntohs(sport);
	e->dport = bpf_ntohs(sk->__sk_common.skc_dport);
	if (family == AF_INET) {
		e->family = TRACKER_FAMILY_IPV4;
		*(__u32 *)e->saddr = sk->__sk_common.skc_rcv_saddr;
		*(__u32 *)e->daddr = sk->__sk_common.skc_daddr;
		return true;
	}
	if (family == AF_INET6) {
		for (int i = 0; i < 4; i++) {
			((__u32 *)e->saddr)[i] = sk->__sk_common.skc_v6_rcv_saddr.in6_u.u6_addr32[i];
			((__u32 *)e->daddr)[i] = sk->__sk_common.skc_v6_daddr.in6_u.u6_addr32[i];
		}
		set_v6_family(e);
		return true;
	}
	return false;
}

/*
 * One state change, from either attach type: `tp` is the classic tracepoint's record (the tuple
 * from it, the socket through probe reads), or NULL under tp_btf (everything from `sk`, a BTF
 * pointer, by plain loads). Inlined into each program with a literal NULL or the context, and
 * `btf` says which as a constant the compiler folds: no program carries the other's reads (a
 * plain load through the classic tracepoint's socket address would not pass the verifier).
 */
static __always_inline bool state_tuple(struct tracker_event *e, const struct sock *sk,
					const struct trace_event_raw_inet_sock_set_state *tp, const bool btf)
{
	return btf ? tuple_from_btf_sk(e, sk) : tuple_from_tp(e, tp);
}

static __always_inline __u32 state_netns(const struct sock *sk, const bool btf)
{
	return btf ? sk->__sk_common.skc_net.net->ns.inum : sk_netns(sk);
}

/* Whether a struct socket (a file a process holds) is attached: not yet, for a passive child. */
static __always_inline bool state_has_socket(const struct sock *sk, const bool btf)
{
	return btf ? sk->sk_socket != NULL : BPF_CORE_READ(sk, sk_socket) != NULL;
}

static __always_inline void emit_connect(const struct sock *sk, const struct trace_event_raw_inet_sock_set_state *tp,
					 const bool btf, __u64 key, const struct connecting_value *who)
{
	struct tracker_event *e = reserve_event(TRACKER_EVENT_CONNECT, key);

	if (!e)
		return;
	if (!state_tuple(e, sk, tp, btf)) {
		bpf_ringbuf_discard(e, BPF_RB_NO_WAKEUP);
		return;
	}
	e->netns = state_netns(sk, btf);
	if (who) {
		e->pid = who->pid;
		__builtin_memcpy(e->comm, who->comm, TRACKER_COMM_LEN);
	}
	submit_event(e);
}

/*
 * Open, as Scope's procspy reads /proc: established or half-closed. The /proc source
 * (plugin/procfs/tcp-table.ts) keeps the same set.
 */
static __always_inline bool is_open_state(int state)
{
	return state == TCP_ESTABLISHED || state == TCP_FIN_WAIT1 || state == TCP_FIN_WAIT2 ||
	       state == TCP_CLOSE_WAIT;
}

static __always_inline int on_set_state(const struct sock *sk, int oldstate, int newstate,
					const struct trace_event_raw_inet_sock_set_state *tp, const bool btf)
{
	__u64 key = (__u64)sk;
	struct connecting_value *who;

	/* connect() in the caller's context: remember who it is. */
	if (newstate == TCP_SYN_SENT) {
		if (oldstate == TCP_CLOSE) {
			struct connecting_value v = {};

			v.pid = bpf_get_current_pid_tgid() >> 32;
			bpf_get_current_comm(v.comm, sizeof(v.comm));
			bpf_map_update_elem(&connecting, &key, &v, BPF_ANY);
		}
		return 0;
	}

	if (oldstate == TCP_SYN_SENT) {
		if (newstate == TCP_ESTABLISHED) {
			who = bpf_map_lookup_elem(&connecting, &key);
			if (!who)
				count(TRACKER_COUNTER_CONNECT_NO_PID);
			/* Copy pid/comm out before the delete frees the LRU slot. */
			emit_connect(sk, tp, btf, key, who);
			if (who)
				bpf_map_delete_elem(&connecting, &key);
		} else if (newstate == TCP_CLOSE) {
			count(TRACKER_COUNTER_FAILED_CONNECT);
			bpf_map_delete_elem(&connecting, &key);
		}
		/* SYN_SENT -> SYN_RECV (simultaneous open): keep the entry. */
		return 0;
	}

	if (oldstate == TCP_SYN_RECV) {
		/*
		 * Passive children pass here on every accept-side handshake; the lookup
		 * only hits for a simultaneous open that began as our SYN_SENT. That socket
		 * is connect()'s, so it has a struct socket; a passive child has none until
		 * accept() grafts one (a Fast Open child accepted early falls through to a
		 * lookup that misses): one load instead of a hash lookup per accepted connection.
		 */
		if (!state_has_socket(sk, btf))
			return 0;
		if (newstate == TCP_ESTABLISHED) {
			who = bpf_map_lookup_elem(&connecting, &key);
			if (who) {
				emit_connect(sk, tp, btf, key, who);
				bpf_map_delete_elem(&connecting, &key);
			}
		} else if (newstate == TCP_CLOSE) {
			bpf_map_delete_elem(&connecting, &key);
		}
		return 0;
	}

	/*
	 * Closed when it leaves the open states: into LAST_ACK or CLOSING (both ends sent FIN,
	 * the socket may linger unacknowledged) or CLOSE (a reset, or FIN_WAIT2 handing over to
	 * its time-wait remnant; the full socket never enters TIME_WAIT). LAST_ACK/CLOSING ->
	 * CLOSE was reported already. Decided here, not in user space: one record per
	 * connection either way, and user space never sees the states.
	 */
	if (!is_open_state(oldstate) || is_open_state(newstate))
		return 0;

	/* May run in softirq: pid/comm stay 0/"" */
	struct tracker_event *e = reserve_event(TRACKER_EVENT_CLOSE, key);

	if (!e)
		return 0;
	if (!state_tuple(e, sk, tp, btf)) {
		bpf_ringbuf_discard(e, BPF_RB_NO_WAKEUP);
		return 0;
	}
	e->netns = state_netns(sk, btf);
	submit_event(e);
	return 0;
}

/*
 * A tp_btf program still guards against itself: a run that starts while the same program is running
 * on that CPU is skipped (and counted in its recursion_misses). That happens when a softirq lands
 * inside a process-context run, and on kernels whose tracepoints run preemptible (6.18) when another
 * task's state change preempts one. So the state change has two tp_btf programs, attached in this
 * order: the first does the work; the second, the backstop, does it only when the first was skipped
 * for this very change.
 *
 * It knows that exactly from the kernel's own guard: the first program's per-CPU `prog->active`,
 * which the kernel raises before the first's body and drops after it, and which makes the kernel
 * skip the first whenever it is already non-zero. The probes of one tracepoint run one after the
 * other, so when the backstop runs for a change and the first's counter on its CPU is non-zero, a
 * run of the first is on this CPU below us, interrupted or preempted: the first was skipped for this
 * change. When it is zero, the first ran for it. No window, no tag to go stale. (A per-CPU flag
 * the first set in its body, the design before, missed the skips that landed between the kernel's
 * guard and the body: counted, but not done.)
 *
 * A program cannot name another's `struct bpf_prog`, nor does this kernel's BTF mark `active` as a
 * per-CPU pointer, so user space sets it up after load (native/src/backstop_setup.c): an
 * iter/bpf_prog pass finds the first program by id and stores its `active` (a per-CPU pointer, as
 * a number), an iter/bpf_map pass stores the per-CPU pointer behind `cpu_base`; the backstop's CPU
 * offset is then the address of its own `cpu_base` entry minus that pointer, and the first's
 * counter for this CPU is one bpf_probe_read_kernel away. Kernels whose `struct bpf_prog` has no
 * `active` (5.10) have no such guard on raw tracepoints either: the first is never skipped there,
 * the setup finds nothing and the backstop does nothing. What both programs miss (the backstop
 * skipped too: a change nested inside a backstop run nested inside a first run) is counted by user
 * space as the first's recursion_misses minus TRACKER_COUNTER_BACKSTOP.
 */

/* What the backstop reads of the first program; filled once by the setup iterators, then read-only. */
struct backstop_view {
	__u32 first_id;     /* written by user space before the iterators run */
	__u32 cpu_base_id;  /* likewise: the id of the cpu_base map */
	__u64 first_active; /* per-CPU pointer to the first program's `active`, as a number; 0: not set up */
	__u64 cpu_base_ptr; /* per-CPU pointer to cpu_base's entry, as a number */
};

/*
 * backstop_view: one entry. Written by user space (the ids) and the setup iterators below (the
 * pointers), before the state-change programs are attached; read by the backstop. Never deleted.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct backstop_view);
} backstop_view SEC(".maps");

/*
 * cpu_base: per-CPU, the CPU's per-CPU offset (this CPU's entry address minus the entry's per-CPU
 * pointer). Written by the backstop, on its first run on each CPU; read by it. Never deleted.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} cpu_base SEC(".maps");

/* Setup, run once by user space: the first state-change program's per-CPU `active`. */
SEC("iter/bpf_prog")
int backstop_find_first(struct bpf_iter__bpf_prog *ctx)
{
	struct bpf_prog *prog = ctx->prog;
	__u32 zero = 0;
	struct backstop_view *view = bpf_map_lookup_elem(&backstop_view, &zero);

	if (!prog || !view || BPF_CORE_READ(prog, aux, id) != view->first_id)
		return 0;
	if (bpf_core_field_exists(prog->active))
		view->first_active = (__u64)BPF_CORE_READ(prog, active);
	return 0;
}

/* Setup, run once by user space: the per-CPU pointer behind cpu_base's one entry. */
SEC("iter/bpf_map")
int backstop_find_cpu_base(struct bpf_iter__bpf_map *ctx)
{
	struct bpf_map *map = ctx->map;
	__u32 zero = 0;
	struct backstop_view *view = bpf_map_lookup_elem(&backstop_view, &zero);

	if (!map || !view || BPF_CORE_READ(map, id) != view->cpu_base_id)
		return 0;
	/* A per-CPU array's `struct bpf_map` is the head of its `struct bpf_array`. */
	view->cpu_base_ptr = (__u64)BPF_CORE_READ((struct bpf_array *)map, pptrs[0]);
	return 0;
}

/* Under tp_btf: a plain load. sk_protocol is an 8-bit bitfield before 5.6, a plain u16 since. */
static __always_inline bool is_tcp(const struct sock *sk)
{
	return BPF_CORE_READ_BITFIELD(sk, sk_protocol) == IPPROTO_TCP;
}

/* Preferred: BTF raw tracepoint (see the top of this file). */
SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(handle_set_state_btf, const struct sock *sk, int oldstate, int newstate)
{
	return is_tcp(sk) ? on_set_state(sk, oldstate, newstate, NULL, true) : 0;
}

/* Whether a run of handle_set_state_btf is on this CPU now (so it was skipped for this change). */
static __always_inline bool first_is_running(void)
{
	__u32 zero = 0;
	struct backstop_view *view = bpf_map_lookup_elem(&backstop_view, &zero);
	__u64 *base = bpf_map_lookup_elem(&cpu_base, &zero);

	if (!view || !base || !view->first_active || !view->cpu_base_ptr)
		return false;
	if (!*base) {
		/* The entry's address goes through the map so that the verifier takes it back as a number. */
		*(volatile __u64 *)base = (__u64)base;
		__u64 here = *(volatile __u64 *)base;

		*base = here - view->cpu_base_ptr;
	}
	int active = 0;

	if (bpf_probe_read_kernel(&active, sizeof(active), (const void *)(view->first_active + *base)))
		return false;
	return active != 0;
}

/* Attached after handle_set_state_btf: does what that one was skipped for. */
SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(handle_set_state_btf_backstop, const struct sock *sk, int oldstate, int newstate)
{
	if (!is_tcp(sk) || !first_is_running())
		return 0;
	count(TRACKER_COUNTER_BACKSTOP);
	return on_set_state(sk, oldstate, newstate, NULL, true);
}

/* Fallback where tp_btf is refused. */
SEC("tracepoint/sock/inet_sock_set_state")
int handle_set_state(struct trace_event_raw_inet_sock_set_state *ctx)
{
	if (ctx->protocol != IPPROTO_TCP)
		return 0;
	return on_set_state((const struct sock *)ctx->skaddr, ctx->oldstate, ctx->newstate, ctx, false);
}

/* Tuple, family and netns of an accepted socket, read from struct sock. */
static __always_inline void tuple_from_sk(struct tracker_event *e, const struct sock *sk, __u16 family)
{
	e->netns = sk_netns(sk);
	e->sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	/*
	 * A connection reset before accept() returned has already released its port
	 * (inet_put_port zeroes skc_num); inet_sport keeps it.
	 */
	if (!e->sport)
		e->sport = bpf_ntohs(BPF_CORE_READ((const struct inet_sock *)sk, inet_sport));
	e->dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (family == AF_INET) {
		e->family = TRACKER_FAMILY_IPV4;
		BPF_CORE_READ_INTO((__u32 *)e->saddr, sk, __sk_common.skc_rcv_saddr);
		BPF_CORE_READ_INTO((__u32 *)e->daddr, sk, __sk_common.skc_daddr);
	} else {
		BPF_CORE_READ_INTO((struct in6_addr *)e->saddr, sk, __sk_common.skc_v6_rcv_saddr);
		BPF_CORE_READ_INTO((struct in6_addr *)e->daddr, sk, __sk_common.skc_v6_daddr);
		set_v6_family(e);
	}
}

static __always_inline void handle_accept_return(long ret)
{
	if (ret < 0)
		return;

	/* current->files->fdt->fd[ret]->private_data (struct socket *)->sk */
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	struct file *file = NULL;
	struct file **fds;
	struct socket *sock;
	struct sock *sk;

	if (!fdt || ret >= BPF_CORE_READ(fdt, max_fds))
		goto no_sock;
	fds = BPF_CORE_READ(fdt, fd);
	if (!fds || bpf_probe_read_kernel(&file, sizeof(file), &fds[ret]) || !file)
		goto no_sock;
	sock = BPF_CORE_READ(file, private_data);
	/* The socket's back pointer guards against the fd having been reused already. */
	if (!sock || BPF_CORE_READ(sock, file) != file)
		goto no_sock;
	sk = BPF_CORE_READ(sock, sk);
	if (!sk)
		goto no_sock;

	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);

	if (family != AF_INET && family != AF_INET6)
		return; /* AF_UNIX etc.: not ours, not an error */
	/* sk_protocol: an 8-bit bitfield before 5.6, a plain u16 since; probe both. */
	if (BPF_CORE_READ_BITFIELD_PROBED(sk, sk_protocol) != IPPROTO_TCP)
		return;

	__u8 state = BPF_CORE_READ(sk, __sk_common.skc_state);
	__u32 pid = bpf_get_current_pid_tgid() >> 32;
	struct tracker_event *e = reserve_event(TRACKER_EVENT_ACCEPT, (__u64)sk);

	if (!e)
		return;
	tuple_from_sk(e, sk, family);
	e->pid = pid;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	submit_event(e);

	/*
	 * The peer reset it before accept() returned: its CLOSE transition fired before
	 * this ACCEPT, so report the close again after the open.
	 */
	if (state == TCP_CLOSE) {
		e = reserve_event(TRACKER_EVENT_CLOSE, (__u64)sk);
		if (!e)
			return;
		tuple_from_sk(e, sk, family);
		submit_event(e);
	}
	return;

no_sock:
	count(TRACKER_COUNTER_ACCEPT_NO_SOCK);
}

SEC("tracepoint/syscalls/sys_exit_accept")
int handle_exit_accept(struct trace_event_raw_sys_exit *ctx)
{
	handle_accept_return(ctx->ret);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int handle_exit_accept4(struct trace_event_raw_sys_exit *ctx)
{
	handle_accept_return(ctx->ret);
	return 0;
}
