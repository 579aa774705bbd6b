#!/usr/bin/python3
"""Request/reply: serve upper-casing replies, or call a server.

    request_reply.py serve --channel echo [--seconds 0]
    request_reply.py call  --channel echo [--calls 1000]

The server answers `ping` with `PING`; an empty request gets InvalidArgument,
which reaches the caller as shmlane.InvalidArgument. Works with the C++
echo_server/echo_client too (they echo bytes unchanged).
"""
import argparse
import time

import shmlane


def handler(request: bytes) -> bytes:
    if not request:
        raise shmlane.InvalidArgument("empty request")
    return request.upper()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=["serve", "call"])
    ap.add_argument("--channel", default="echo")
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=0, help="serve this long (0: until Ctrl-C)")
    ap.add_argument("--runtime-dir", default=None)
    args = ap.parse_args()
    if args.mode == "serve":
        with shmlane.Server(args.channel, runtime_dir=args.runtime_dir) as server:
            print("request_reply.py: serving", flush=True)
            served = server.serve(handler, timeout=args.seconds or None)
        print("request_reply.py: served %d requests" % served)
        return
    with shmlane.Client(args.channel, runtime_dir=args.runtime_dir) as client:
        start = time.monotonic()
        for i in range(args.calls):
            reply = client.call(b"ping %d" % i, timeout=5)
            assert reply in (b"PING %d" % i, b"ping %d" % i), reply
        secs = time.monotonic() - start
        try:
            client.call(b"", timeout=5)
        except shmlane.InvalidArgument as e:
            print("request_reply.py: empty request refused: %s" % e)
    print("request_reply.py: %d calls, %.1f us per round trip" % (args.calls, secs / args.calls * 1e6))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
    except shmlane.Error as e:
        raise SystemExit("request_reply.py: %s: %s" % (type(e).__name__, e))
