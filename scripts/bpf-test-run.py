#!/usr/bin/env python3
"""Established-flow and new-flow cost of variants of the observe programs by
BPF_PROG_TEST_RUN, each next to the floor program on the same frames, in
alternated rounds (docs/benchmarks.md, section 2); not part of `make bench`.

  scripts/bpf-test-run.py ROUNDS NEW_FLOWS NAME=OBJECT.o ... [--ipv6]

Each NAME=OBJECT.o is a build of ebpf/bpf/flow.bpf.c (compiled as the header
of scripts/prog-cost.sh shows); the floor is ebpf/bpf/floor.bpf.c, compiled
here. Every round, on CPU 1:
- established flow: weir_from_pod and weir_to_pod of each variant run
  repeat = 200000 on a TCP ACK of a flow made before the rounds, the floor
  once before each variant;
- new flows: NEW_FLOWS frames (TCP SYNs from the pod, each its own source
  port, never reused) run once each (repeat = 1) through the floor and
  weir_from_pod of every variant, interleaved per frame; the round's figure
  is the median over its frames. The ring buffer is drained before each
  round (keep NEW_FLOWS under 2900: 256 KiB of 88-byte records), and the
  counters are checked at the end (no ring-full or table-full path).
The order of the variants rotates by one per round. Prints each variant's
ns per run and ratio to the floor: medians (range) over the rounds. Needs
root, clang-19, bpftool and python3; loads the objects under /sys/fs/bpf.
"""
import ctypes
import json
import mmap
import os
import shutil
import statistics as st
import struct
import subprocess
import sys
import tempfile

SYS_BPF = 321  # x86_64
BPF_OBJ_GET, BPF_PROG_TEST_RUN = 7, 10
REPEAT = 200_000
CNT_NEW_FLOWS, CNT_RINGBUF_FULL, CNT_TABLE_FULL = 1, 2, 3  # abi.h
libc = ctypes.CDLL(None, use_errno=True)


def bpf(cmd, attr):
    buf = ctypes.create_string_buffer(attr, 128)
    if libc.syscall(SYS_BPF, cmd, buf, 128) < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"bpf({cmd}): {os.strerror(err)}")
    return buf.raw


def obj_get(path):
    name = ctypes.create_string_buffer(path.encode())
    libc.syscall.restype = ctypes.c_long
    buf = ctypes.create_string_buffer(struct.pack("=QII", ctypes.addressof(name), 0, 0), 128)
    fd = libc.syscall(SYS_BPF, BPF_OBJ_GET, buf, 128)
    if fd < 0:
        raise OSError(ctypes.get_errno(), f"BPF_OBJ_GET {path}")
    return fd


def test_run(fd, frame, repeat=1):
    """The kernel's mean ns per run."""
    data = ctypes.create_string_buffer(frame, len(frame))
    attr = struct.pack("=IIIIQQII", fd, 0, len(frame), 0, ctypes.addressof(data), 0, repeat, 0)
    return struct.unpack_from("=I", bpf(BPF_PROG_TEST_RUN, attr), 36)[0]


def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def tcp(sport, dport, flags, src, dst, ipv6):
    l4 = struct.pack("!HHIIBBHHH", sport, dport, 1, 1, 5 << 4, flags, 64240, 0, 0)
    eth = bytes([2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1])
    if ipv6:
        ip = struct.pack("!IHBB16s16s", 6 << 28, len(l4), 6, 64,
                         bytes([0xFD] + [0] * 14 + [src]), bytes([0xFD] + [0] * 14 + [dst]))
        return eth + b"\x86\xdd" + ip + l4
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 0, 0, 64, 6, 0,
                     bytes([10, 0, 0, src]), bytes([10, 0, 0, dst]))
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    return eth + b"\x08\x00" + ip + l4


