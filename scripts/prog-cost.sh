#!/usr/bin/env bash
# Per-program cost of variants of the observe programs under iperf3, as the
# kernel's run statistics report it (run_time_ns / run_cnt), in alternated
# rounds. Used to find where the time goes under real traffic
# (docs/benchmarks.md, section 2); not part of `make bench`.
#
#   scripts/prog-cost.sh ROUNDS SECONDS NAME=OBJECT.o ... [none]
#
# Each NAME=OBJECT.o is a build of ebpf/bpf/flow.bpf.c (or floor.bpf.c,
# whose weir_floor is then attached both ways), e.g. the tree's own:
#   clang-19 -target bpfel -D__TARGET_ARCH_x86 -g -O2 -I/usr/include/x86_64-linux-gnu \
#     -Iebpf/bpf -c ebpf/bpf/flow.bpf.c -o /tmp/base.o
# `none` runs iperf3 with nothing attached. Every round runs each variant
# once (TCP for SECONDS, then 64-byte UDP), the order rotating by one per
# round; the summary gives medians (range) per variant.
#
# Everything happens in three network namespaces this script creates and
# deletes (wpc-node holds a bridge and the pods' host veths, wpc-a and wpc-b
# are the pods, 10.77.0.0/24): no packet leaves them. The programs are
# attached with legacy tc (cls_bpf, direct action) from bpftool-pinned
# objects under /sys/fs/bpf/wpc-*. Run statistics are on
# (kernel.bpf_stats_enabled=1) only around the attached runs.
set -euo pipefail

if [[ $# -lt 3 ]]; then
  sed -n '2,16p' "$0" >&2
  exit 2
fi
[[ $(id -u) -eq 0 ]] || { echo "prog-cost.sh: must run as root" >&2; exit 1; }
rounds=$1 secs=$2
shift 2
variants=("$@")
N=wpc-node A=wpc-a B=wpc-b
out=$(mktemp -d)

cleanup() {
  for ns in $N $A $B; do ip netns del $ns 2>/dev/null || true; done
  rm -rf /sys/fs/bpf/wpc-* "$out"
  sysctl -q kernel.bpf_stats_enabled=0
}
trap cleanup EXIT

for ns in $N $A $B; do ip netns add $ns; done
ip -n $N link add br0 type bridge
ip -n $N link set br0 up
i=1
for p in $A $B; do
  ip -n $N link add h$p type veth peer name eth0 netns $p
  ip -n $N link set h$p master br0 up
  ip -n $p link set lo up
  ip -n $p addr add 10.77.0.$i/24 dev eth0
  ip -n $p link set eth0 up
  i=$((i + 1))
done
ip netns exec $B iperf3 -s -p 5301 -D
sleep 0.5

# tc must see /sys/fs/bpf: nsenter, not `ip netns exec` (which remounts /sys)
tc_node() { nsenter --net=/run/netns/$N tc "$@"; }

attach() { # name object
  local d=/sys/fs/bpf/wpc-$1 from to
  bpftool prog loadall "$2" "$d" type classifier
  if [[ -e $d/weir_from_pod ]]; then from=$d/weir_from_pod to=$d/weir_to_pod; else from=$d/weir_floor to=$d/weir_floor; fi
  for h in h$A h$B; do
    tc_node qdisc add dev "$h" clsact
    tc_node filter add dev "$h" ingress bpf da object-pinned "$from"
    tc_node filter add dev "$h" egress bpf da object-pinned "$to"
  done
}

detach() { # name
  for h in h$A h$B; do tc_node qdisc del dev "$h" clsact 2>/dev/null || true; done
  rm -rf "/sys/fs/bpf/wpc-$1"
}

snap() { # name: "prog run_time_ns run_cnt" per program
  local d=/sys/fs/bpf/wpc-$1 p
  for p in weir_from_pod weir_to_pod weir_floor; do
    [[ -e $d/$p ]] && bpftool prog show pinned "$d/$p" -j | jq -r "\"$p \(.run_time_ns // 0) \(.run_cnt // 0)\""
  done
  return 0
}

iperf() { # tcp|udp: Gbit/s or received packets/s
  if [[ $1 == tcp ]]; then
    ip netns exec $A iperf3 -c 10.77.0.2 -p 5301 -t "$secs" -J | jq '.end.sum_received.bits_per_second / 1e9'
  else
    ip netns exec $A iperf3 -c 10.77.0.2 -p 5301 -t "$secs" -u -l 64 -b 0 -J |
      jq '(.end.sum_received.packets - .end.sum_received.lost_packets) / .end.sum_received.seconds'
  fi
}

k=${#variants[@]}
for r in $(seq 0 $((rounds - 1))); do
  for j in $(seq 0 $((k - 1))); do
    v=${variants[$(((j + r) % k))]}
    name=${v%%=*}
    if [[ $v == none ]]; then
      for mode in tcp udp; do echo "$mode none $(iperf $mode) 0 0" >>"$out/$name"; done
      continue
    fi
    attach "$name" "${v#*=}"
    sysctl -q kernel.bpf_stats_enabled=1
    for mode in tcp udp; do
      before=$(snap "$name")
      rate=$(iperf $mode)
      paste <(echo "$before") <(snap "$name") |
        awk -v m=$mode -v r="$rate" '{ printf "%s %s %s %d %d\n", m, $1, r, $5 - $2, $6 - $3 }' >>"$out/$name"
    done
    sysctl -q kernel.bpf_stats_enabled=0
    detach "$name"
  done
done

# median (range) of column $2 of stdin
stat() { sort -g | awk '{ v[NR] = $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.4g (%.4g-%.4g)", m, v[1], v[NR] }'; }
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '| variant | traffic | program | rate, median (range) | ns/run, median (range) |\n|---|---|---|---:|---:|\n'
for v in "${variants[@]}"; do
  name=${v%%=*}
  for mode in tcp udp; do
    for p in $(awk -v m=$mode '$1 == m { print $2 }' "$out/$name" | sort -u); do
      rate=$(awk -v m=$mode -v p="$p" '$1 == m && $2 == p { print $3 }' "$out/$name" | stat)
      ns=$(awk -v m=$mode -v p="$p" '$1 == m && $2 == p && $5 > 0 { print $4 / $5 }' "$out/$name" | stat)
      [[ $p == none ]] && ns=-
      echo "| $name | $mode | $p | $rate | $ns |"
    done
  done
done
