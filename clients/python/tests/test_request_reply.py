"""Request/reply both ways: a Python server for the C++ echo_client, the C++
echo_server for a Python client, and handler errors as exceptions."""

import subprocess
import threading

import pytest

import shmlane
from conftest import example, run, wait_for


def test_python_server_cpp_client(daemon, rt):
    name = daemon.channel("request-reply")
    with shmlane.Server(name, runtime_dir=rt) as server:
        t = threading.Thread(target=lambda: server.serve(lambda req: req, timeout=30))
        t.start()
        try:
            r = run([example("echo_client"), "--channel", name, "--runtime-dir", rt,
                     "--calls", "2000", "--size", "48"])
        finally:
            server.stop()
            t.join(10)
        assert not t.is_alive(), "serve() did not return after stop()"
        assert r.returncode == 0, r.stderr
        assert "2000 calls" in r.stdout, r.stdout


def test_cpp_server_python_client(daemon, rt):
    name = daemon.channel("request-reply")
    server = subprocess.Popen([example("echo_server"), "--channel", name, "--runtime-dir", rt],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: daemon.control.get_channel(name).consumer_attached, what="echo_server")
        with shmlane.Client(name, runtime_dir=rt) as client:
            for i in range(2000):
                request = b"ping %d" % i
                assert client.call(request, timeout=5) == request
            assert client.call(bytearray(1000), timeout=5) == bytes(1000)
            assert client.max_request_bytes > 1000
    finally:
        server.terminate()
        server.wait(10)


def test_handler_errors_reach_the_caller(daemon, rt):
    name = daemon.channel("request-reply")

    def handler(request):
        if request == b"missing":
            raise shmlane.NotFound("no such key: missing")
        if request == b"bug":
            raise ValueError("boom")
        if request == b"text":
            return "as text"
        return request.upper()

    with shmlane.Server(name, runtime_dir=rt) as server, \
            shmlane.Client(name, runtime_dir=rt) as client:
        t = threading.Thread(target=lambda: server.serve(handler, timeout=30))
        t.start()
        try:
            assert client.call(b"abc", timeout=5) == b"ABC"
            assert client.call(b"text", timeout=5) == b"as text"
            with pytest.raises(shmlane.NotFound, match="no such key"):
                client.call(b"missing", timeout=5)
            with pytest.raises(shmlane.Internal, match="ValueError: boom"):
                client.call(b"bug", timeout=5)
            assert client.call(b"still serving", timeout=5) == b"STILL SERVING"
        finally:
            server.stop()
            t.join(10)
        assert not t.is_alive()


def test_serve_once_and_timeout(daemon, rt):
    name = daemon.channel("request-reply")
    with shmlane.Server(name, runtime_dir=rt) as server, \
            shmlane.Client(name, runtime_dir=rt) as client:
        assert server.serve_once(lambda r: r, timeout=0.05) == 0
        results = []
        t = threading.Thread(target=lambda: results.append(client.call(b"x", timeout=5)))
        t.start()
        assert server.serve_once(lambda r: r + b"y", timeout=5) == 1
        t.join(10)
        assert results == [b"xy"]
