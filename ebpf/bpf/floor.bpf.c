// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The floor: a TC program that does nothing. Benchmarks run it through
 * BPF_PROG_TEST_RUN next to weir_from_pod/weir_to_pod, so the observe cost is
 * reported relative to the fixed cost of entering any TC program.
 */
// clang-format off
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
// clang-format on

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("classifier")
int weir_floor(struct __sk_buff *skb)
{
	(void)skb;
	return TC_ACT_OK;
}
