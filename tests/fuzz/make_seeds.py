#!/usr/bin/env python3
"""Writes the hand-made seeds of the mid-call fuzz targets.

The byte formats are the ones decoded in consumer_fuzz.cc, producer_fuzz.cc
and attach_fuzz.cc; each seed names the behaviour it aims at (several aim at
defects listed in issue 8). libFuzzer grows the corpus from these; the files
written here are the committed seeds, so rerun this after changing a format:

    tests/fuzz/make_seeds.py            # rewrites tests/fuzz/corpus/<target>/seed-*
"""
import os
import struct
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def u8(*v):
    return bytes(x & 0xFF for x in v)


def u16(v):
    return struct.pack("<H", v & 0xFFFF)


def u64(v):
    return struct.pack("<Q", v & 0xFFFFFFFFFFFFFFFF)


# Deadline selectors (kDeadlineUs): 0 past, 1 now, 2 200us, 3 1ms, 4 2ms,
# 5 5ms, 6 20ms, 7 100ms. Loop selectors (kLoopUs): 0 while the victim is in
# its call, 1 20us, 2 100us, 3 500us, 4 1ms, 5 2ms, 6 5ms.
WHILE_IN_CALL = 0

# ------------------------------------------------------------ consumer_fuzz


def c_config(clean0=False, spin=0, ring=0, sample=0, set_lanes=1, max_frame=0, policy=0, batch=3):
    b0 = (1 if clean0 else 0) | (spin << 1) | (ring << 3) | (sample << 5)
    return u8(b0, set_lanes - 1, max_frame | (policy << 3), batch)


class CV:  # consumer_fuzz victim ops
    def peek():
        return u8(0)

    def release():
        return u8(1)

    def try_read(buf=5):
        return u8(2, buf)

    def read(dl, buf=5):
        return u8(3, buf, dl)

    def drain(n):
        return u8(4, n)

    def wait_readable(dl):
        return u8(5, dl)

    def poll():
        return u8(6)

    def set_wait(dl, also=False):
        return u8(7, dl, 1 if also else 0)

    def close():
        return u8(8)

    def remove(i):
        return u8(9, i)

    def sleep(units):
        return u8(10, units)

    def observe():
        return u8(11)

    def peek_release():
        return u8(12)


class CA:  # consumer_fuzz adversary ops (lane: 0 = lane 0, 1 = hostile set lane)
    def try_write(lane, n):
        return u8(0, lane) + u16(n)

    def write(lane, n, dl):
        return u8(1, lane) + u16(n) + u8(dl)

    def batch(lane, count, n):
        return u8(2, lane, count - 1) + u16(n)

    def reserve_commit(lane, n, used, now):
        return u8(3, lane) + u16(n) + u16(used) + u8(1 if now else 0)

    def publish(lane):
        return u8(4, lane)

    def close(lane):
        return u8(5, lane)

    def scribble(lane, field, val, raw=0):
        return u8(6, lane, field, val) + u64(raw)

    def scribble_slot(lane, where, val, raw=0):
        return u8(7, lane, where, val) + u64(raw)

    def flip(lane, target, v1, v2, dur=WHILE_IN_CALL, raw=0):
        return u8(8, lane, target, v1, v2, dur) + u64(raw)

    def flood(which, dur=WHILE_IN_CALL):  # which: 0 lane-0 bell, 1 set bell, 2 extra fd
        return u8(9, which, dur)

    def drain_bell(which, dur=WHILE_IN_CALL):
        return u8(10, which, dur)

    def supervisor_close(lane, bits):
        return u8(11, lane, bits)

    def await_call():
        return u8(12)

    def sleep(units):
        return u8(13, units)

    def honest_write(k, n):
        return u8(14, k) + u16(n)

    def honest_close(k):
        return u8(15, k)

    def ring_once(which):
        return u8(16, which)


def consumer_input(config, victim, adversary):
    v = b"".join(victim)
    return config + u16(len(v)) + v + b"".join(adversary)


