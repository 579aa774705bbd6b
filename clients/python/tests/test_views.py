"""Zero-copy views: reserve() writes in the ring until commit(), peek() reads
until release(), and a view used after either raises instead of reaching
shared memory."""

import pytest

import shmlane


@pytest.fixture
def pair(daemon, rt):
    name = daemon.channel()
    with shmlane.Consumer(name, runtime_dir=rt) as c, shmlane.Producer(name, runtime_dir=rt) as p:
        yield p, c


def test_reserve_commit(pair):
    p, c = pair
    view = p.reserve(16)
    assert isinstance(view, memoryview) and not view.readonly and len(view) == 16
    view[:5] = b"hello"
    view[5:8] = b"!!!"
    with pytest.raises(shmlane.FailedPrecondition, match="reservation is open"):
        p.write(b"other")
    with pytest.raises(shmlane.InvalidArgument):
        p.commit(17)
    p.commit(8)
    with pytest.raises(ValueError):
        view[0] = 1                   # released at commit
    with pytest.raises(ValueError):
        bytes(view)
    with pytest.raises(shmlane.FailedPrecondition, match="nothing is reserved"):
        p.commit()
    assert c.read(timeout=5) == b"hello!!!"


def test_deferred_publish(pair):
    p, c = pair
    for i in range(3):
        v = p.reserve(1)
        v[0] = i
        p.commit(publish=False)
    assert c.drain(timeout=0) == []
    p.publish()
    assert c.drain(timeout=5) == [b"\x00", b"\x01", b"\x02"]


def test_slice_of_reserved_view_blocks_commit(pair):
    p, c = pair
    view = p.reserve(4)
    part = view[:2]
    part[:] = b"ab"
    view[2:] = b"cd"
    with pytest.raises(BufferError, match="still alive"):
        p.commit()
    with pytest.raises(BufferError):
        p.close()                      # would unmap memory the slice points into
    view[3:] = b"D"                    # refused before anything was released
    del part
    p.commit()
    assert c.read(timeout=5) == b"abcD"


def test_dropped_reserved_view_still_commits(pair):
    p, c = pair
    view = p.reserve(3)
    view[:] = b"xyz"
    del view
    p.commit()
    assert c.read(timeout=5) == b"xyz"


def test_peek_release(pair):
    p, c = pair
    p.write_many([b"first", b"second"])
    view = c.peek(timeout=5)
    assert view.readonly and bytes(view) == b"first"
    assert c.peek() is view           # the same frame until release()
    with pytest.raises(TypeError):
        view[0] = 0
    with pytest.raises(shmlane.FailedPrecondition, match="release"):
        c.read(timeout=0)
    assert c.peeked_peer.attachment_id == p.attachment_id
    c.release()
    with pytest.raises(ValueError):
        view[0]
    with pytest.raises(ValueError):
        bytes(view)
    with pytest.raises(shmlane.FailedPrecondition):
        c.release()
    kept = c.peek(timeout=5)
    part = kept[:3]                    # points into the ring: release() refuses
    with pytest.raises(BufferError, match="still alive"):
        c.release()
    assert bytes(part) == b"sec" and bytes(kept) == b"second"
    copied = bytes(part)               # what outlives release(): a copy
    del part
    c.release()
    with pytest.raises(ValueError):
        kept[0]
    p.write(b"third")
    v3 = c.peek(timeout=5)
    assert bytes(v3) == b"third" and copied == b"sec"
    c.release()


def test_views_under_many_frames(pair):
    p, c = pair
    for i in range(5000):
        v = p.reserve(8)
        v[:] = i.to_bytes(8, "little")
        p.commit()
        if i % 2:
            got = c.peek(timeout=5)
            assert int.from_bytes(got, "little") == i - 1
            c.release()
            got = c.peek(timeout=5)
            assert int.from_bytes(got, "little") == i
            c.release()
