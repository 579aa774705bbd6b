"""shmlane: node-local shared-memory IPC for Python.

Frames move between processes through shared-memory rings set up by the
``shmlaned`` daemon; the daemon is not on the data path.

    import shmlane
    with shmlane.Producer("demo") as p:
        p.write(b"hello")                  # copies; blocks on a full ring
        view = p.reserve(64)               # zero-copy: a writable memoryview in the ring
        view[:5] = b"world"
        p.commit(5)                        # publishes; the view stops working

    with shmlane.Consumer("demo") as c:
        data = c.read(timeout=1.0)         # bytes; DeadlineExceeded after 1 s
        frames = c.drain(max=256)          # what is there now, as a list
        view = c.peek()                    # read-only memoryview until release()
        c.release()

    reply = shmlane.Client("echo").call(b"ping", timeout=0.1)

    with shmlane.Publisher("camera") as pub:      # a BROADCAST channel: one ring
        pub.write(b"frame")                       # every subscriber gets it
    with shmlane.Subscriber("camera") as sub:     # one of many
        f = sub.read_frame(timeout=1.0)           # f.data, f.seq, f.missed (lapped)
        view = sub.peek()                         # read-only, in place, until release()
        intact = sub.release()                    # False: overwritten meanwhile

Timeouts are float seconds (None: forever). Errors are exceptions derived
from :class:`shmlane.Error`, one per status code (``PermissionDenied``,
``NotFound``, ``DeadlineExceeded``, ``Unavailable``, ...), plus ``Closed``
(the peer closed the lane) and ``Full`` (no room now). Every blocking call
releases the GIL. The daemon is found at ``runtime_dir``, else
``$SHMLANE_RUNTIME_DIR``, else ``$XDG_RUNTIME_DIR/shmlane``, else
``/run/shmlane``. ``shmlane.control`` manages channels, grants and quotas
over the daemon's gRPC API.
"""

from shmlane._errors import (
    Aborted,
    AlreadyExists,
    Cancelled,
    Closed,
    DataLoss,
    DeadlineExceeded,
    Error,
    FailedPrecondition,
    Full,
    Internal,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    Unknown,
    error_for_code,
)
from shmlane._shmlane import (
    BroadcastFrame,
    Client,
    Consumer,
    Frame,
    Peer,
    PeerEvent,
    Producer,
    Publisher,
    Server,
    Subscriber,
    __version__,
    resolve_runtime_dir,
)

__all__ = [
    "Aborted", "AlreadyExists", "BroadcastFrame", "Cancelled", "Client", "Closed", "Consumer",
    "DataLoss", "DeadlineExceeded", "Error", "FailedPrecondition", "Frame", "Full", "Internal",
    "InvalidArgument", "NotFound", "OutOfRange", "Peer", "PeerEvent", "PermissionDenied",
    "Producer", "Publisher", "ResourceExhausted", "Server", "Subscriber", "Unauthenticated",
    "Unavailable", "Unimplemented", "Unknown", "__version__", "error_for_code",
    "resolve_runtime_dir",
]