def consumer_seeds():
    s = {}
    # Exact delivery through every read call, with wrap-around and sampling.
    s["clean-stream"] = consumer_input(
        c_config(clean0=True, sample=2, set_lanes=3),
        [CV.read(6), CV.try_read(), CV.peek(), CV.release(), CV.drain(8), CV.read(5, buf=1),
         CV.try_read(), CV.set_wait(6), CV.poll(), CV.read(6), CV.drain(30), CV.set_wait(5)] * 2,
        [CA.try_write(0, 300), CA.batch(0, 8, 90), CA.honest_write(0, 40), CA.write(0, 2000, 5),
         CA.reserve_commit(0, 500, 200, False), CA.reserve_commit(0, 100, 100, False),
         CA.publish(0), CA.honest_write(1, 7), CA.sleep(20)] * 4 + [CA.close(0)])
    # Deferred commits published later; the consumer parks meanwhile.
    s["defer-then-publish"] = consumer_input(
        c_config(clean0=True, spin=1),
        [CV.read(6), CV.read(6), CV.wait_readable(5), CV.drain(39)],
        [CA.reserve_commit(0, 64, 64, False), CA.await_call(), CA.sleep(40), CA.publish(0)] * 3)
    # Issue 8 item 1: a flood on the shared doorbell while the consumer waits
    # on a LaneSet of 24 lanes (one of them hostile).
    s["flood-laneset"] = consumer_input(
        c_config(set_lanes=24),
        [CV.set_wait(5), CV.set_wait(6), CV.set_wait(3)] * 3,
        [CA.flood(1)] * 9)
    # Item 1 again, against Consumer::Read and WaitReadable.
    s["flood-read"] = consumer_input(
        c_config(),
        [CV.read(5), CV.wait_readable(6), CV.read(3)],
        [CA.flood(0)] * 3)
    # Item 2: the hostile lane drains the shared doorbell while honest lanes
    # publish; the consumer must still see each honest frame.
    s["swallow-laneset"] = consumer_input(
        c_config(set_lanes=4),
        [CV.set_wait(7), CV.set_wait(7), CV.set_wait(7)],
        [CA.drain_bell(1, 6), CA.honest_write(0, 16)] * 30)
    # The same, with the theft right after the honest ring: the parked
    # consumer's ppoll wakes, but the hostile producer reads the counter first.
    s["swallow-laneset-2"] = consumer_input(
        c_config(set_lanes=3, spin=0),
        [CV.set_wait(7)] * 4,
        [CA.await_call(), CA.sleep(20), CA.honest_write(0, 16), CA.drain_bell(1, 1)] * 4)
    # Item 5/7: head, tail, waiting flags and frame headers flipping while the
    # consumer is inside its calls.
    s["flip-tail"] = consumer_input(
        c_config(spin=3),
        [CV.read(5), CV.wait_readable(5), CV.drain(10), CV.read(4)],
        [CA.try_write(0, 64), CA.flip(0, 0, 1, 7), CA.flip(0, 0, 3, 4), CA.flip(0, 0, 14, 7)])
    s["flip-header"] = consumer_input(
        c_config(spin=1),
        [CV.read(5), CV.peek(), CV.read(5), CV.drain(5)],
        [CA.batch(0, 4, 64), CA.flip(0, 0x80, 2 << 3, 3 << 3), CA.flip(0, 0x80, 4 << 3 | 1, 0)])
    s["flip-waiting-laneset"] = consumer_input(
        c_config(set_lanes=8, spin=2),
        [CV.set_wait(5), CV.set_wait(4), CV.poll(), CV.set_wait(6, also=True)],
        [CA.flip(1, 4, 0, 8), CA.honest_write(2, 30), CA.flip(1, 0, 4, 7),
         CA.ring_once(2), CA.flood(2, 3)])
    # Broken lanes: backward and misaligned tails, bad paddings, two paddings.
    s["bad-tail"] = consumer_input(
        c_config(),
        [CV.try_read(), CV.read(3), CV.peek(), CV.drain(3), CV.try_read()],
        [CA.try_write(0, 8), CA.scribble(0, 0, 2), CA.scribble(0, 0, 3)])
    s["bad-padding"] = consumer_input(
        c_config(),
        [CV.sleep(2), CV.try_read(), CV.try_read(), CV.read(3)],
        [CA.try_write(0, 8), CA.scribble_slot(0, 0, 4 << 3 | 1), CA.scribble_slot(0, 0, 5 << 3 | 1)])
    s["supervisor-close"] = consumer_input(
        c_config(set_lanes=3),
        [CV.read(7), CV.set_wait(7), CV.set_wait(7), CV.read(6)],
        [CA.await_call(), CA.supervisor_close(0, 0), CA.await_call(), CA.supervisor_close(1, 2),
         CA.honest_close(0), CA.honest_close(1)])
    s["remove-observe"] = consumer_input(
        c_config(set_lanes=5),
        [CV.poll(), CV.remove(1), CV.observe(), CV.set_wait(4), CV.remove(2), CV.close(), CV.poll()],
        [CA.honest_write(0, 10), CA.honest_write(1, 20), CA.try_write(1, 5),
         CA.scribble(1, 11, 0, 0x1234567)])
    return s


