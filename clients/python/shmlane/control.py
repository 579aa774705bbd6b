"""shmlane.control: a thin client of shmlaned's gRPC control API.

Channels, grants, quotas, stats and the event stream of
``protos/shmlane/v1/control.proto``, with the stubs generated at build time
(``shmlane.v1.control_pb2``/``control_pb2_grpc``). Results are the protobuf
messages themselves; errors are :class:`shmlane.Error` subclasses mapped
from the gRPC status code, with the daemon's message.

    from shmlane import control
    with control.connect() as ctl:                  # <runtime dir>/control.sock
        ctl.create_channel("demo", pattern="stream", ring_bytes=1 << 20)
        ctl.add_grant("demo", "produce", uid=1000)
        for ch in ctl.list_channels():
            print(ch.spec.name, ch.attached_producers)

The control socket is an admin boundary (mode 0600 by default): run as the
daemon's user or root, or use a daemon started in multi-user mode.
"""

from __future__ import annotations

import os
from typing import Dict, Iterator, List, Optional, Union

try:
    import grpc
    from shmlane.v1 import control_pb2, control_pb2_grpc
except ImportError as e:  # pragma: no cover - depends on the installation
    raise ImportError(
        "shmlane.control needs Debian's python3-grpcio and python3-protobuf and the stubs "
        "generated at build time (grpc_python_plugin, package protobuf-compiler-grpc): "
        + str(e)) from e

from shmlane._errors import Error, InvalidArgument, error_for_code

__all__ = ["ControlClient", "connect", "control_socket_path", "runtime_dir",
           "control_pb2", "control_pb2_grpc"]

_PATTERNS = {
    "stream": control_pb2.CHANNEL_PATTERN_STREAM,
    "request-reply": control_pb2.CHANNEL_PATTERN_REQUEST_REPLY,
    "request_reply": control_pb2.CHANNEL_PATTERN_REQUEST_REPLY,
    "broadcast": control_pb2.CHANNEL_PATTERN_BROADCAST,
}
_SLOW_SUBSCRIBER = {
    "block": control_pb2.SLOW_SUBSCRIBER_POLICY_BLOCK,
    "drop-oldest": control_pb2.SLOW_SUBSCRIBER_POLICY_DROP_OLDEST,
    "drop_oldest": control_pb2.SLOW_SUBSCRIBER_POLICY_DROP_OLDEST,
    "disconnect": control_pb2.SLOW_SUBSCRIBER_POLICY_DISCONNECT,
}
_BACKPRESSURE = {
    "block": control_pb2.BACKPRESSURE_POLICY_BLOCK,
    "fail": control_pb2.BACKPRESSURE_POLICY_FAIL,
    "drop": control_pb2.BACKPRESSURE_POLICY_DROP,
}
_ROLES = {
    "produce": control_pb2.GRANT_ROLE_PRODUCE,
    "consume": control_pb2.GRANT_ROLE_CONSUME,
    "admin": control_pb2.GRANT_ROLE_ADMIN,
}


def runtime_dir(explicit: Optional[str] = None) -> str:
    """`explicit`, else $SHMLANE_RUNTIME_DIR, else $XDG_RUNTIME_DIR/shmlane, else /run/shmlane."""
    if explicit:
        return explicit
    if os.environ.get("SHMLANE_RUNTIME_DIR"):
        return os.environ["SHMLANE_RUNTIME_DIR"]
    if os.environ.get("XDG_RUNTIME_DIR"):
        return os.path.join(os.environ["XDG_RUNTIME_DIR"], "shmlane")
    return "/run/shmlane"


def control_socket_path(explicit_runtime_dir: Optional[str] = None) -> str:
    """<runtime dir>/control.sock"""
    return os.path.join(runtime_dir(explicit_runtime_dir), "control.sock")


