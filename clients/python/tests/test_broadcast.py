"""Publisher/Subscriber of BROADCAST channels: Python to the C++ example
subscriber, the C++ example publisher to two Python subscriber processes, a
lapped drop-oldest subscriber's exact missed counts, grants for another uid,
a closed publisher, zero-copy views and their revocation, deadlines and the
GIL."""

import os
import signal
import struct
import subprocess
import textwrap
import threading
import time

import pytest

import shmlane
from conftest import PYTHON, example, wait_for

OTHER_UID = 64051  # a fixed uid no account uses (test_errors.py uses 64050)


def frame(seq, size=64):
    return struct.pack("<Q", seq) + bytes(size - 8)


def seq_of(data):
    return struct.unpack_from("<Q", data)[0]


def stop(proc):
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_python_publisher_to_cpp_subscriber(daemon, rt):
    name = daemon.channel("broadcast")
    frames = 30000
    with shmlane.Publisher(name, runtime_dir=rt) as pub:
        # The publisher counts a subscriber once the daemon links it, which may be
        # before the subscriber has joined the ring; the history start makes a late
        # joiner begin at seq 0 (a block-policy writer holds the ring for it).
        sub = subprocess.Popen([example("broadcast_subscriber"), "--channel", name,
                                "--runtime-dir", rt, "--history", str(frames)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: pub.subscribers == 1, what="broadcast_subscriber to attach")
            assert pub.channel == name and pub.max_frame_bytes >= 64
            third = frames // 3
            for seq in range(third):                          # copying, one at a time
                assert pub.write(frame(seq), timeout=10) is True
            for first in range(third, 2 * third, 250):        # batched
                batch = [frame(s) for s in range(first, min(first + 250, 2 * third))]
                assert pub.write_many(batch, timeout=10) == len(batch)
            for seq in range(2 * third, frames):              # zero-copy
                try:
                    view = pub.reserve(64)
                except shmlane.Full:                          # the subscriber is behind
                    assert pub.write(frame(seq), timeout=10)
                    continue
                view[:8] = struct.pack("<Q", seq)
                pub.commit()
            assert pub.frames_published == frames
        except BaseException:
            stop(sub)
            raise
    try:
        out, err = sub.communicate(timeout=30)
    finally:
        stop(sub)
    assert sub.returncode == 0, (out, err)
    assert "read %d frames, missed 0, out of order 0" % frames in out, out


SUBSCRIBER_SCRIPT = textwrap.dedent("""
    import struct, sys
    import shmlane
    rt, name, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    with shmlane.Subscriber(name, runtime_dir=rt, history=0) as sub:
        print("ready", flush=True)
        expected, frames = 0, 0
        while True:
            try:
                if mode == "peek":
                    view = sub.peek(timeout=20)
                    seq, info = struct.unpack_from("<Q", view)[0], sub.peeked_seq
                    missed = sub.peeked_missed
                    del view
                    assert sub.release() is True
                else:
                    f = sub.read_frame(timeout=20)
                    seq, info, missed = struct.unpack_from("<Q", f.data)[0], f.seq, f.missed
            except shmlane.Closed:
                break
            assert seq == expected == info and missed == 0, (seq, expected, info, missed)
            expected += 1
            frames += 1
        assert sub.missed_frames == 0 and sub.frames_read == frames
        print("done %d" % frames, flush=True)
""")


def test_cpp_publisher_to_two_python_subscriber_processes(daemon, rt):
    name = daemon.channel("broadcast", ring_bytes=1 << 16)
    frames = 20000
    subs = [subprocess.Popen([PYTHON, "-c", SUBSCRIBER_SCRIPT, rt, name, mode],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for mode in ("peek", "read")]
    try:
        for s in subs:                       # both attach before the publisher exists
            assert s.stdout.readline().strip() == "ready", s.stderr.read()
        pub = subprocess.run([example("broadcast_publisher"), "--channel", name,
                              "--runtime-dir", rt, "--frames", str(frames),
                              "--wait-subscribers", "2"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             timeout=40)
        assert pub.returncode == 0, pub.stderr
        assert "to 2 subscribers" in pub.stdout, pub.stdout
        for s in subs:
            out, err = s.communicate(timeout=30)
            assert s.returncode == 0, err
            assert "done %d" % frames in out, (out, err)
    finally:
        for s in subs:
            stop(s)


def check_chain(got, published):
    """Every intact frame's seq is the previous one + 1 + its missed count,
    and intact + missed accounts for every frame published."""
    prev = -1
    for seq, missed in got:
        assert seq == prev + 1 + missed, (prev, seq, missed)
        prev = seq
    assert prev == published - 1
    assert len(got) + sum(m for _, m in got) == published


def test_drop_oldest_lapped_subscriber_counts_exactly(daemon, rt):
    name = daemon.channel("broadcast", ring_bytes=4096, slow_subscriber_policy="drop-oldest")
    with shmlane.Publisher(name, runtime_dir=rt) as pub, \
            shmlane.Subscriber(name, runtime_dir=rt, history=0) as sub:
        wait_for(lambda: pub.subscribers == 1, what="the subscriber to be linked")
        got = []
        # Lapped while not reading: the publisher never waits under drop-oldest.
        for seq in range(1000):
            assert pub.try_write(frame(seq)) is True
        f = sub.read_frame(timeout=5)
        assert f.missed > 0 and f.seq == f.missed, f   # it started at seq 0
        assert seq_of(f.data) == f.seq
        got.append((f.seq, f.missed))
        while True:
            try:
                f = sub.read_frame(timeout=0)
            except shmlane.DeadlineExceeded:
                break
            assert seq_of(f.data) == f.seq
            got.append((f.seq, f.missed))
        check_chain(got, 1000)
        # Overwritten while held: release() says so and the frame counts as missed.
        pub.write(frame(1000))
        view = sub.peek(timeout=5)
        held_seq = sub.peeked_seq
        assert held_seq == 1000 and sub.peeked_missed == 0 and seq_of(view) == 1000
        pub.write_many([frame(s) for s in range(1001, 1200)])
        assert sub.release() is False
        with pytest.raises(ValueError):
            bytes(view)
        pub.close()
        rest = []
        while True:
            try:
                f = sub.read_frame(timeout=5)
            except shmlane.Closed:
                break
            rest.append((f.seq, f.missed))
        assert rest and rest[0][1] >= 1                # the held frame is among the missed
        check_chain(got + rest, 1200)
        assert sub.missed_frames == sum(m for _, m in got + rest)
        assert sub.frames_read == len(got) + len(rest)


def test_permission_denied_for_another_uid(daemon, rt):
    if os.geteuid() != 0:
        pytest.skip("SKIPPED LOUDLY: needs root to switch to uid %d (run ctest as root, as CI "
                    "does)" % OTHER_UID)
    name = daemon.channel("broadcast")
    script = textwrap.dedent("""
        import os, sys
        import shmlane
        os.setgroups([])
        os.setresgid(%d, %d, %d)
        os.setresuid(%d, %d, %d)
        rt, name, want = sys.argv[1], sys.argv[2], sys.argv[3]
        for cls in (shmlane.Publisher, shmlane.Subscriber):
            try:
                with cls(name, runtime_dir=rt):
                    print("attached:", cls.__name__)
            except shmlane.PermissionDenied as e:
                assert isinstance(e, PermissionError) and e.code == 7, e
                print("denied:", cls.__name__, e)
    """ % ((OTHER_UID,) * 6))

    def attempt():
        r = subprocess.run([PYTHON, "-c", script, rt, name, ""], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=30)
        assert r.returncode == 0, r.stdout
        return r.stdout

    out = attempt()
    assert "denied: Publisher" in out and "denied: Subscriber" in out, out
    assert daemon.control.add_grant(name, "consume", uid=OTHER_UID) is True
    out = attempt()
    assert "denied: Publisher" in out and "attached: Subscriber" in out, out
    assert daemon.control.add_grant(name, "produce", uid=OTHER_UID) is True
    out = attempt()
    assert "attached: Publisher" in out and "attached: Subscriber" in out, out


def test_closed_publisher(daemon, rt):
    name = daemon.channel("broadcast")
    with shmlane.Subscriber(name, runtime_dir=rt, history=0) as sub:
        pub = shmlane.Publisher(name, runtime_dir=rt)
        with pytest.raises(shmlane.FailedPrecondition):
            shmlane.Publisher(name, runtime_dir=rt)      # one publisher per channel
        wait_for(lambda: pub.subscribers == 1, what="the subscriber to be linked")
        pub.write_many([b"one", b"two", b"three"])
        pub.close()
        pub.close()                                      # idempotent
        with pytest.raises(shmlane.FailedPrecondition, match="closed"):
            pub.write(b"four")
        with pytest.raises(shmlane.FailedPrecondition, match="closed"):
            pub.reserve(4)
        assert sub.drain(timeout=5) == [b"one", b"two", b"three"]   # committed frames first
        t0 = time.monotonic()
        with pytest.raises(shmlane.Closed, match="publisher") as info:
            sub.read(timeout=10)
        assert time.monotonic() - t0 < 2
        assert isinstance(info.value, shmlane.Unavailable)
        with pytest.raises(shmlane.Closed):
            sub.peek(timeout=0)
    # The channel takes a new publisher once the old one is gone.
    with shmlane.Publisher(name, runtime_dir=rt) as again:
        assert again.write(b"next") is True
    stream = daemon.channel()
    with pytest.raises(shmlane.InvalidArgument):
        shmlane.Publisher(stream, runtime_dir=rt)        # not a BROADCAST channel
    with pytest.raises(shmlane.NotFound):
        shmlane.Subscriber("no-such-channel", runtime_dir=rt)


def test_views_are_revoked(daemon, rt):
    name = daemon.channel("broadcast")
    with shmlane.Publisher(name, runtime_dir=rt) as pub, \
            shmlane.Subscriber(name, runtime_dir=rt, history=0) as sub:
        wait_for(lambda: pub.subscribers == 1, what="the subscriber to be linked")
        view = pub.reserve(16)
        assert isinstance(view, memoryview) and not view.readonly and len(view) == 16
        view[:5] = b"hello"
        with pytest.raises(shmlane.FailedPrecondition, match="reservation is open"):
            pub.write(b"other")
        with pytest.raises(shmlane.InvalidArgument):
            pub.commit(17)
        part = view[:2]
        with pytest.raises(BufferError, match="still alive"):
            pub.commit(5)
        del part
        pub.commit(5)
        with pytest.raises(ValueError):
            view[0] = 1                                  # revoked at commit
        with pytest.raises(shmlane.FailedPrecondition, match="nothing is reserved"):
            pub.commit()
        pub.write_many([b"second", b"third"])

        peeked = sub.peek(timeout=5)
        assert peeked.readonly and bytes(peeked) == b"hello" and sub.peeked_seq == 0
        assert sub.peek() is peeked                      # the same frame until release()
        with pytest.raises(TypeError):
            peeked[0] = 0                                # read-only mapping
        with pytest.raises(shmlane.FailedPrecondition, match="release"):
            sub.read(timeout=0)
        assert sub.release() is True
        with pytest.raises(ValueError):
            peeked[0]                                    # using a view after release raises
        with pytest.raises(ValueError):
            bytes(peeked)
        with pytest.raises(ValueError):
            memoryview(peeked)
        with pytest.raises(shmlane.FailedPrecondition, match="nothing is peeked"):
            sub.release()
        with pytest.raises(shmlane.FailedPrecondition):
            sub.peeked_seq

        kept = sub.peek(timeout=5)
        part = kept[1:4]                                 # a slice would outlive release()
        with pytest.raises(BufferError, match="still alive"):
            sub.release()
        assert bytes(kept) == b"second"                  # still held, still readable
        with pytest.raises(BufferError):
            sub.close()
        del part
        assert sub.release() is True
        with pytest.raises(ValueError):
            kept[0]
        dropped = sub.peek(timeout=5)
        del dropped                                      # dropping the view keeps the frame
        assert bytes(sub.peek()) == b"third" and sub.peeked_seq == 2
        assert sub.release() is True
        for i in range(3000):                            # many views, each revoked
            v = pub.reserve(8)
            v[:] = i.to_bytes(8, "little")
            pub.commit()
            got = sub.peek(timeout=5)
            assert int.from_bytes(got, "little") == i
            assert sub.release() is True
        pub.write(b"last")
        got = sub.peek(timeout=5)
    # close() with a frame peeked and no slice: the view dies with it.
    with pytest.raises(ValueError):
        bytes(got)


def test_deadlines_and_the_gil(daemon, rt):
    name = daemon.channel("broadcast", ring_bytes=4096)
    with shmlane.Publisher(name, runtime_dir=rt) as pub, \
            shmlane.Subscriber(name, runtime_dir=rt, history=0) as sub:
        wait_for(lambda: pub.subscribers == 1, what="the subscriber to be linked")
        t0 = time.monotonic()
        with pytest.raises(shmlane.DeadlineExceeded):
            sub.read(timeout=0.25)
        assert 0.2 <= time.monotonic() - t0 < 2.0
        with pytest.raises(TimeoutError):
            sub.peek(timeout=0.05)
        assert sub.drain(timeout=0.05) == []
        with pytest.raises(ValueError):
            sub.read(timeout=float("nan"))
        # A read blocked in another thread leaves this one the GIL.
        got = []
        t = threading.Thread(target=lambda: got.append(sub.read(timeout=20)))
        t.start()
        time.sleep(0.05)
        t0, spins = time.monotonic(), 0
        while time.monotonic() - t0 < 0.5:
            spins += 1
        assert spins > 100000, spins
        assert not got
        pub.write(b"wake")
        t.join(10)
        assert got == [b"wake"]
        # Block policy: a subscriber that does not read fills the ring.
        written = 0
        while pub.try_write(b"y" * 100):
            written += 1
        assert written > 10
        with pytest.raises(shmlane.Full):
            pub.reserve(100)
        t0 = time.monotonic()
        with pytest.raises(shmlane.DeadlineExceeded, match="subscriber is behind"):
            pub.write(b"y" * 100, timeout=0.25)
        assert 0.2 <= time.monotonic() - t0 < 2.0
        # A blocked write releases the GIL and ends once the subscriber reads.
        done = []
        t = threading.Thread(target=lambda: done.append(pub.write(b"z" * 100, timeout=20)))
        t.start()
        time.sleep(0.05)
        assert not done
        assert len(sub.drain(max=written, timeout=5)) == written
        t.join(10)
        assert done == [True]
        assert sub.read(timeout=5) == b"z" * 100
        with pytest.raises(shmlane.InvalidArgument):
            pub.write(b"x" * (pub.max_frame_bytes + 1))


def test_disconnect_policy_detaches_a_lagging_subscriber(daemon, rt):
    name = daemon.channel("broadcast", ring_bytes=4096, slow_subscriber_policy="disconnect")
    with shmlane.Publisher(name, runtime_dir=rt) as pub, \
            shmlane.Subscriber(name, runtime_dir=rt, history=0) as sub:
        wait_for(lambda: pub.subscribers == 1, what="the subscriber to be linked")
        for seq in range(200):                 # 200 x 64 bytes: a whole ring behind
            assert pub.try_write(frame(seq)) is True
        with pytest.raises(shmlane.Closed, match="detached") as info:
            while True:
                sub.read(timeout=5)
        assert isinstance(info.value, shmlane.Unavailable)
        sub.close()                            # it stays linked until it leaves
        wait_for(lambda: pub.subscribers == 0, what="the publisher to unlink it")
        assert pub.write(frame(200)) is True


def test_ctrl_c_ends_a_blocked_read(daemon, rt):
    name = daemon.channel("broadcast")
    child = subprocess.Popen(
        [PYTHON, "-c", textwrap.dedent("""
            import sys
            import shmlane
            with shmlane.Subscriber(sys.argv[2], runtime_dir=sys.argv[1]) as sub:
                print("ready", flush=True)
                try:
                    sub.read()                 # no publisher: waits forever
                except KeyboardInterrupt:
                    print("interrupted", flush=True)
        """), rt, name], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready", child.stderr.read()
        time.sleep(0.3)                        # parked inside read()
        t0 = time.monotonic()
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=10)
        assert time.monotonic() - t0 < 2, "Ctrl-C took too long"
    finally:
        stop(child)
    assert child.returncode == 0 and "interrupted" in out, (out, err)