# ------------------------------------------------------------ producer_fuzz


def p_config(clean=False, spin=0, ring=0, sample=0, max_frame=0, policy=0, cspin=0):
    b0 = (1 if clean else 0) | (spin << 1) | (ring << 3) | (sample << 5)
    return u8(b0, max_frame | (policy << 3), cspin)


class PV:  # producer_fuzz victim ops
    def try_write(n):
        return u8(0) + u16(n)

    def write(n, dl):
        return u8(1) + u16(n) + u8(dl)

    def batch(count, n):
        return u8(2, count - 1) + u16(n)

    def reserve(n):
        return u8(3) + u16(n)

    def commit(used, now):
        return u8(4) + u16(used) + u8(1 if now else 0)

    def publish():
        return u8(5)

    def close():
        return u8(6)

    def sleep(units):
        return u8(7, units)

    def observe():
        return u8(8)


class PA:  # producer_fuzz adversary (consumer side) ops
    def try_read(buf=5):
        return u8(0, buf)

    def read(dl, buf=5):
        return u8(1, buf, dl)

    def drain(n):
        return u8(2, n)

    def peek():
        return u8(3)

    def release():
        return u8(4)

    def close():
        return u8(5)

    def scribble(field, val, raw=0):
        return u8(6, field, val) + u64(raw)

    def scribble_slot(where, val, raw=0):
        return u8(7, where, val) + u64(raw)

    def flip(target, v1, v2, dur=WHILE_IN_CALL, raw=0):
        return u8(8, target, v1, v2, dur) + u64(raw)

    def flood(dur=WHILE_IN_CALL):
        return u8(9, dur)

    def drain_bell(dur=WHILE_IN_CALL):
        return u8(10, dur)

    def supervisor_close(bits):
        return u8(11, bits)

    def await_call():
        return u8(12)

    def sleep(units):
        return u8(13, units)

    def ring_once():
        return u8(14)

    def consume(dur=WHILE_IN_CALL):
        return u8(15, dur)


def producer_input(config, victim, adversary):
    v = b"".join(victim)
    return config + u16(len(v)) + v + b"".join(adversary)