def stat(values, digits=0):
    return f"{st.median(values):.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def main():
    args = [a for a in sys.argv[1:] if a != "--ipv6"]
    ipv6 = "--ipv6" in sys.argv
    if len(args) < 3 or os.geteuid() != 0:
        sys.exit(__doc__)
    rounds, new_flows = int(args[0]), int(args[1])
    variants = [a.split("=", 1) for a in args[2:]]
    names = [n for n, _ in variants]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    os.sched_setaffinity(0, {1})
    pins = f"/sys/fs/bpf/weir-test-run-{os.getpid()}"
    tmp = tempfile.mkdtemp()
    os.makedirs(pins)
    try:
        floor_o = f"{tmp}/floor.o"
        subprocess.run(["clang-19", "-target", "bpfel", "-O2", "-g", "-I/usr/include/x86_64-linux-gnu",
                        "-c", f"{root}/ebpf/bpf/floor.bpf.c", "-o", floor_o], check=True)
        subprocess.run(["bpftool", "prog", "loadall", floor_o, f"{pins}/floor", "type", "classifier"],
                       check=True)
        floor = obj_get(f"{pins}/floor/weir_floor")
        progs, rings = {}, {}
        for name, obj in variants:
            subprocess.run(["bpftool", "prog", "loadall", obj, f"{pins}/{name}", "type", "classifier",
                            "pinmaps", f"{pins}/{name}-maps"], check=True)
            progs[name] = {p: obj_get(f"{pins}/{name}/{p}") for p in ("weir_from_pod", "weir_to_pod")}
            ring = obj_get(f"{pins}/{name}-maps/EVENTS")
            rings[name] = (mmap.mmap(ring, 4096, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE),
                           mmap.mmap(ring, 4096, mmap.MAP_SHARED, mmap.PROT_READ, offset=4096))
        # the established flow: pod 1:40000 <-> peer 2:80
        data = tcp(40000, 80, 0x10, 1, 2, ipv6)
        ack = tcp(80, 40000, 0x10, 2, 1, ipv6)
        for name in names:
            test_run(progs[name]["weir_from_pod"], data)
        est = {(n, p): ([], []) for n in names for p in ("weir_from_pod", "weir_to_pod")}
        new = {n: ([], []) for n in names}
        port = 20000
        for r in range(rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                f = test_run(floor, data, REPEAT)
                for prog, frame in (("weir_from_pod", data), ("weir_to_pod", ack)):
                    ns = test_run(progs[name][prog], frame, REPEAT)
                    est[(name, prog)][0].append(ns)
                    est[(name, prog)][1].append(ns / f)
            for cons, prod in rings.values():  # drained: the consumer catches up
                cons[0:8] = prod[0:8]
            f, o = [], {n: [] for n in names}
            for _ in range(new_flows):
                frame = tcp(port, 8080, 0x02, 1, 2, ipv6)
                port += 1
                f.append(test_run(floor, frame))
                for name in order:
                    o[name].append(test_run(progs[name]["weir_from_pod"], frame))
            for name in names:
                new[name][0].append(st.median(o[name]))
                new[name][1].append(st.median(o[name]) / st.median(f))
        family = "IPv6" if ipv6 else "IPv4"
        print(f"BPF_PROG_TEST_RUN, {family} TCP, {rounds} rounds on CPU 1, variants alternated; "
              f"established: repeat {REPEAT}; new flows: {new_flows} a round, repeat 1 (median per round); "
              f"medians (range) over rounds. Load average: {open('/proc/loadavg').read().split()[0]}")
        print()
        print("| variant | path | ns per run | / floor |")
        print("|---|---|---:|---:|")
        for name in names:
            for prog in ("weir_from_pod", "weir_to_pod"):
                ns, ratio = est[(name, prog)]
                print(f"| {name} | established, {prog} | {stat(ns)} | {stat(ratio, 2)} |")
            ns, ratio = new[name]
            print(f"| {name} | new flow, weir_from_pod | {stat(ns)} | {stat(ratio, 2)} |")
        for name in names:
            out = subprocess.run(["bpftool", "map", "dump", "pinned", f"{pins}/{name}-maps/COUNTERS", "-j"],
                                 check=True, capture_output=True, text=True).stdout
            sums = {e["formatted"]["key"]: sum(c["value"] for c in e["formatted"]["values"])
                    for e in json.loads(out)}
            if sums[CNT_RINGBUF_FULL] or sums[CNT_TABLE_FULL]:
                sys.exit(f"{name}: the ring buffer or the table filled up ({sums}): fewer NEW_FLOWS")
            print(f"{name}: {sums[CNT_NEW_FLOWS]} new flows counted, none lost")
    finally:
        shutil.rmtree(pins, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
