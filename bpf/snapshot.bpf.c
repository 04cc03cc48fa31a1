// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Kernel side of the socket snapshot: one struct tracker_socket (bpf/tracker.h) per TCP socket
 * that a process holds in its fd table, for every process on the host, then one per socket of
 * the reader's own network namespace, written to the iterators' seq_files. User space reads them
 * to EOF (native/src/snapshot_session.cc) and folds.
 *
 * iter/task_file visits every task's open files, skipping threads that share their leader's
 * file table, so a process is walked once. It sees each socket with its owner in one pass and
 * in every network namespace. A listener's accept queue holds sockets no process holds yet:
 * from each listening socket the walk follows the queue and writes those with pid 0, as /proc
 * lists them, in every namespace. What it cannot see is a socket nothing reaches from a file
 * (a kernel socket, an orphan after close, one only in an io_uring table). Not iter/tcp: it
 * returns the sockets of one namespace (the creator's; tcp's seq_sk_match) and locks each
 * socket it shows; for the host's namespace alone it cost more than this whole walk (200 ms vs
 * 140 ms at 200k sockets). See README, "How the eBPF side works".
 *
 * Every TCP state is emitted; user space picks the states it tracks, as the /proc scan does.
 * A socket held by several processes (or several fds) is emitted once per fd; user space folds.
 * Tasks are visited in the iterator creator's pid namespace: the plugin must run in the host's.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>

#include "tracker.h"

#define AF_INET 2
#define AF_INET6 10
#define S_IFMT 00170000
#define S_IFSOCK 0140000

/* bpf_seq_write is GPL-only. */
char LICENSE[] SEC("license") = "Dual BSD/GPL";

/*
 * Set by user space before load: take the 5.8-5.10 path (probe reads) even where
 * bpf_sock_from_file exists, so that path is tested and measured on new kernels too.
 */
const volatile bool force_probed = false;

/*
 * struct proto instances seen to be TCP's (tcp_prot, tcpv6_prot, a TLS or sockmap variant): a
 * socket's sk_prot sits in the line the walk reads anyway, its sk_protocol some 500 bytes on, a
 * cache miss per socket (~10% of the walk at 200k sockets). A proto serves one protocol, so one
 * seen with IPPROTO_TCP always is; concurrent walks race only to store the same kind of value.
 */
#define TCP_PROTOS 4
__u64 tcp_protos[TCP_PROTOS];
__u32 tcp_protos_next;

static __always_inline bool known_tcp_proto(__u64 prot)
{
	for (int i = 0; i < TCP_PROTOS; i++)
		if (tcp_protos[i] == prot)
			return true;
	return false;
}

static __always_inline void remember_tcp_proto(__u64 prot)
{
	tcp_protos[tcp_protos_next++ % TCP_PROTOS] = prot;
}

/* ::ffff:a.b.c.d */
static __always_inline bool is_v4_mapped(const __u8 *a)
{
	const __u32 *w = (const __u32 *)a;

	return w[0] == 0 && w[1] == 0 && w[2] == bpf_htonl(0x0000ffff);
}

/*
 * An IPv6 socket talking to an IPv4 peer (dual stack) is folded to family 4, exactly as the
 * tracker's events fold it, so that both sources key the connection alike.
 */
static __always_inline void fold_v4_mapped(struct tracker_socket *r)
{
	__u32 *s = (__u32 *)r->saddr;
	__u32 *d = (__u32 *)r->daddr;

	if (!is_v4_mapped(r->daddr)) {
		r->family = TRACKER_FAMILY_IPV6;
		return;
	}
	r->family = TRACKER_FAMILY_IPV4;
	d[0] = d[3];
	d[1] = d[2] = d[3] = 0;
	s[0] = is_v4_mapped(r->saddr) ? s[3] : 0;
	s[1] = s[2] = s[3] = 0;
}

/* A socket record's socket fields (all but the owner's), every one through a probe read. */
static __always_inline void read_socket_probed(struct tracker_socket *r, struct sock *sk, __u16 family)
{
	r->type = TRACKER_RECORD_SOCKET;
	r->sock_cookie = (__u64)sk;
	r->netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	r->state = BPF_CORE_READ(sk, __sk_common.skc_state);
	r->sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	r->dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (family == AF_INET) {
		r->family = TRACKER_FAMILY_IPV4;
		BPF_CORE_READ_INTO((__u32 *)r->saddr, sk, __sk_common.skc_rcv_saddr);
		BPF_CORE_READ_INTO((__u32 *)r->daddr, sk, __sk_common.skc_daddr);
	} else {
		BPF_CORE_READ_INTO((struct in6_addr *)r->saddr, sk, __sk_common.skc_v6_rcv_saddr);
		BPF_CORE_READ_INTO((struct in6_addr *)r->daddr, sk, __sk_common.skc_v6_daddr);
		fold_v4_mapped(r);
	}
}

/*
 * Queued children followed per listener. What one program run writes must fit the iterator's
 * buffer (bpf_seq_read: 8 pages): a run that overflows it fails the whole read with E2BIG, which a
 * listener 409 connections behind did at a bound of 1024. So the listener's record and its queue
 * stay within 8 x 4 KiB (the smallest page; larger pages only leave room). A deeper queue is a
 * server far behind; the rest arrive with their accept events.
 */
#define SEQ_RUN_BYTES_MAX (8 * 4096)
#define ACCEPT_QUEUE_WALK_MAX (SEQ_RUN_BYTES_MAX / sizeof(struct tracker_socket) - 1)

