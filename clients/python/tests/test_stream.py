"""Producer/Consumer across languages: Python to the C++ example consumer,
the C++ example producer to Python, and Python to Python with every call."""

import re
import struct
import subprocess

import shmlane
from conftest import example, run

FRAMES = 20000


def frame(seq, size=64):
    return struct.pack("<Q", seq) + bytes(size - 8)


def test_python_producer_to_cpp_consumer(daemon, rt):
    name = daemon.channel()
    consumer = subprocess.Popen(
        [example("stream_consumer"), "--channel", name, "--runtime-dir", rt,
         "--idle-exit-s", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        with shmlane.Producer(name, runtime_dir=rt, client_name="pyprod") as p:
            assert p.channel == name
            assert p.max_frame_bytes > 64
            half = FRAMES // 2
            for seq in range(half):                      # one at a time
                assert p.write(frame(seq), timeout=10) is True
            batch = [frame(seq) for seq in range(half, FRAMES)]
            for i in range(0, len(batch), 500):          # batched
                assert p.write_many(batch[i:i + 500], timeout=10) == len(batch[i:i + 500])
        out, err = consumer.communicate(timeout=30)
    finally:
        if consumer.poll() is None:
            consumer.kill()
            consumer.wait()
    assert consumer.returncode == 0, err
    assert "stream_consumer: %d frames" % FRAMES in out, out
    gaps = [int(g) for g in re.findall(r"pyprod\s+\d+ frames (\d+) gaps", out)]
    assert gaps and gaps[-1] == 0, out


def test_cpp_producer_to_python_consumer(daemon, rt):
    name = daemon.channel()
    events = []
    with shmlane.Consumer(name, runtime_dir=rt, on_peer_event=events.append) as c:
        producer = subprocess.Popen(
            [example("stream_producer"), "--channel", name, "--runtime-dir", rt,
             "--frames", str(FRAMES), "--size", "64", "--name", "cxxprod"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        seen = 0
        while seen < FRAMES:
            if seen % 3 == 0:
                got = [c.read(timeout=10)]
            else:
                got = c.drain(max=1000, timeout=10)
            assert got, "no frame within 10 s after %d" % seen
            for data in got:
                assert len(data) == 64
                assert struct.unpack_from("<Q", data)[0] == seen
                seen += 1
        out, err = producer.communicate(timeout=30)
        assert producer.returncode == 0, err
        # The producer's exit is reported after its frames.
        with __import__("pytest").raises(shmlane.DeadlineExceeded):
            c.read(timeout=0.3)
    kinds = [(e.kind, e.peer.name) for e in events]
    assert ("attached", "cxxprod") in kinds, kinds
    assert ("detached", "cxxprod") in kinds, kinds


def test_python_to_python_all_calls(daemon, rt):
    name = daemon.channel()
    with shmlane.Consumer(name, runtime_dir=rt) as c, \
            shmlane.Producer(name, runtime_dir=rt, client_name="me") as p:
        assert p.write(b"one") is True
        assert p.try_write(bytearray(b"two")) is True
        assert p.write(memoryview(b"xthreex")[1:6]) is True
        assert p.write_many([b"four", b"five", bytearray(b"six")]) == 3
        view = p.reserve(5)
        view[:] = b"seven"
        p.commit()
        assert c.read(timeout=5) == b"one"
        f = c.read_frame(timeout=5)
        assert f.data == b"two" and f.peer.name == "me"
        assert c.read(timeout=5) == b"three"
        assert c.drain(max=2, timeout=5) == [b"four", b"five"]
        assert c.drain(timeout=5) == [b"six", b"seven"]
        assert c.drain(timeout=0) == []
        assert [peer.name for peer in c.peers] == ["me"]
        assert p.write(b"") is True                       # an empty frame is a frame
        assert c.read(timeout=5) == b""
        try:
            p.write(b"x" * (p.max_frame_bytes + 1))
            raise AssertionError("expected InvalidArgument")
        except shmlane.InvalidArgument as e:
            assert "max_frame_bytes" in str(e)
        try:
            p.write("text")
            raise AssertionError("expected TypeError")
        except TypeError:
            pass


def test_write_many_blocks_for_room_on_a_small_ring(daemon, rt):
    import threading
    name = daemon.channel(ring_bytes=4096)
    frames = [frame(seq, 100) for seq in range(3000)]    # ~300 KB through a 4 KiB ring
    got = []
    with shmlane.Consumer(name, runtime_dir=rt) as c, shmlane.Producer(name, runtime_dir=rt) as p:
        def drain():                                     # needs the GIL the writer released
            while len(got) < len(frames):
                got.extend(c.drain(max=64, timeout=10))
        t = threading.Thread(target=drain)
        t.start()
        assert p.write_many(frames, timeout=20) == len(frames)
        t.join(20)
    assert got == frames
