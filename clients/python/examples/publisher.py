#!/usr/bin/python3
"""Publishes numbered frames on a BROADCAST channel to every subscriber.

    publisher.py --channel ticks --frames 100000 [--size 64] [--batch 64] [--subscribers 2]

Each frame starts with its sequence number (8 bytes, little-endian), as the
C++ broadcast_publisher writes them, so subscriber.py or broadcast_subscriber
can check the order. Needs a running shmlaned and the channel
(shmlanectl channels create ticks --pattern broadcast).
"""
import argparse
import struct
import time

import shmlane


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--channel", default="ticks")
    ap.add_argument("--frames", type=int, default=100000)
    ap.add_argument("--size", type=int, default=64, help="bytes per frame (at least 8)")
    ap.add_argument("--batch", type=int, default=64, help="frames per write_many()")
    ap.add_argument("--subscribers", type=int, default=1, help="wait (30 s) for this many first")
    ap.add_argument("--runtime-dir", default=None)
    args = ap.parse_args()
    if args.frames < 1:
        ap.error("--frames must be at least 1")
    pad = bytes(max(args.size, 8) - 8)
    with shmlane.Publisher(args.channel, runtime_dir=args.runtime_dir) as pub:
        until = time.monotonic() + 30
        while pub.subscribers < args.subscribers and time.monotonic() < until:
            time.sleep(0.005)                    # the daemon tells us of each one
        start = time.monotonic()
        for first in range(0, args.frames - 1, args.batch):
            seqs = range(first, min(first + args.batch, args.frames - 1))
            pub.write_many([struct.pack("<Q", s) + pad for s in seqs], timeout=10)
        last = struct.pack("<Q", args.frames - 1) + pad
        try:                                     # zero-copy: the last frame in place
            view = pub.reserve(len(last))
            view[:] = last
            pub.commit()
        except shmlane.Full:                     # a block-policy subscriber is behind
            pub.write(last, timeout=10)
        secs = time.monotonic() - start
        print("publisher.py: wrote %d frames to %d subscribers in %.3f s (%.0f frames/s)"
              % (args.frames, pub.subscribers, secs, args.frames / max(secs, 1e-9)))
    # Leaving the block closes the ring: subscribers read the rest, then stop.


if __name__ == "__main__":
    try:
        main()
    except shmlane.Error as e:           # e.g. Unavailable: no daemon; NotFound: no channel
        raise SystemExit("publisher.py: %s: %s" % (type(e).__name__, e))
