#!/usr/bin/python3
"""Subscribes to a BROADCAST channel and checks the sequence numbers.

    subscriber.py --channel ticks [--history N] [--zero-copy]

Reads until the publisher closes the channel. Under the drop-oldest policy a
subscriber that falls behind is told how many frames it missed; seq counts
from 0 and the first 8 bytes of each frame repeat it. --history (default:
the channel's history_frames) also gives a subscriber that joins late the
frames still in the ring.
"""
import argparse
import struct

import shmlane


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--channel", default="ticks")
    ap.add_argument("--history", type=int, default=None, help="start N frames back (0: live)")
    ap.add_argument("--zero-copy", action="store_true", help="peek()/release() in place")
    ap.add_argument("--runtime-dir", default=None)
    args = ap.parse_args()
    frames = missed = disorder = 0
    prev = None
    with shmlane.Subscriber(args.channel, runtime_dir=args.runtime_dir,
                            history=args.history) as sub:
        print("subscriber.py: ready", flush=True)    # attached: frames from now on
        while True:
            try:
                if args.zero_copy:
                    view = sub.peek()                # read-only, in the ring
                    seq, lost, head = sub.peeked_seq, sub.peeked_missed, bytes(view[:8])
                    del view
                    if not sub.release():            # overwritten meanwhile: skip it
                        continue
                else:
                    f = sub.read_frame()             # a copy, with seq and missed
                    seq, lost, head = f.seq, f.missed, f.data[:8]
            except shmlane.Closed:                   # the publisher is gone; all was read
                break
            disorder += (prev is not None and seq != prev + 1 + lost) or \
                struct.unpack("<Q", head)[0] != seq
            prev, frames, missed = seq, frames + 1, missed + lost
    print("subscriber.py: %d frames, %d missed, %d out of order" % (frames, missed, disorder))
    return 1 if disorder else 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except shmlane.Error as e:
        raise SystemExit("subscriber.py: %s: %s" % (type(e).__name__, e))
