"""Consumer.peek() in place: the view points into the lane's shared memory
(no copy), names the frame's lane position, stops working at release(), and
on a durable channel a frame peeked and never released comes again, at the
same position, to the next consumer after the first one is SIGKILLed."""

import ctypes
import os
import selectors
import signal
import struct
import subprocess
import sys
import time

import pytest

import shmlane
from conftest import example


class _PyBuffer(ctypes.Structure):
    # CPython's Py_buffer (Include/pybuffer.h), to read a view's address.
    _fields_ = [("buf", ctypes.c_void_p), ("obj", ctypes.py_object), ("len", ctypes.c_ssize_t),
                ("itemsize", ctypes.c_ssize_t), ("readonly", ctypes.c_int),
                ("ndim", ctypes.c_int), ("format", ctypes.c_char_p),
                ("shape", ctypes.c_void_p), ("strides", ctypes.c_void_p),
                ("suboffsets", ctypes.c_void_p), ("internal", ctypes.c_void_p)]


def address_of(view):
    """The address of a buffer's first byte (read-only buffers included)."""
    b = _PyBuffer()
    get = ctypes.pythonapi.PyObject_GetBuffer
    get.argtypes = [ctypes.py_object, ctypes.POINTER(_PyBuffer), ctypes.c_int]
    if get(view, ctypes.byref(b), 0) != 0:
        raise AssertionError("PyObject_GetBuffer failed")
    try:
        return b.buf
    finally:
        release = ctypes.pythonapi.PyBuffer_Release
        release.argtypes = [ctypes.POINTER(_PyBuffer)]
        release(ctypes.byref(b))


