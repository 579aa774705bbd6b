"""Fixtures of the shmlane Python tests: a real shmlaned in a temporary
runtime directory (one per test module), a control client, fresh channels,
the C++ examples, and a time bound on every test.

Environment (set by ctest, see clients/python/CMakeLists.txt): SHMLANED (the
daemon binary), SHMLANE_EXAMPLES_DIR (stream_producer, stream_consumer,
echo_server, echo_client), SHMLANE_PYTHON_EXAMPLES, PYTHONPATH (the build
tree's package).
"""

import faulthandler
import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

import shmlane
from shmlane import control

#: Every test ends within this many seconds, or the run stops with every
#: thread's stack on stderr (faulthandler), instead of hanging until ctest's limit.
TEST_TIMEOUT_S = 60


def _need_env(name):
    value = os.environ.get(name)
    if not value:
        pytest.fail("%s is not set: run these tests with ctest (-L python)" % name)
    return value


@pytest.fixture(autouse=True)
def time_bound():
    faulthandler.dump_traceback_later(TEST_TIMEOUT_S, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


class Daemon:
    """A shmlaned on a temporary runtime directory."""

    def __init__(self):
        self.base = tempfile.mkdtemp(prefix="shmlane-pytest-")
        os.chmod(self.base, 0o755)  # other uids reach attach.sock through it
        self.runtime_dir = os.path.join(self.base, "rt")
        self.stdout_path = os.path.join(self.base, "stdout")
        self.stderr_path = os.path.join(self.base, "stderr")
        with open(self.stdout_path, "w") as out, open(self.stderr_path, "w") as err:
            self.proc = subprocess.Popen(
                [_need_env("SHMLANED"), "--runtime-dir", self.runtime_dir,
                 "--metrics-listen", "none"], stdout=out, stderr=err)
        deadline = time.monotonic() + 15
        while "ready" not in open(self.stdout_path).read():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("shmlaned did not start: " + open(self.stderr_path).read())
            time.sleep(0.02)
        self.control = control.connect(runtime_dir=self.runtime_dir)
        self._names = itertools.count()

    def channel(self, pattern="stream", **spec):
        """A new channel with a unique name."""
        name = "py-%s-%d" % (pattern.replace("_", "-"), next(self._names))
        self.control.create_channel(name, pattern=pattern, **spec)
        return name

    def stop(self):
        if getattr(self, "control", None) is not None:
            self.control.close()
            self.control = None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="module")
def daemon():
    d = Daemon()
    yield d
    d.stop()


@pytest.fixture
def rt(daemon):
    """The daemon's runtime directory (what every attach is given)."""
    return daemon.runtime_dir


def example(name):
    """Path of a C++ example binary."""
    path = os.path.join(_need_env("SHMLANE_EXAMPLES_DIR"), name)
    if not os.access(path, os.X_OK):
        pytest.fail("%s is not built (cmake --build --target %s)" % (path, name))
    return path


def python_example(name):
    return os.path.join(_need_env("SHMLANE_PYTHON_EXAMPLES"), name)


def run(args, timeout=30, **kw):
    """Runs a process to completion within `timeout`; returns CompletedProcess."""
    return subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=timeout, **kw)


def wait_for(predicate, timeout=10.0, what="condition"):
    """Polls `predicate` (a test helper only) until true or fails the test."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail("timed out after %.1f s waiting for %s" % (timeout, what))
        time.sleep(0.01)


PYTHON = sys.executable
