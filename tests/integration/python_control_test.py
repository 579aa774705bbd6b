#!/usr/bin/python3
"""Drives shmlaned's control API from Python over the Unix socket.

Generates stubs with protoc + grpc_python_plugin into a temporary directory,
starts a real shmlaned in a temporary runtime directory, and checks
CreateChannel, ListChannels (with paging), GetChannel and error codes.
"""
import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--shmlaned", required=True)
    parser.add_argument("--protoc", default="protoc")
    parser.add_argument("--grpc-python-plugin", default="/usr/bin/grpc_python_plugin")
    parser.add_argument("--proto-dir", required=True)
    args = parser.parse_args()

    base = tempfile.mkdtemp(prefix="shmlane-py-")
    os.chmod(base, 0o755)
    daemon = None
    try:
        gen = os.path.join(base, "gen")
        os.mkdir(gen)
        subprocess.run(
            [args.protoc, "-I", args.proto_dir, "-I", "/usr/include",
             "--python_out=" + gen, "--grpc_python_out=" + gen,
             "--plugin=protoc-gen-grpc_python=" + args.grpc_python_plugin,
             "shmlane/v1/control.proto"],
            check=True)
        sys.path.insert(0, gen)
        import grpc  # noqa: E402
        from shmlane.v1 import control_pb2, control_pb2_grpc  # noqa: E402

        runtime = os.path.join(base, "rt")
        out_path = os.path.join(base, "stdout")
        with open(out_path, "w") as out, open(os.path.join(base, "stderr"), "w") as err:
            daemon = subprocess.Popen(
                [args.shmlaned, "--runtime-dir", runtime, "--metrics-listen", "none"],
                stdout=out, stderr=err)
        deadline = time.time() + 15
        while "ready" not in open(out_path).read():
            if daemon.poll() is not None or time.time() > deadline:
                raise SystemExit("shmlaned did not start: "
                                 + open(os.path.join(base, "stderr")).read())
            time.sleep(0.02)

        channel = grpc.insecure_channel("unix:" + os.path.join(runtime, "control.sock"))
        stub = control_pb2_grpc.ChannelServiceStub(channel)

        names = ["py-%02d" % i for i in range(5)]
        for name in names:
            created = stub.CreateChannel(control_pb2.CreateChannelRequest(
                spec=control_pb2.ChannelSpec(
                    name=name, ring_bytes=1 << 16,
                    pattern=control_pb2.CHANNEL_PATTERN_STREAM,
                    labels={"lang": "python"})), timeout=10)
            assert created.spec.name == name, created
            assert created.spec.max_frame_bytes == (1 << 15) - 16, created

        seen = []
        token = ""
        pages = 0
        while True:
            page = stub.ListChannels(
                control_pb2.ListChannelsRequest(page_size=2, page_token=token), timeout=10)
            seen += [c.spec.name for c in page.channels]
            pages += 1
            token = page.next_page_token
            if not token:
                break
        assert seen == names, seen
        assert pages == 3, pages

        got = stub.GetChannel(control_pb2.GetChannelRequest(name="py-03"), timeout=10)
        assert got.spec.labels["lang"] == "python", got

        for request, code in [
            (control_pb2.GetChannelRequest(name="missing"), grpc.StatusCode.NOT_FOUND),
            (control_pb2.GetChannelRequest(name="Bad Name"), grpc.StatusCode.INVALID_ARGUMENT),
        ]:
            try:
                stub.GetChannel(request, timeout=10)
                raise AssertionError("expected %s" % code)
            except grpc.RpcError as e:
                assert e.code() == code, (e.code(), e.details())
        try:
            stub.CreateChannel(control_pb2.CreateChannelRequest(
                spec=control_pb2.ChannelSpec(name="py-00")), timeout=10)
            raise AssertionError("expected ALREADY_EXISTS")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.ALREADY_EXISTS, e.code()
            assert re.search("already exists", e.details()), e.details()

        channel.close()
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=5) == 0
        daemon = None
        print("python control test: OK")
    finally:
        if daemon is not None:
            daemon.kill()
            daemon.wait()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