/*
 * A socket accepted by no process yet, from a listener's queue: every field through probe reads
 * (the queue is read without its lock, so an entry may be dequeued under us; a read of one then
 * fails or yields a socket that has a file by now, and either is skipped).
 */
static __always_inline void emit_queued(struct seq_file *seq, struct sock *sk)
{
	struct tracker_socket r = {};
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);

	if ((family != AF_INET && family != AF_INET6) || BPF_CORE_READ(sk, sk_socket))
		return;
	read_socket_probed(&r, sk, family);
	bpf_seq_write(seq, &r, sizeof(r));
}

static __always_inline void emit_accept_queue(struct seq_file *seq, struct sock *listener)
{
	struct request_sock *req =
		BPF_CORE_READ((struct inet_connection_sock *)listener, icsk_accept_queue.rskq_accept_head);

	for (int i = 0; i < ACCEPT_QUEUE_WALK_MAX && req; i++) {
		struct sock *child = BPF_CORE_READ(req, sk);

		if (child)
			emit_queued(seq, child);
		req = BPF_CORE_READ(req, dl_next);
	}
}

/*
 * Kernels with bpf_sock_from_file (5.11+): the socket is a BTF pointer, so every field is a plain
 * load (a fault reads as zero) rather than a helper call.
 */
static __always_inline int emit_direct(struct seq_file *seq, struct task_struct *task, __u32 fd,
				       struct file *file, struct inode *inode)
{
	struct tracker_socket r = {};
	struct socket *sock = bpf_sock_from_file(file);

	if (!sock)
		return 0;
	struct sock *sk = sock->sk;

	if (!sk)
		return 0;
	__u16 family = sk->__sk_common.skc_family;

	if (family != AF_INET && family != AF_INET6)
		return 0;
	__u64 prot = (__u64)sk->__sk_common.skc_prot;

	if (!known_tcp_proto(prot)) {
		if (sk->sk_protocol != IPPROTO_TCP)
			return 0;
		remember_tcp_proto(prot);
	}
	r.type = TRACKER_RECORD_SOCKET;
	r.inode = inode->i_ino;
	r.fd = fd;
	r.pid = task->tgid;
	for (int i = 0; i < TRACKER_COMM_LEN; i++)
		r.comm[i] = task->comm[i];
	r.sock_cookie = (__u64)sk;
	r.netns = sk->__sk_common.skc_net.net->ns.inum;
	r.state = sk->__sk_common.skc_state;
	r.sport = sk->__sk_common.skc_num;
	r.dport = bpf_ntohs(sk->__sk_common.skc_dport);
	if (family == AF_INET) {
		r.family = TRACKER_FAMILY_IPV4;
		*(__u32 *)r.saddr = sk->__sk_common.skc_rcv_saddr;
		*(__u32 *)r.daddr = sk->__sk_common.skc_daddr;
	} else {
		for (int i = 0; i < 4; i++) {
			((__u32 *)r.saddr)[i] = sk->__sk_common.skc_v6_rcv_saddr.in6_u.u6_addr32[i];
			((__u32 *)r.daddr)[i] = sk->__sk_common.skc_v6_daddr.in6_u.u6_addr32[i];
		}
		fold_v4_mapped(&r);
	}
	bpf_seq_write(seq, &r, sizeof(r));
	if (r.state == TCP_LISTEN)
		emit_accept_queue(seq, sk);
	return 0;
}

/* Kernels 5.8-5.10: the same fields through bpf_probe_read_kernel. */
static __always_inline int emit_probed(struct seq_file *seq, struct task_struct *task, __u32 fd,
				       struct file *file, struct inode *inode)
{
	struct tracker_socket r = {};
	/*
	 * A sockfs file's private_data is its socket, whose back pointer is the file. An O_PATH fd
	 * of a socket path is S_IFSOCK too, with nothing behind it.
	 */
	struct socket *sock = BPF_CORE_READ(file, private_data);

	if (!sock || BPF_CORE_READ(sock, file) != file)
		return 0;
	struct sock *sk = BPF_CORE_READ(sock, sk);

	if (!sk)
		return 0;
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);

	if (family != AF_INET && family != AF_INET6)
		return 0;
	__u64 prot = (__u64)BPF_CORE_READ(sk, __sk_common.skc_prot);

	if (!known_tcp_proto(prot)) {
		if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
			return 0;
		remember_tcp_proto(prot);
	}
	r.inode = inode->i_ino;
	r.fd = fd;
	r.pid = task->tgid;
	BPF_CORE_READ_STR_INTO(&r.comm, task, comm);
	read_socket_probed(&r, sk, family);
	bpf_seq_write(seq, &r, sizeof(r));
	if (r.state == TCP_LISTEN)
		emit_accept_queue(seq, sk);
	return 0;
}

SEC("iter/task_file")
int snapshot_tcp_sockets(struct bpf_iter__task_file *ctx)
{
	struct task_struct *task = ctx->task;
	struct file *file = ctx->file;

	if (!task || !file)
		return 0;
	/* Every open file on the host passes here: plain loads, no helper call, for the common case. */
	struct inode *inode = file->f_inode;

	if (!inode || (inode->i_mode & S_IFMT) != S_IFSOCK)
		return 0;
	if (!force_probed && bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_sock_from_file))
		return emit_direct(ctx->meta->seq, task, ctx->fd, file, inode);
	return emit_probed(ctx->meta->seq, task, ctx->fd, file, inode);
}
