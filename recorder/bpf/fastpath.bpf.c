// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Earshot's kernel fast path: a TC (clsact ingress) program that relays the
 * RTP of established streams in the kernel and hands a copy of each packet
 * to the recorder through a ring buffer.
 *
 * Userspace (recorder/src/runtime/fastpath.rs) owns every decision: it
 * inserts a stream into `streams` once the stream's source is latched and
 * nothing in its packets needs userspace (no announcement playing), and
 * deletes it to take the stream back. The program never creates an entry,
 * so a peer cannot grow a map: `streams` has one entry per local port at
 * most (its size is the recorder's RTP range).
 *
 * What the program does not recognise goes on to the stack untouched
 * (TC_ACT_UNSPEC: the next program, then the socket), where the recorder
 * handles it as it always did: packets of unknown streams, from another
 * source, of another SSRC than the offsets are for, RTCP (muxed or not),
 * IPv6, IP options, fragments, and packets longer than a copy can hold.
 *
 * Built by scripts/bpf.sh (Debian's clang: -target bpf -O2 -g); the kernel
 * verifies it when the recorder loads it.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#ifndef AF_INET
#define AF_INET 2
#endif

/* Longest RTP packet (header and payload) copied to the recorder; a longer
 * one is left to userspace. */
#define MAX_COPY 1024
/* Most packets per second one stream may send (userspace: MAX_AUDIO_PPS). */
#define MAX_PPS 250
#define NS_PER_SEC 1000000000ULL

/* A stream as the packet names it: its source and our port, network order. */
struct stream_key {
	__u32 saddr;
	__u16 sport;
	__u16 dport;
};

#define F_LOCAL 1     /* the destination is on this host: rewrite and deliver */
#define F_SSRC 2      /* the offsets apply to packets of `ssrc` only */
#define F_BOUND 4     /* only packets to `saddr` (the relay's bound address) */

/* What userspace wrote (first part) and what the program counts. */
struct stream_fwd {
	__u32 saddr;   /* our source address; 0: the route's */
	__u32 daddr;   /* where the packet goes */
	__u16 sport;   /* our port toward it */
	__u16 dport;
	__u32 ssrc;    /* network order */
	__u32 ts_off;  /* added to the RTP timestamp */
	__u16 seq_off; /* added to the RTP sequence number */
	__u8 ring;     /* the shard whose ring gets the copies */
	__u8 flags;
	/* Counted by the program. */
	__u64 window;  /* start of the current rate window, ns */
	__u64 in_window;
	__u64 packets;
	__u64 bytes;
	__u64 copy_drops;
	__u64 rate_drops;
};

/* A copy of one relayed packet, for the stream's shard. */
struct copy {
	__u64 at_ns;      /* arrival, CLOCK_MONOTONIC */
	__u32 saddr;      /* the stream's key, network order */
	__u16 sport;
	__u16 dport;
	__u32 copy_drops; /* the stream's lost copies before this one */
	__u16 len;        /* bytes of `data` */
	__u16 pad;
	__u8 data[MAX_COPY];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct stream_key);
	__type(value, struct stream_fwd);
	__uint(max_entries, 1024); /* set by the loader to the RTP range */
} streams SEC(".maps");

/* Totals: 0 relayed, 1 to userspace (not ours or not recognised), 2 copies
 * lost, 3 no route (left to userspace), 4 rate-limited. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 5);
} totals SEC(".maps");

#define RING(n)                                                                \
	struct {                                                               \
		__uint(type, BPF_MAP_TYPE_RINGBUF);                            \
		__uint(max_entries, 1 << 22);                                  \
	} ring##n SEC(".maps")

RING(0);
RING(1);
RING(2);
RING(3);
RING(4);
RING(5);
RING(6);
RING(7);

static __always_inline void *ring_of(__u8 n)
{
	switch (n) {
	case 0: return &ring0;
	case 1: return &ring1;
	case 2: return &ring2;
	case 3: return &ring3;
	case 4: return &ring4;
	case 5: return &ring5;
	case 6: return &ring6;
	default: return &ring7;
	}
}

static __always_inline void count(__u32 what)
{
	__u64 *n = bpf_map_lookup_elem(&totals, &what);
	if (n)
		*n += 1;
}

#define ETH_OFF 0
#define IP_OFF (ETH_OFF + sizeof(struct ethhdr))
#define UDP_OFF (IP_OFF + sizeof(struct iphdr))
#define RTP_OFF (UDP_OFF + sizeof(struct udphdr))
#define IP_CSUM (IP_OFF + offsetof(struct iphdr, check))
#define UDP_CSUM (UDP_OFF + offsetof(struct udphdr, check))

SEC("classifier")
int earshot_fastpath(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + IP_OFF;
	struct udphdr *udp = data + UDP_OFF;
	__u8 *rtp = data + RTP_OFF;

	/* Ethernet, IPv4 without options or fragments, UDP, an RTP header:
	 * anything else is not ours. */
	if ((void *)(rtp + 12) > end)
		return TC_ACT_UNSPEC;
	if (eth->h_proto != bpf_htons(ETH_P_IP) || ip->ihl != 5 ||
	    ip->protocol != IPPROTO_UDP ||
	    (ip->frag_off & bpf_htons(0x3fff)) != 0)
		return TC_ACT_UNSPEC;

	struct stream_key key = {
		.saddr = ip->saddr,
		.sport = udp->source,
		.dport = udp->dest,
	};
	struct stream_fwd *f = bpf_map_lookup_elem(&streams, &key);
	if (!f)
		return TC_ACT_UNSPEC;
	/* What the relay's socket would not have received (another address
	 * than the one it is bound to) is not its stream's. Sockets bound to
	 * every address (F_BOUND unset) leave source and port as the key: a
	 * host that routes for others could see a latched source sending to
	 * another host's port that equals one of ours. */
	if ((f->flags & F_BOUND) && ip->daddr != f->saddr)
		return TC_ACT_UNSPEC;

	/* Compared as numbers, not pointers: with CAP_BPF and without
	 * CAP_PERFMON (what the operator grants) the verifier refuses
	 * arithmetic on a packet pointer with a variable. */
	__u32 len = bpf_ntohs(udp->len);
	__u32 tot = bpf_ntohs(ip->tot_len);
	if (len < sizeof(struct udphdr) + 12 ||
	    len > sizeof(struct udphdr) + MAX_COPY ||
	    tot > skb->len - IP_OFF || len + sizeof(struct iphdr) > tot) {
		count(1);
		return TC_ACT_UNSPEC;
	}
	len -= sizeof(struct udphdr);
	/* RTP version 2; RTCP sharing the port (RFC 5761: 200-204) stays in
	 * userspace, which rewrites it after announcements. */
	if ((rtp[0] >> 6) != 2 || (rtp[1] >= 200 && rtp[1] <= 204)) {
		count(1);
		return TC_ACT_UNSPEC;
	}
	__u32 ssrc = *(__u32 *)(rtp + 8);
	int shift = (f->seq_off != 0 || f->ts_off != 0);
	if ((f->flags & F_SSRC) && ssrc != f->ssrc) {
		/* Another source: userspace decides what it sees. */
		count(1);
		return TC_ACT_UNSPEC;
	}
	if (!(f->flags & F_SSRC))
		shift = 0;

	/* The rate limit userspace applies, per stream. */
	__u64 now = bpf_ktime_get_ns();
	if (now - f->window >= NS_PER_SEC) {
		f->window = now;
		f->in_window = 0;
	}
	f->in_window += 1;
	if (f->in_window > MAX_PPS) {
		__sync_fetch_and_add(&f->rate_drops, 1);
		count(4);
		return TC_ACT_SHOT;
	}

	/* Where it goes: the route to the destination, and our address on it. */
	/* Every byte set: without CAP_PERFMON the verifier refuses a helper
	 * reading stack bytes never written (padding, unions). */
	struct bpf_fib_lookup fib;
	__builtin_memset(&fib, 0, sizeof(fib));
	__u32 new_saddr = f->saddr;
	__u32 daddr = f->daddr;
	int local = f->flags & F_LOCAL;
	if (!local) {
		fib.family = AF_INET;
		fib.l4_protocol = IPPROTO_UDP;
		fib.tot_len = bpf_ntohs(ip->tot_len);
		fib.ipv4_dst = daddr;
		fib.ifindex = skb->ifindex;
		long rc = bpf_fib_lookup(skb, &fib, sizeof(fib),
					 BPF_FIB_LOOKUP_SRC |
						 BPF_FIB_LOOKUP_SKIP_NEIGH);
		if (rc != BPF_FIB_LKUP_RET_SUCCESS) {
			/* No route the kernel would forward by (or forwarding
			 * is off here): userspace relays it. */
			count(3);
			return TC_ACT_UNSPEC;
		}
		if (new_saddr == 0)
			new_saddr = fib.ipv4_src;
	} else if (new_saddr == 0) {
		new_saddr = ip->daddr;
	}

	/* The copy first, of the packet as it came. A full ring loses the
	 * copy, never the packet. */
	struct copy *c = bpf_ringbuf_reserve(ring_of(f->ring), sizeof(*c), 0);
	if (c) {
		c->at_ns = now;
		c->saddr = key.saddr;
		c->sport = key.sport;
		c->dport = key.dport;
		c->copy_drops = (__u32)f->copy_drops;
		c->len = len;
		c->pad = 0;
		/* len is 12..MAX_COPY here: the verifier knows it. */
		if (bpf_skb_load_bytes(skb, RTP_OFF, c->data, len) == 0)
			bpf_ringbuf_submit(c, BPF_RB_NO_WAKEUP);
		else
			bpf_ringbuf_discard(c, BPF_RB_NO_WAKEUP);
	} else {
		__sync_fetch_and_add(&f->copy_drops, 1);
		count(2);
	}

	/* The RTP numbering an announcement shifted. */
	if (shift) {
		__u16 old_seq = *(__u16 *)(rtp + 2);
		__u32 old_ts = *(__u32 *)(rtp + 4);
		__u16 new_seq = bpf_htons(bpf_ntohs(old_seq) + f->seq_off);
		__u32 new_ts = bpf_htonl(bpf_ntohl(old_ts) + f->ts_off);
		/* A rewrite that fails half-way (a clone that cannot be made
		 * writable) drops the packet rather than send it half-done. */
		if (bpf_l4_csum_replace(skb, UDP_CSUM, old_seq, new_seq,
					BPF_F_MARK_MANGLED_0 | 2) ||
		    bpf_l4_csum_replace(skb, UDP_CSUM, old_ts, new_ts,
					BPF_F_MARK_MANGLED_0 | 4) ||
		    bpf_skb_store_bytes(skb, RTP_OFF + 2, &new_seq, 2, 0) ||
		    bpf_skb_store_bytes(skb, RTP_OFF + 4, &new_ts, 4, 0))
			return TC_ACT_SHOT;
	}

	/* Addresses and ports; the IP header's checksum and the UDP checksum
	 * (its pseudo-header covers the addresses). */
	__u32 old_saddr = key.saddr;
	__u32 old_daddr;
	__u16 old_sport = key.sport;
	__u16 old_dport = key.dport;
	data = (void *)(long)skb->data;
	end = (void *)(long)skb->data_end;
	ip = data + IP_OFF;
	if ((void *)(ip + 1) > end)
		return TC_ACT_SHOT;
	old_daddr = ip->daddr;
	__u16 sport = f->sport, dport = f->dport;
	if (bpf_l4_csum_replace(skb, UDP_CSUM, old_saddr, new_saddr,
				BPF_F_PSEUDO_HDR | BPF_F_MARK_MANGLED_0 | 4) ||
	    bpf_l4_csum_replace(skb, UDP_CSUM, old_daddr, daddr,
				BPF_F_PSEUDO_HDR | BPF_F_MARK_MANGLED_0 | 4) ||
	    bpf_l4_csum_replace(skb, UDP_CSUM, old_sport, sport,
				BPF_F_MARK_MANGLED_0 | 2) ||
	    bpf_l4_csum_replace(skb, UDP_CSUM, old_dport, dport,
				BPF_F_MARK_MANGLED_0 | 2) ||
	    bpf_l3_csum_replace(skb, IP_CSUM, old_saddr, new_saddr, 4) ||
	    bpf_l3_csum_replace(skb, IP_CSUM, old_daddr, daddr, 4) ||
	    bpf_skb_store_bytes(skb, IP_OFF + offsetof(struct iphdr, saddr),
				&new_saddr, 4, 0) ||
	    bpf_skb_store_bytes(skb, IP_OFF + offsetof(struct iphdr, daddr),
				&daddr, 4, 0) ||
	    bpf_skb_store_bytes(skb, UDP_OFF + offsetof(struct udphdr, source),
				&sport, 2, 0) ||
	    bpf_skb_store_bytes(skb, UDP_OFF + offsetof(struct udphdr, dest),
				&dport, 2, 0))
		return TC_ACT_SHOT;

	__sync_fetch_and_add(&f->packets, 1);
	__sync_fetch_and_add(&f->bytes, len);
	count(0);
	if (local) {
		/* On this host: the stack delivers it by its new address. */
		return TC_ACT_OK;
	}
	struct bpf_redir_neigh nh;
	__builtin_memset(&nh, 0, sizeof(nh));
	nh.nh_family = AF_INET;
	nh.ipv4_nh = fib.ipv4_dst;
	return bpf_redirect_neigh(fib.ifindex, &nh, sizeof(nh), 0);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
