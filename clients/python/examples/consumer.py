#!/usr/bin/python3
"""Reads a STREAM channel and checks each producer's sequence numbers.

    consumer.py --channel demo [--frames N] [--idle-exit-s 2]

Stops after N frames, or when nothing came for --idle-exit-s seconds.
The first 8 bytes of a frame are its producer's sequence number.
"""
import argparse
import struct

import shmlane


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--channel", default="demo")
    ap.add_argument("--frames", type=int, default=0, help="stop after this many (0: never)")
    ap.add_argument("--idle-exit-s", type=float, default=2.0)
    ap.add_argument("--runtime-dir", default=None)
    args = ap.parse_args()
    events = lambda e: print("%s producer %r" % ("+" if e.kind == "attached" else "-", e.peer.name))
    total = gaps = 0
    next_seq = {}                                    # lane id -> expected sequence
    with shmlane.Consumer(args.channel, runtime_dir=args.runtime_dir,
                          on_peer_event=events) as consumer:
        print("consumer.py: ready", flush=True)
        while not args.frames or total < args.frames:
            try:
                frame = consumer.read_frame(timeout=args.idle_exit_s)
            except shmlane.DeadlineExceeded:
                break                                # idle: done
            data, lane = frame.data, frame.peer.lane_id
            seq = struct.unpack_from("<Q", data)[0] if len(data) >= 8 else 0
            gaps += seq != next_seq.get(lane, 0)
            next_seq[lane] = seq + 1
            total += 1
    print("consumer.py: %d frames, %d gaps" % (total, gaps))


if __name__ == "__main__":
    try:
        main()
    except shmlane.Error as e:
        raise SystemExit("consumer.py: %s: %s" % (type(e).__name__, e))
