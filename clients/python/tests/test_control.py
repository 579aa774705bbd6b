"""shmlane.control against the daemon's gRPC API on control.sock."""

import os
import threading
import time

import pytest

import shmlane
from shmlane import control


def test_channels_grants_quotas(daemon, rt):
    ctl = daemon.control
    ch = ctl.create_channel("ctl-a", pattern="request-reply", ring_bytes=1 << 16,
                            labels={"team": "py"}, backpressure="fail")
    assert ch.spec.name == "ctl-a"
    assert ch.spec.pattern == control.control_pb2.CHANNEL_PATTERN_REQUEST_REPLY
    assert ch.spec.max_frame_bytes == (1 << 15) - 16
    with pytest.raises(shmlane.AlreadyExists, match="already exists"):
        ctl.create_channel("ctl-a")
    with pytest.raises(shmlane.InvalidArgument):
        ctl.create_channel("Bad Name")
    with pytest.raises(shmlane.InvalidArgument, match="unknown pattern"):
        ctl.create_channel("ctl-b", pattern="fanout")
    assert ctl.get_channel("ctl-a").spec.labels["team"] == "py"
    with pytest.raises(shmlane.NotFound):
        ctl.get_channel("ctl-missing")
    for i in range(5):
        ctl.create_channel("ctl-page-%d" % i)
    names = [c.spec.name for c in ctl.list_channels(page_size=2)]
    assert [n for n in names if n.startswith("ctl-page-")] == ["ctl-page-%d" % i for i in range(5)]

    assert ctl.add_grant("ctl-a", "consume", uid=64051) is True
    assert ctl.add_grant("ctl-a", "consume", uid=64051) is False
    assert ctl.add_grant("ctl-a", "produce", anyone=True) is True
    grants = ctl.list_grants("ctl-a")
    assert len(grants.grants) == 2
    assert ctl.remove_grant("ctl-a", "produce", anyone=True) is True
    with pytest.raises(shmlane.InvalidArgument, match="exactly one"):
        ctl.add_grant("ctl-a", "consume")

    q = ctl.set_quota(64052, max_channels=3, max_attachments=7)
    assert q.limits.max_channels == 3 and q.limits.max_attachments == 7
    assert ctl.get_quota(64052).limits.max_channels == 3
    assert ctl.set_quota(64052, reset=True, max_attachments=9).limits.max_channels != 3
    assert isinstance(ctl.channel_stats("ctl-a"), control.control_pb2.ChannelStats)

    assert ctl.delete_channel("ctl-a") == 0
    with pytest.raises(shmlane.NotFound):
        ctl.delete_channel("ctl-a")


def test_watch_sees_attach(daemon, rt):
    name = daemon.channel()
    events = []
    seen = threading.Event()

    def watch():
        for e in daemon.control.watch(name, timeout=10):
            events.append(e)
            if e.type == control.control_pb2.EVENT_TYPE_DETACHED:
                seen.set()
                return

    t = threading.Thread(target=watch)
    t.start()
    time.sleep(0.3)                      # the stream is open before the attach
    with shmlane.Producer(name, runtime_dir=rt, client_name="watched"):
        pass
    assert seen.wait(10), [e.type for e in events]
    t.join(10)
    types = [e.type for e in events]
    assert control.control_pb2.EVENT_TYPE_ATTACHED in types
    assert any(e.client_name == "watched" for e in events)


def test_default_socket_from_environment(daemon, rt, monkeypatch):
    monkeypatch.setenv("SHMLANE_RUNTIME_DIR", rt)
    assert control.control_socket_path() == os.path.join(rt, "control.sock")
    name = daemon.channel()
    with control.connect() as ctl:
        assert name in [c.spec.name for c in ctl.list_channels()]
    monkeypatch.delenv("SHMLANE_RUNTIME_DIR")
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/1234")
    assert control.runtime_dir() == "/run/user/1234/shmlane"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert control.runtime_dir() == "/run/shmlane"
    assert shmlane.resolve_runtime_dir() == "/run/shmlane"
    with pytest.raises(shmlane.Unavailable):
        control.connect(runtime_dir="/nonexistent-shmlane", timeout=1).list_channels()
