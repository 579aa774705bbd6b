#!/usr/bin/python3
"""Python producer throughput: shmlane against a Unix socket, in one run.

Frames/s of 64-byte frames from this Python process to a C++ receiver
(python_bench_sink), four ways, interleaved and repeated:

  shmlane, one at a time   Producer.write(frame)
  seqpacket, one at a time socket(AF_UNIX, SOCK_SEQPACKET).send(frame)
  shmlane, batched         Producer.write_many(256 frames)
  stream, batched          SOCK_STREAM sendmsg() of 256 length-prefixed frames

The receiver does equal work in every mode: it reads every payload byte
into a checksum (sum of FNV-1a 64 per frame) that is checked here, and the
socket receiver batches too (recvmmsg of 256, or 1 MiB reads). Time is from
the first send until the receiver has the last frame. Prints medians with
their range, the ratios, CPU seconds per million frames for both ends, and
the load average (docs/benchmarks.md, "Python").

  PYTHONPATH=build/release/clients/python /usr/bin/python3 bench/python/python_bench.py \\
      --build-dir build/release [--frames 1000000] [--runs 3]
"""
import argparse
import json
import os
import random
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import shmlane
from shmlane import control

FRAME = 64
DISTINCT = 1024
BATCH = 256


def fnv1a(data):
    h = 1469598103934665603
    for b in data:
        h = ((h ^ b) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h


def cpu_seconds():
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


class Sink:
    def __init__(self, binary, args):
        self.proc = subprocess.Popen([binary] + args, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            self.proc.kill()
            raise SystemExit("python_bench_sink did not start: %r" % line)

    def result(self):
        out, _ = self.proc.communicate(timeout=300)
        if self.proc.returncode != 0:
            raise SystemExit("python_bench_sink failed (exit %d)" % self.proc.returncode)
        return json.loads(out.strip().splitlines()[-1])


def run_mode(mode, args, frames, framed, sums, rt, base):
    n = args.frames
    sock_path = os.path.join(base, "bench.sock")
    kind = "shmlane" if mode.startswith("shm") else ("seqpacket" if mode == "sock_single"
                                                      else "stream")
    sink = Sink(args.sink, ["--mode", kind, "--frames", str(n), "--channel", "pybench",
                            "--socket", sock_path, "--runtime-dir", rt])
    batches = [frames[i:i + BATCH] for i in range(0, DISTINCT, BATCH)]
    fbatches = [framed[i:i + BATCH] for i in range(0, DISTINCT, BATCH)]
    nb = len(batches)
    if kind == "shmlane":
        p = shmlane.Producer("pybench", runtime_dir=rt)
    else:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET if kind == "seqpacket"
                          else socket.SOCK_STREAM)
        s.connect(sock_path)
    c0, t0 = cpu_seconds(), time.monotonic()
    if mode == "shm_single":
        w = p.write
        for i in range(n):
            w(frames[i & (DISTINCT - 1)])
    elif mode == "shm_batch":
        w = p.write_many
        for b in range(n // BATCH):
            w(batches[b % nb])
    elif mode == "sock_single":
        w = s.send
        for i in range(n):
            w(frames[i & (DISTINCT - 1)])
    else:
        w = s.sendmsg
        total = (FRAME + 4) * BATCH
        for b in range(n // BATCH):
            sent = w(fbatches[b % nb])
            if sent != total:                       # a partial send: the rest, in order
                s.sendall(b"".join(fbatches[b % nb])[sent:])
    c1 = cpu_seconds()
    got = sink.result()
    t1 = got["last_monotonic"]                      # the same CLOCK_MONOTONIC
    if kind == "shmlane":
        p.close()
    else:
        s.close()
    want = sum(sums[i & (DISTINCT - 1)] for i in range(n)) & 0xFFFFFFFFFFFFFFFF
    if got["frames"] != n or got["checksum"] != want:
        raise SystemExit("%s: receiver got %d frames, checksum %d; sent %d, %d"
                         % (mode, got["frames"], got["checksum"], n, want))
    return {"fps": n / (t1 - t0), "sender_cpu": (c1 - c0) / n * 1e6,
            "receiver_cpu": got["cpu_seconds"] / n * 1e6}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build-dir", default="build/release")
    ap.add_argument("--frames", type=int, default=1000000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    args.frames -= args.frames % BATCH
    args.sink = os.path.join(args.build_dir, "bench/python/python_bench_sink")
    shmlaned = os.path.join(args.build_dir, "control/shmlaned")
    rng = random.Random(1)
    frames = [rng.randbytes(FRAME) for _ in range(DISTINCT)]
    framed = [FRAME.to_bytes(4, "little") + f for f in frames]
    sums = [fnv1a(f) for f in frames]

    base = tempfile.mkdtemp(prefix="shmlane-pybench-")
    rt = os.path.join(base, "rt")
    daemon = subprocess.Popen([shmlaned, "--runtime-dir", rt, "--metrics-listen", "none"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        while "ready" not in daemon.stdout.readline():
            if daemon.poll() is not None:
                raise SystemExit("shmlaned did not start")
        with control.connect(runtime_dir=rt) as ctl:
            ctl.create_channel("pybench", ring_bytes=1 << 20)
        modes = ["shm_single", "sock_single", "shm_batch", "sock_batch"]
        results = {m: [] for m in modes}
        load_before = os.getloadavg()
        for r in range(args.runs):                  # interleaved
            for m in modes:
                results[m].append(run_mode(m, args, frames, framed, sums, rt, base))
        load_after = os.getloadavg()
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(10)
        shutil.rmtree(base, ignore_errors=True)

    names = {"shm_single": "shmlane write(), one at a time",
             "sock_single": "SOCK_SEQPACKET send(), one at a time",
             "shm_batch": "shmlane write_many(256)",
             "sock_batch": "SOCK_STREAM sendmsg(256 framed)"}
    med = {m: statistics.median(x["fps"] for x in results[m]) for m in modes}
    print("%d frames of %d B per run, %d runs, Python %s, shmlane %s" % (
        args.frames, FRAME, args.runs, sys.version.split()[0], shmlane.__version__))
    print("load average %.2f %.2f %.2f before, %.2f %.2f %.2f after" % (load_before + load_after))
    print("| sender | frames/s (median) | range | sender CPU s/Mframe | receiver CPU s/Mframe |")
    print("| --- | ---: | --- | ---: | ---: |")
    for m in modes:
        fps = [x["fps"] for x in results[m]]
        print("| %s | %.0f | %.0f-%.0f | %.2f | %.2f |" % (
            names[m], med[m], min(fps), max(fps),
            statistics.median(x["sender_cpu"] for x in results[m]),
            statistics.median(x["receiver_cpu"] for x in results[m])))
    for label, a, b in (("one at a time (shmlane / SOCK_SEQPACKET)", "shm_single", "sock_single"),
                        ("batched (shmlane write_many / SOCK_STREAM sendmsg)", "shm_batch",
                         "sock_batch")):
        paired = sorted(x["fps"] / y["fps"] for x, y in zip(results[a], results[b]))
        print("ratio %s: %.2fx of the medians; per run (interleaved pairs) median %.2fx, "
              "range %.2f-%.2fx" % (label, med[a] / med[b], statistics.median(paired),
                                    paired[0], paired[-1]))
    print(json.dumps({"medians_fps": med, "runs": results}))


if __name__ == "__main__":
    main()