def mapping_of(address):
    """The /proc/self/maps line of the mapping holding `address`."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            if lo <= address < hi:
                return line.strip()
    return None


def assert_in_shared_memory(view):
    line = mapping_of(address_of(view))
    assert line is not None, "the view's address is in no mapping"
    perms = line.split()[1]
    # A MAP_SHARED mapping of the lane's memfd, not the heap of a copy.
    assert perms[3] == "s", "the view is not in shared memory: " + line


def test_peek_is_in_place_and_names_its_position(daemon, rt):
    name = daemon.channel()
    with shmlane.Consumer(name, runtime_dir=rt) as c, shmlane.Producer(name, runtime_dir=rt) as p:
        assert c.durable is False
        p.write_many([b"first-frame", b"second"])
        view = c.peek(timeout=5)
        assert bytes(view) == b"first-frame"
        assert_in_shared_memory(view)
        first = address_of(view), c.peeked_position
        del view
        again = c.peek(timeout=5)        # the same frame, over the same bytes
        assert (address_of(again), c.peeked_position) == first
        assert c.position == first[1]
        c.release()
        second = c.peek(timeout=5)
        assert bytes(second) == b"second"
        assert_in_shared_memory(second)
        # The next frame lies further on in the same ring, as far as the lane
        # position moved (header and padding included; a fresh 1 MiB ring
        # does not wrap here).
        assert c.peeked_position > first[1]
        assert address_of(second) - first[0] == c.peeked_position - first[1]
        c.release()
        with pytest.raises(shmlane.FailedPrecondition, match="nothing is peeked"):
            c.peeked_position


def test_peek_shows_what_a_cpp_producer_wrote(daemon, rt):
    name = daemon.channel()
    frames = 2000
    with shmlane.Consumer(name, runtime_dir=rt) as c:
        producer = subprocess.Popen(
            [example("stream_producer"), "--channel", name, "--runtime-dir", rt,
             "--frames", str(frames), "--size", "64", "--name", "cxxprod"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            last = -1
            for seq in range(frames):
                view = c.peek(timeout=10)
                assert len(view) == 64
                assert struct.unpack_from("<Q", view)[0] == seq
                assert c.peeked_peer.name == "cxxprod"
                assert c.peeked_position > last
                last = c.peeked_position
                if seq % 500 == 0:
                    assert_in_shared_memory(view)
                c.release()
            out, err = producer.communicate(timeout=30)
            assert producer.returncode == 0, err
        finally:
            if producer.poll() is None:
                producer.kill()
                producer.wait()


def test_view_refuses_use_after_release_and_close(daemon, rt):
    name = daemon.channel()
    with shmlane.Producer(name, runtime_dir=rt) as p:
        c = shmlane.Consumer(name, runtime_dir=rt)
        p.write_many([b"abcdef", b"ghijkl"])
        view = c.peek(timeout=5)
        part = view[:3]                  # points into the ring too
        with pytest.raises(BufferError, match="still alive"):
            c.release()
        assert bytes(view) == b"abcdef"  # refused before anything was released
        assert c.peek() is view          # still peeked
        del part
        c.release()
        with pytest.raises(ValueError):
            view[0]
        with pytest.raises(ValueError):
            bytes(view)
        held = c.peek(timeout=5)
        assert bytes(held) == b"ghijkl"
        c.close()                        # ends the view too
        with pytest.raises(ValueError):
            bytes(held)
        with pytest.raises(shmlane.FailedPrecondition, match="closed"):
            c.peek(timeout=0)


def test_peek_waits_without_the_gil(daemon, rt):
    import threading
    name = daemon.channel()
    with shmlane.Consumer(name, runtime_dir=rt) as c, shmlane.Producer(name, runtime_dir=rt) as p:
        writer = threading.Timer(0.3, lambda: p.write(b"late"))
        writer.start()                   # needs the GIL that peek() waits without
        t0 = time.monotonic()
        view = c.peek(timeout=10)
        writer.join()
        assert bytes(view) == b"late" and time.monotonic() - t0 < 5
        c.release()
        with pytest.raises(shmlane.DeadlineExceeded):
            c.peek(timeout=0.05)


def test_read_frame_has_its_position(daemon, rt):
    name = daemon.channel()
    with shmlane.Consumer(name, runtime_dir=rt) as c, shmlane.Producer(name, runtime_dir=rt) as p:
        p.write_many([b"one", b"two"])
        f1 = c.read_frame(timeout=5)
        assert c.position == f1.position
        f2 = c.read_frame(timeout=5)
        assert (f1.data, f2.data) == (b"one", b"two")
        assert f2.position > f1.position


# A consumer in a child process: releases the first frame, peeks the second
# and reports it, then waits to be killed holding it.
_HOLDER = r"""
import sys, shmlane
c = shmlane.Consumer(sys.argv[1], runtime_dir=sys.argv[2], client_name="holder")
assert c.durable, "the consumer does not see the channel as durable"
v = c.peek(timeout=10)
c.release()
v = c.peek(timeout=10)
print("held", bytes(v).decode(), c.peeked_position, c.peeked_peer.lane_id, flush=True)
sys.stdin.read()
"""


def read_line(proc, timeout):
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    if not sel.select(timeout):
        pytest.fail("no line from the child within %.0f s" % timeout)
    return proc.stdout.readline()


def attach_next(name, rt, timeout=10.0):
    # The daemon learns of the killed consumer from its socket's hang-up;
    # until then a second consumer is refused.
    deadline = time.monotonic() + timeout
    while True:
        try:
            return shmlane.Consumer(name, runtime_dir=rt, client_name="next")
        except shmlane.FailedPrecondition:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_durable_peeked_frame_comes_again_after_sigkill(daemon, rt):
    name = daemon.channel(durable=True)
    with shmlane.Producer(name, runtime_dir=rt) as p:
        holder = subprocess.Popen([sys.executable, "-c", _HOLDER, name, rt],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        try:
            for i in range(4):
                assert p.write(b"frame-%d" % i, timeout=5)
            line = read_line(holder, 20)
            fields = line.split()
            assert len(fields) == 4 and fields[0] == "held", \
                (line, holder.stderr.read() if holder.poll() is not None else "")
            _, data, position, lane = fields
            assert data == "frame-1"
            os.kill(holder.pid, signal.SIGKILL)
            holder.wait(timeout=10)
            assert holder.returncode == -signal.SIGKILL
        finally:
            if holder.poll() is None:
                holder.kill()
                holder.wait()
        with attach_next(name, rt) as c:
            assert c.durable is True
            view = c.peek(timeout=10)
            # The frame released before the kill is gone; the held one comes
            # again with the same (lane_id, position).
            assert bytes(view) == b"frame-1"
            assert (c.peeked_peer.lane_id, c.peeked_position) == (int(lane), int(position))
            assert_in_shared_memory(view)
            c.release()
            assert c.read(timeout=5) == b"frame-2"
            # A durable read() releases its frame when the next call begins.
            f = c.read_frame(timeout=5)
            assert f.data == b"frame-3" and f.position > int(position)


# A child consumer that peeks one frame, releases it, says so and waits to
# be killed (only calls the copying peek() had too).
_RELEASER = r"""
import sys, shmlane
c = shmlane.Consumer(sys.argv[1], runtime_dir=sys.argv[2], client_name="releaser")
v = c.peek(timeout=10)
data = bytes(v)
c.release()
print("released", data.decode(), flush=True)
sys.stdin.read()
"""


def test_durable_released_frame_is_not_delivered_again(daemon, rt):
    name = daemon.channel(durable=True)
    with shmlane.Producer(name, runtime_dir=rt) as p:
        child = subprocess.Popen([sys.executable, "-c", _RELEASER, name, rt],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        try:
            for i in range(2):
                assert p.write(b"job-%d" % i, timeout=5)
            line = read_line(child, 20)
            assert line.split() == ["released", "job-0"], \
                (line, child.stderr.read() if child.poll() is not None else "")
            os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=10)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        with attach_next(name, rt) as c:
            # release() consumed job-0 in the lane, not only in Python.
            assert c.read(timeout=10) == b"job-1"


def test_durable_close_leaves_a_peeked_frame_to_the_next_consumer(daemon, rt):
    name = daemon.channel(durable=True)
    with shmlane.Producer(name, runtime_dir=rt) as p:
        first = shmlane.Consumer(name, runtime_dir=rt)
        p.write_many([b"a", b"b"])
        assert first.read(timeout=5) == b"a"
        view = first.peek(timeout=5)     # b: the read of a is released by this call
        held = (bytes(view), first.peeked_peer.lane_id, first.peeked_position)
        first.close()
        with pytest.raises(ValueError):
            bytes(view)
        with attach_next(name, rt) as c:
            again = c.peek(timeout=5)
            assert (bytes(again), c.peeked_peer.lane_id, c.peeked_position) == held
            c.release()