def _enum(value: Union[str, int], names: Dict[str, int], what: str) -> int:
    if isinstance(value, int):
        return value
    try:
        return names[value.lower()]
    except KeyError:
        raise InvalidArgument("unknown %s %r: use one of %s" % (what, value, ", ".join(names)))


def _error(e: grpc.RpcError) -> Error:
    code = e.code()
    return error_for_code(code.value[0] if code is not None else 2, e.details() or str(code))


class ControlClient:
    """A connection to shmlaned's control API. Thread-safe, as gRPC channels are."""

    def __init__(self, target: Optional[str] = None, *, runtime_dir: Optional[str] = None,
                 timeout: float = 10.0, channel: Optional[grpc.Channel] = None) -> None:
        """`target`: a gRPC target ("unix:/path", "host:port"); default
        unix:<runtime dir>/control.sock. `timeout`: seconds per call.
        `channel`: a ready grpc.Channel instead (TLS, options)."""
        if channel is None:
            if target is None:
                target = "unix:" + control_socket_path(runtime_dir)
            channel = grpc.insecure_channel(target)
        self._channel = channel
        self.timeout = timeout
        self.channels = control_pb2_grpc.ChannelServiceStub(channel)
        self.access = control_pb2_grpc.AccessServiceStub(channel)

    def _call(self, method, request, timeout: Optional[float] = None):
        try:
            return method(request, timeout=self.timeout if timeout is None else timeout)
        except grpc.RpcError as e:
            raise _error(e) from None

    # --- channels -----------------------------------------------------------
    def create_channel(self, name: str, *, pattern: Union[str, int] = "stream",
                       ring_bytes: int = 0, max_frame_bytes: int = 0, max_producers: int = 0,
                       backpressure: Union[str, int] = "block", latency_sample_every: int = 0,
                       disable_latency_sampling: bool = False,
                       labels: Optional[Dict[str, str]] = None,
                       owner_uid: Optional[int] = None,
                       slow_subscriber_policy: Union[str, int, None] = None,
                       history_frames: int = 0,
                       max_subscribers: int = 0,
                       durable: bool = False) -> control_pb2.Channel:
        """Creates a channel; 0 means the daemon's default. BROADCAST channels
        (pattern="broadcast") take slow_subscriber_policy ("block",
        "drop-oldest", "disconnect"), history_frames and max_subscribers.
        durable=True (stream and request_reply): the lanes outlive the consumer
        or server, and the next one continues from its last released frame.
        Raises AlreadyExists, InvalidArgument, ResourceExhausted (quota),
        PermissionDenied."""
        spec = control_pb2.ChannelSpec(
            name=name, pattern=_enum(pattern, _PATTERNS, "pattern"), ring_bytes=ring_bytes,
            max_frame_bytes=max_frame_bytes, max_producers=max_producers,
            backpressure=_enum(backpressure, _BACKPRESSURE, "backpressure"),
            latency_sample_every=latency_sample_every,
            disable_latency_sampling=disable_latency_sampling, labels=labels or {},
            history_frames=history_frames, max_subscribers=max_subscribers, durable=durable)
        if slow_subscriber_policy is not None:
            spec.slow_subscriber_policy = _enum(slow_subscriber_policy, _SLOW_SUBSCRIBER,
                                                "slow_subscriber_policy")
        request = control_pb2.CreateChannelRequest(spec=spec)
        if owner_uid is not None:
            request.owner_uid = owner_uid
        return self._call(self.channels.CreateChannel, request)

    def get_channel(self, name: str) -> control_pb2.Channel:
        return self._call(self.channels.GetChannel, control_pb2.GetChannelRequest(name=name))

    def list_channels(self, page_size: int = 0) -> List[control_pb2.Channel]:
        """Every channel, sorted by name (follows the pages)."""
        out: List[control_pb2.Channel] = []
        token = ""
        while True:
            page = self._call(self.channels.ListChannels, control_pb2.ListChannelsRequest(
                page_size=page_size, page_token=token))
            out.extend(page.channels)
            token = page.next_page_token
            if not token:
                return out

    def delete_channel(self, name: str, *, force: bool = False) -> int:
        """Deletes a channel; returns the attachments a forced deletion ended."""
        return self._call(self.channels.DeleteChannel, control_pb2.DeleteChannelRequest(
            name=name, force=force)).detached_clients

    def channel_stats(self, name: str) -> control_pb2.ChannelStats:
        return self._call(self.channels.GetChannelStats,
                          control_pb2.GetChannelStatsRequest(name=name))

    def watch(self, channel: str = "", *, timeout: Optional[float] = None
              ) -> Iterator[control_pb2.Event]:
        """Events (created, attached, detached, peer died, ...) as they happen, for
        one channel or all; ends after `timeout` seconds (None: until closed)."""
        stream = self.channels.WatchEvents(control_pb2.WatchEventsRequest(channel=channel),
                                           timeout=timeout)
        try:
            for event in stream:
                yield event
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED and timeout is not None:
                return
            raise _error(e) from None
        finally:
            stream.cancel()

    # --- grants and quotas ---------------------------------------------------
    @staticmethod
    def _grant(role: Union[str, int], uid: Optional[int], gid: Optional[int],
               anyone: bool) -> control_pb2.Grant:
        if (uid is not None) + (gid is not None) + bool(anyone) != 1:
            raise InvalidArgument("give exactly one of uid=, gid=, anyone=True")
        if uid is not None:
            principal = control_pb2.Principal(uid=uid)
        elif gid is not None:
            principal = control_pb2.Principal(gid=gid)
        else:
            principal = control_pb2.Principal(anyone=True)
        return control_pb2.Grant(principal=principal, role=_enum(role, _ROLES, "role"))

    def add_grant(self, channel: str, role: Union[str, int], *, uid: Optional[int] = None,
                  gid: Optional[int] = None, anyone: bool = False) -> bool:
        """Lets uid/gid/anyone `role` ("produce", "consume", "admin") the channel.
        False when the grant was already there."""
        return self._call(self.access.AddGrant, control_pb2.AddGrantRequest(
            channel=channel, grant=self._grant(role, uid, gid, anyone))).changed

    def remove_grant(self, channel: str, role: Union[str, int], *, uid: Optional[int] = None,
                     gid: Optional[int] = None, anyone: bool = False) -> bool:
        return self._call(self.access.RemoveGrant, control_pb2.RemoveGrantRequest(
            channel=channel, grant=self._grant(role, uid, gid, anyone))).changed

    def list_grants(self, channel: str) -> control_pb2.ListGrantsResponse:
        return self._call(self.access.ListGrants, control_pb2.ListGrantsRequest(channel=channel))

    def set_quota(self, uid: int, *, max_channels: int = 0, max_shm_bytes: int = 0,
                  max_attachments: int = 0, max_frame_bytes: int = 0,
                  reset: bool = False) -> control_pb2.Quota:
        """Sets uid's limits (0 keeps a limit; reset=True forgets the old ones first)."""
        return self._call(self.access.SetQuota, control_pb2.SetQuotaRequest(
            uid=uid, reset_to_defaults=reset, limits=control_pb2.QuotaLimits(
                max_channels=max_channels, max_shm_bytes=max_shm_bytes,
                max_attachments=max_attachments, max_frame_bytes=max_frame_bytes)))

    def get_quota(self, uid: int) -> control_pb2.Quota:
        return self._call(self.access.GetQuota, control_pb2.GetQuotaRequest(uid=uid))

    # --- lifetime ---------------------------------------------------------------
    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "ControlClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(target: Optional[str] = None, *, runtime_dir: Optional[str] = None,
            timeout: float = 10.0) -> ControlClient:
    """A ControlClient for `target` (default unix:<runtime dir>/control.sock)."""
    return ControlClient(target, runtime_dir=runtime_dir, timeout=timeout)
