"""Errors as exceptions: another uid without a grant, a closed peer,
deadlines, no daemon, no channel, and the exception hierarchy."""

import os
import subprocess
import textwrap
import time

import pytest

import shmlane
from conftest import PYTHON, example, wait_for

OTHER_UID = 64050  # a fixed uid no account uses (tests/common uses 64001-64099)


def test_permission_denied_for_another_uid(daemon, rt):
    if os.geteuid() != 0:
        pytest.skip("SKIPPED LOUDLY: needs root to switch to uid %d (run ctest as root, as CI "
                    "does)" % OTHER_UID)
    name = daemon.channel()
    script_rt = [rt, name]
    r = subprocess.run(
        [PYTHON, "-c", textwrap.dedent("""
            import os, sys
            import shmlane
            os.setgroups([])
            os.setresgid(%d, %d, %d)
            os.setresuid(%d, %d, %d)
            rt, name = sys.argv[1], sys.argv[2]
            assert os.getuid() == %d
            for cls in (shmlane.Producer, shmlane.Consumer):
                try:
                    cls(name, runtime_dir=rt)
                except shmlane.PermissionDenied as e:
                    assert isinstance(e, PermissionError) and e.code == 7, e
                    print("denied:", e)
                else:
                    sys.exit("attached without a grant")
        """ % ((OTHER_UID,) * 7))] + script_rt,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=30)
    assert r.returncode == 0, r.stdout
    assert r.stdout.count("denied:") == 2, r.stdout
    # With a grant the same uid attaches.
    assert daemon.control.add_grant(name, "produce", uid=OTHER_UID) is True
    r = subprocess.run(
        [PYTHON, "-c", textwrap.dedent("""
            import os, sys
            import shmlane
            os.setgroups([])
            os.setresgid(%d, %d, %d)
            os.setresuid(%d, %d, %d)
            with shmlane.Producer(sys.argv[2], runtime_dir=sys.argv[1]) as p:
                p.write(b"granted")
            print("attached")
        """ % ((OTHER_UID,) * 6))] + script_rt,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=30)
    assert r.returncode == 0 and "attached" in r.stdout, r.stdout


def test_closed_after_the_consumer_is_killed(daemon, rt):
    name = daemon.channel(ring_bytes=4096)
    consumer = subprocess.Popen([example("stream_consumer"), "--channel", name,
                                 "--runtime-dir", rt], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: daemon.control.get_channel(name).consumer_attached,
                 what="stream_consumer to attach")
        with shmlane.Producer(name, runtime_dir=rt) as p:
            assert p.peer.attachment_id != 0
            for _ in range(100):
                p.write(b"x" * 64, timeout=5)   # flows while the consumer reads
            consumer.kill()
            consumer.wait(10)
            killed = time.monotonic()
            with pytest.raises(shmlane.Closed) as info:
                while time.monotonic() - killed < 10:
                    p.write(b"x" * 64, timeout=5)
            assert time.monotonic() - killed < 5, "Closed took too long"
            assert isinstance(info.value, shmlane.Unavailable)
            assert p.peer_closed
            assert p.status
    finally:
        if consumer.poll() is None:
            consumer.kill()
            consumer.wait()


def test_deadlines(daemon, rt):
    name = daemon.channel(ring_bytes=4096)
    rr = daemon.channel("request-reply")
    with shmlane.Consumer(name, runtime_dir=rt) as c, \
            shmlane.Producer(name, runtime_dir=rt) as p:
        t0 = time.monotonic()
        with pytest.raises(shmlane.DeadlineExceeded):
            c.read(timeout=0.25)
        took = time.monotonic() - t0
        assert 0.2 <= took < 2.0, took
        with pytest.raises(TimeoutError):          # DeadlineExceeded is a TimeoutError
            c.peek(timeout=0.05)
        assert c.drain(timeout=0.05) == []
        # Nobody reads: the 4 KiB ring fills, then write() times out.
        written = 0
        while p.try_write(b"y" * 100):
            written += 1
        assert written > 10
        t0 = time.monotonic()
        with pytest.raises(shmlane.DeadlineExceeded):
            p.write(b"y" * 100, timeout=0.25)
        assert 0.2 <= time.monotonic() - t0 < 2.0
        with pytest.raises(shmlane.Full):
            p.reserve(100)
        with pytest.raises(ValueError):
            c.read(timeout=float("nan"))
    with shmlane.Server(rr, runtime_dir=rt), shmlane.Client(rr, runtime_dir=rt) as client:
        t0 = time.monotonic()                      # a server that does not serve
        with pytest.raises(shmlane.DeadlineExceeded):
            client.call(b"hello", timeout=0.25)
        assert 0.2 <= time.monotonic() - t0 < 2.0


def test_no_daemon_no_channel(daemon, rt, tmp_path):
    with pytest.raises(shmlane.Unavailable, match="not running"):
        shmlane.Producer("demo", runtime_dir=str(tmp_path))
    with pytest.raises(shmlane.NotFound):
        shmlane.Consumer("no-such-channel", runtime_dir=rt)
    with pytest.raises(shmlane.InvalidArgument):
        shmlane.Producer("demo", runtime_dir=rt, attach_timeout=-1)
    name = daemon.channel()
    with shmlane.Consumer(name, runtime_dir=rt):
        with pytest.raises(shmlane.FailedPrecondition):
            shmlane.Consumer(name, runtime_dir=rt)   # a second consumer
    for cls in (shmlane.Closed, shmlane.PermissionDenied, shmlane.NotFound,
                shmlane.DeadlineExceeded, shmlane.Full, shmlane.Cancelled):
        assert issubclass(cls, shmlane.Error)
    e = shmlane.error_for_code(7, "nope")
    assert type(e) is shmlane.PermissionDenied and str(e) == "nope" and e.code == 7
    assert shmlane.error_for_code(99, "odd").code == 99


def test_closed_objects_and_interrupt(daemon, rt):
    name = daemon.channel()
    p = shmlane.Producer(name, runtime_dir=rt)
    p.close()
    p.close()                                      # idempotent
    with pytest.raises(shmlane.FailedPrecondition, match="closed"):
        p.write(b"x")
    c = shmlane.Consumer(name, runtime_dir=rt)
    c.interrupt()
    with pytest.raises(shmlane.Cancelled):
        c.read(timeout=5)
    c.close()
    with pytest.raises(shmlane.FailedPrecondition):
        c.read(timeout=0)
