"""The example scripts (clients/python/examples) run as documented, against
the C++ examples and each other, and stay under 60 lines."""

import signal
import subprocess

import pytest

from conftest import PYTHON, example, python_example, run, wait_for


@pytest.mark.parametrize("name", ["producer.py", "consumer.py", "request_reply.py",
                                  "publisher.py", "subscriber.py"])
def test_examples_are_short(name):
    with open(python_example(name)) as f:
        assert len(f.readlines()) < 60


def test_producer_and_consumer_scripts(daemon, rt):
    name = daemon.channel()
    consumer = subprocess.Popen(
        [PYTHON, python_example("consumer.py"), "--channel", name, "--runtime-dir", rt,
         "--frames", "20002", "--idle-exit-s", "10"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: daemon.control.get_channel(name).consumer_attached, what="consumer.py")
        for batch in ("1", "100"):
            r = run([PYTHON, python_example("producer.py"), "--channel", name,
                     "--runtime-dir", rt, "--frames", "10000", "--batch", batch])
            assert r.returncode == 0, r.stderr
            assert "wrote 10001 frames" in r.stdout, r.stdout
        out, err = consumer.communicate(timeout=30)
    finally:
        if consumer.poll() is None:
            consumer.kill()
            consumer.wait()
    assert consumer.returncode == 0, err
    assert "consumer.py: 20002 frames, 0 gaps" in out, out


def test_consumer_script_reads_the_cpp_producer(daemon, rt):
    name = daemon.channel()
    consumer = subprocess.Popen(
        [PYTHON, python_example("consumer.py"), "--channel", name, "--runtime-dir", rt,
         "--idle-exit-s", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: daemon.control.get_channel(name).consumer_attached, what="consumer.py")
        r = run([example("stream_producer"), "--channel", name, "--runtime-dir", rt,
                 "--frames", "5000", "--name", "cxx"])
        assert r.returncode == 0, r.stderr
        out, err = consumer.communicate(timeout=30)
    finally:
        if consumer.poll() is None:
            consumer.kill()
            consumer.wait()
    assert "consumer.py: 5000 frames, 0 gaps" in out, (out, err)
    assert "+ producer 'cxx'" in out, out


def test_request_reply_script(daemon, rt):
    name = daemon.channel("request-reply")
    server = subprocess.Popen(
        [PYTHON, python_example("request_reply.py"), "serve", "--channel", name,
         "--runtime-dir", rt, "--seconds", "20"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: daemon.control.get_channel(name).consumer_attached, what="server")
        r = run([PYTHON, python_example("request_reply.py"), "call", "--channel", name,
                 "--runtime-dir", rt, "--calls", "500"])
        assert r.returncode == 0, r.stderr
        assert "500 calls" in r.stdout and "empty request refused" in r.stdout, r.stdout
        r = run([example("echo_client"), "--channel", name, "--runtime-dir", rt,
                 "--calls", "10"])
        assert r.returncode == 3, "a C++ client gets upper-cased replies: %s" % r.stderr
    finally:
        server.send_signal(signal.SIGINT)           # Ctrl-C ends a blocked serve()
        out, err = server.communicate(timeout=10)
    assert server.returncode == 0, (out, err)
    assert "KeyboardInterrupt" not in err, err


def test_publisher_and_subscriber_scripts(daemon, rt):
    name = daemon.channel("broadcast", ring_bytes=1 << 16)
    subs = [subprocess.Popen([PYTHON, python_example("subscriber.py"), "--channel", name,
                              "--runtime-dir", rt] + extra,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for extra in ([], ["--zero-copy"])]
    try:
        # A subscriber starts at the live tail when its attach completes, which
        # may be after the publisher already counts it: wait for "ready".
        for s in subs:
            assert s.stdout.readline().strip() == "subscriber.py: ready", s.stderr.read()
        subs.append(subprocess.Popen([example("broadcast_subscriber"), "--channel", name,
                                      "--runtime-dir", rt, "--history", "100000"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        r = run([PYTHON, python_example("publisher.py"), "--channel", name, "--runtime-dir", rt,
                 "--frames", "20000", "--batch", "32", "--subscribers", "3"])
        assert r.returncode == 0, r.stderr
        assert "wrote 20000 frames to 3 subscribers" in r.stdout, r.stdout
        outs = [s.communicate(timeout=30) for s in subs]
    finally:
        for s in subs:
            if s.poll() is None:
                s.kill()
                s.wait()
    for s, (out, err) in zip(subs, outs):
        assert s.returncode == 0, (out, err)
    for out, _ in outs[:2]:
        assert "subscriber.py: 20000 frames, 0 missed, 0 out of order" in out, out
    assert "read 20000 frames, missed 0, out of order 0" in outs[2][0], outs[2]


def test_subscriber_script_reads_the_cpp_publisher(daemon, rt):
    name = daemon.channel("broadcast")
    sub = subprocess.Popen([PYTHON, python_example("subscriber.py"), "--channel", name,
                            "--runtime-dir", rt, "--zero-copy"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        r = run([example("broadcast_publisher"), "--channel", name, "--runtime-dir", rt,
                 "--frames", "5000"])
        assert r.returncode == 0, r.stderr
        out, err = sub.communicate(timeout=30)
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.wait()
    assert sub.returncode == 0, err
    assert "subscriber.py: 5000 frames, 0 missed, 0 out of order" in out, (out, err)
