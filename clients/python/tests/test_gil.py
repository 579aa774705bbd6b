"""The GIL is released while a call blocks: another Python thread makes
progress meanwhile."""

import threading
import time

import shmlane


def count_while(blocked):
    """Counts loop iterations on this thread while `blocked` is not set."""
    n = 0
    while not blocked.is_set():
        n += 1
    return n


def test_read_releases_the_gil(daemon, rt):
    name = daemon.channel()
    with shmlane.Consumer(name, runtime_dir=rt) as c, shmlane.Producer(name, runtime_dir=rt) as p:
        done = threading.Event()
        result = []

        def reader():
            try:
                result.append(c.read(timeout=20))
            finally:
                done.set()

        t = threading.Thread(target=reader)
        t.start()
        time.sleep(0.05)                 # the reader is parked inside read()
        t0 = time.monotonic()
        spins = 0
        while time.monotonic() - t0 < 0.5:
            spins += 1
        assert not done.is_set()
        # Holding the GIL in read() would leave this thread a few switch
        # intervals (5 ms each) in 0.5 s; free, it spins hundreds of thousands.
        assert spins > 100000, spins
        p.write(b"wake")
        t.join(10)
        assert result == [b"wake"]


def test_call_and_write_release_the_gil(daemon, rt):
    rr = daemon.channel("request-reply")
    with shmlane.Server(rr, runtime_dir=rt) as server, shmlane.Client(rr, runtime_dir=rt) as cl:
        got = []
        t = threading.Thread(target=lambda: got.append(cl.call(b"q", timeout=20)))
        t.start()
        time.sleep(0.05)
        t0 = time.monotonic()
        spins = 0
        while time.monotonic() - t0 < 0.3:
            spins += 1
        assert spins > 50000, spins
        assert server.serve_once(lambda r: r * 2, timeout=10) == 1
        t.join(10)
        assert got == [b"qq"]

    name = daemon.channel(ring_bytes=4096)
    with shmlane.Consumer(name, runtime_dir=rt) as c, shmlane.Producer(name, runtime_dir=rt) as p:
        while p.try_write(b"z" * 200):
            pass
        finished = threading.Event()
        t = threading.Thread(target=lambda: (p.write(b"L" * 200, timeout=20), finished.set()))
        t.start()
        time.sleep(0.05)
        t0 = time.monotonic()
        spins = 0
        while time.monotonic() - t0 < 0.3:
            spins += 1
        assert spins > 50000, spins
        assert not finished.is_set()
        frames = []
        while not frames or frames[-1] != b"L" * 200:
            frames += c.drain(timeout=5)
        t.join(10)
        assert finished.is_set()


def test_second_thread_is_refused_not_raced(daemon, rt):
    name = daemon.channel()
    with shmlane.Consumer(name, runtime_dir=rt) as c:
        outcome = []

        def drain():
            try:
                outcome.append(c.drain(timeout=5.0))
            except shmlane.Cancelled:
                outcome.append("cancelled")

        t = threading.Thread(target=drain)
        t.start()
        time.sleep(0.1)
        try:
            c.read(timeout=0)
            raise AssertionError("expected FailedPrecondition")
        except shmlane.FailedPrecondition as e:
            assert "another thread" in str(e)
        c.interrupt()                    # the one call another thread may make
        t.join(10)
        assert outcome == ["cancelled"]
