#!/usr/bin/python3
"""Writes numbered frames to a STREAM channel, one at a time or batched.

    producer.py --channel demo --frames 100000 [--size 64] [--batch 256]

Each frame starts with its sequence number (8 bytes, little-endian), as the
C++ stream_producer writes them, so stream_consumer or consumer.py can check
the order. Needs a running shmlaned and the channel (shmlanectl channels create).
"""
import argparse
import struct
import time

import shmlane


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--channel", default="demo")
    ap.add_argument("--frames", type=int, default=100000)
    ap.add_argument("--size", type=int, default=64, help="bytes per frame (at least 8)")
    ap.add_argument("--batch", type=int, default=1, help="frames per write_many()")
    ap.add_argument("--runtime-dir", default=None)
    args = ap.parse_args()
    pad = bytes(max(args.size, 8) - 8)
    start = time.monotonic()
    with shmlane.Producer(args.channel, runtime_dir=args.runtime_dir) as producer:
        for first in range(0, args.frames, args.batch):
            seqs = range(first, min(first + args.batch, args.frames))
            if args.batch == 1:
                producer.write(struct.pack("<Q", first) + pad, timeout=10)
            else:
                producer.write_many([struct.pack("<Q", s) + pad for s in seqs], timeout=10)
        # Zero-copy: one last frame written in place in the ring.
        view = producer.reserve(8)
        view[:] = struct.pack("<Q", args.frames)
        producer.commit()
    secs = time.monotonic() - start
    print("producer.py: wrote %d frames in %.3f s (%.0f frames/s)"
          % (args.frames + 1, secs, (args.frames + 1) / secs))


if __name__ == "__main__":
    try:
        main()
    except shmlane.Error as e:           # e.g. Unavailable: no daemon; NotFound: no channel
        raise SystemExit("producer.py: %s: %s" % (type(e).__name__, e))
