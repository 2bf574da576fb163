#!/usr/bin/env bash
# Per-packet cost of the observe programs before and after a change, side by
# side: compiles ebpf/bpf at BASE (a git ref) and in the work tree, loads
# both with bpftool and runs BPF_PROG_TEST_RUN on existing-flow frames
# (IPv4 TCP and UDP to and from a pod, repeat 200000), alternating before
# and after, ROUNDS times, pinned to CPU 1; prints medians and the median of
# the per-round ratios. Needs root, clang-19, bpftool and python3.
#   scripts/bpf-before-after.sh main [ROUNDS]
set -euo pipefail
base=${1:?usage: $0 BASE_REF [ROUNDS]}
rounds=${2:-15}
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
pins="/sys/fs/bpf/weir-before-after-$$"
trap 'rm -rf "$tmp" "$pins"' EXIT
cflags=(-target bpfel -D__TARGET_ARCH_x86 -g -O2 -Wall -Wextra -Werror -I/usr/include/x86_64-linux-gnu)
mkdir -p "$tmp/before"
for f in $(git ls-tree --name-only "$base" ebpf/bpf/); do
  git show "$base:$f" >"$tmp/before/$(basename "$f")"
done
clang-19 "${cflags[@]}" -c "$tmp/before/flow.bpf.c" -o "$tmp/before.o"
clang-19 "${cflags[@]}" -c ebpf/bpf/flow.bpf.c -o "$tmp/after.o"
python3 - "$tmp" <<'PY'
import struct, sys
out = sys.argv[1]
def csum(b):
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b)); s = (s >> 16) + (s & 0xffff); s += s >> 16
    return (~s) & 0xffff
def frame(proto, l4, src, dst):
    h = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(l4), 0, 0, 64, proto, 0, bytes(src), bytes(dst))
    h = h[:10] + struct.pack('!H', csum(h)) + h[12:]
    return bytes([2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1]) + b'\x08\x00' + h + l4
pod, peer = [10, 0, 0, 1], [10, 0, 0, 2]
tcp = struct.pack('!HHIIBBHHH', 443, 40000, 1, 1, 5 << 4, 0x10, 64240, 0, 0) + b'weir'
udp = struct.pack('!HHHH', 5353, 40000, 12, 0) + b'weir'
open(out + '/tcp.bin', 'wb').write(frame(6, tcp, peer, pod))
open(out + '/udp.bin', 'wb').write(frame(17, udp, peer, pod))
PY
mkdir -p "$pins"
for side in before after; do
  bpftool prog loadall "$tmp/$side.o" "$pins/$side" type classifier
done
run() {
  taskset -c 1 bpftool prog run pinned "$pins/$1/$2" data_in "$tmp/$3" repeat 200000 |
    sed -n 's/.*average): \([0-9]*\)ns/\1/p'
}
for _ in $(seq "$rounds"); do
  for prog in weir_to_pod weir_from_pod; do
    for f in tcp.bin udp.bin; do
      echo "$prog $f $(run before "$prog" "$f") $(run after "$prog" "$f")"
    done
  done
done >"$tmp/results"
python3 - "$tmp/results" "$base" "$rounds" <<'PY'
import collections, statistics, sys
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    prog, f, b, a = line.split()
    rows[(prog, f)].append((int(b), int(a)))
print(f"| program | frame | before ({sys.argv[2]}) ns | after ns | after/before (median) | range |")
print("|---|---|---:|---:|---:|---:|")
for (prog, f), v in rows.items():
    r = [a / b for b, a in v]
    print(f"| {prog} | IPv4 {f[:3].upper()}, existing flow | {statistics.median(b for b, _ in v):.0f} | "
          f"{statistics.median(a for _, a in v):.0f} | {statistics.median(r):.3f} | {min(r):.3f}–{max(r):.3f} |")
PY