def producer_seeds():
    s = {}
    s["clean-stream"] = producer_input(
        p_config(clean=True, sample=2),
        [PV.try_write(100), PV.write(1000, 6), PV.batch(8, 70), PV.reserve(300), PV.commit(120, True),
         PV.write(2000, 6), PV.reserve(64), PV.commit(64, False), PV.publish(), PV.write(0, 5)] * 4
        + [PV.close()],
        [PA.consume(), PA.read(6), PA.drain(20), PA.try_read(), PA.peek(), PA.release()] * 10)
    # Issue 8 item 3: deferred commits fill the ring, then Write parks without
    # publishing them while the consumer, seeing an empty ring, idles.
    s["defer-then-write"] = producer_input(
        p_config(clean=True),
        [PV.reserve(1000), PV.commit(1000, False)] * 4 + [PV.write(500, 7)],
        [PA.read(6), PA.read(6), PA.read(7), PA.read(7)])
    # Item 1: the consumer floods the producer's doorbell while Write waits
    # on a full ring.
    s["flood-write"] = producer_input(
        p_config(),
        [PV.batch(16, 400), PV.write(1500, 5), PV.write(1500, 6), PV.write(1500, 3)],
        [PA.flood()] * 3)
    # Item 5: the consumer flips its head while Write waits for space.
    s["flip-head"] = producer_input(
        p_config(spin=3),
        [PV.batch(16, 400), PV.write(1500, 5), PV.write(1500, 5), PV.write(100, 4)],
        [PA.flip(3, 6, 11, raw=5), PA.flip(3, 15, 6), PA.flip(3, 3, 6), PA.flip(4, 12, 8)])
    s["swallow-write"] = producer_input(
        p_config(clean=False),
        [PV.batch(16, 400), PV.write(1500, 7), PV.write(1500, 6)],
        [PA.drain_bell(), PA.sleep(10), PA.drain(40)])
    s["policies"] = producer_input(
        p_config(policy=1, sample=1),
        [PV.batch(16, 400), PV.write(1500, 5), PV.try_write(4000), PV.observe()],
        [PA.drain(3), PA.scribble(3, 9), PA.scribble(5, 12)])
    s["policies-drop"] = producer_input(
        p_config(policy=2),
        [PV.batch(16, 400), PV.write(1500, 5), PV.write(10, 5), PV.observe()],
        [PA.drain(3), PA.supervisor_close(1)])
    s["consumer-close"] = producer_input(
        p_config(clean=True),
        [PV.batch(16, 400), PV.write(1500, 7), PV.try_write(3)],
        [PA.await_call(), PA.sleep(20), PA.close()])
    s["close-open-reservation"] = producer_input(
        p_config(clean=True),
        [PV.try_write(10), PV.reserve(100), PV.close()],
        [PA.consume(3), PA.read(6), PA.read(6)])
    s["bad-head"] = producer_input(
        p_config(),
        [PV.batch(16, 400), PV.try_write(1500), PV.write(1500, 4), PV.try_write(8)],
        [PA.scribble(3, 3), PA.scribble(3, 4), PA.scribble(3, 9)])
    return s


# -------------------------------------------------------------- attach_fuzz


def attach_input(size_sel, mode, patches=(), raw=b""):
    out = u8(size_sel, mode)
    for off, val in patches:
        out += u16(off) + u64(val)
    return out + raw


def attach_seeds():
    s = {}
    # mode bit 0: start from a valid header; then (offset, value) patches.
    s["valid"] = attach_input(3, 1)
    s["bad-magic"] = attach_input(3, 1, [(0, 0x1234)])
    s["bad-version"] = attach_input(3, 1, [(8, 0x00020000 | (4096 << 32))])
    s["bad-ring"] = attach_input(3, 1, [(16, 8192)])
    s["bad-max-frame"] = attach_input(3, 1, [(24, 0x0000000100001000)])
    s["bad-policy"] = attach_input(3, 1, [(24, 0x0000000700000100)])
    s["bad-indices"] = attach_input(3, 1, [(128, 4096 + 8), (512, 0)])
    s["misaligned-head"] = attach_input(3, 1, [(128, 16), (512, 3)])
    s["small-segment"] = attach_input(0, 0, raw=b"\0SHMLAN1")
    s["raw"] = attach_input(5, 0, raw=bytes(range(64)))
    s["invalid-bell"] = attach_input(3, 1 | 2)
    return s


def main():
    targets = {"consumer_fuzz": consumer_seeds(), "producer_fuzz": producer_seeds(),
               "attach_fuzz": attach_seeds()}
    only = sys.argv[1:]
    for target, seeds in targets.items():
        if only and target not in only:
            continue
        d = os.path.join(ROOT, target)
        os.makedirs(d, exist_ok=True)
        for name in os.listdir(d):
            if name.startswith("seed-"):
                os.remove(os.path.join(d, name))
        for name, data in seeds.items():
            with open(os.path.join(d, "seed-" + name), "wb") as f:
                f.write(data)
        print(f"{target}: {len(seeds)} seeds in {d}")


if __name__ == "__main__":
    main()
