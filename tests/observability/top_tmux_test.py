#!/usr/bin/env python3
"""`shmlanectl top` used as a person would: in a terminal (tmux), with traffic.

Starts a real shmlaned with two channels: `top-busy`, where the shipped
stream_producer streams into stream_consumer for the whole test, and
`top-idle.with-a-name-longer-than-its-column`, with a producer attached
that writes nothing. Runs `shmlanectl top` in a detached tmux pane of
120x30, captures the pane and checks that both channels have a row and the
busy one shows a non-zero frames/s; resizes the pane to 80x24 and checks
that every line fits and every cell is a whole number with its unit (only
the long name is shortened, marked with ~); presses `n` and checks the rows
are sorted by name; presses `q` and checks top exits. Also checks
`top --once --json`. Prints the captures (the report shows one under load).

Exit status 0 on success, 1 on failure, 77 (ctest SKIP_RETURN_CODE) without
tmux.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

BUSY = "top-busy"
IDLE = "top-idle.with-a-name-longer-than-its-column"
# A cell of each column after the name, as top prints them.
RATE = r"(-|\d+(\.\d)?[kMGTP]?)"
CELLS = [
    ("FRAMES/S", RATE),
    ("MB/S", r"(-|\d+\.\d|\d+(\.\d)?[kMGTP]?)"),
    ("LAG", r"(-|\d+(\.\d)?[KMGT]?/\d+(\.\d)?[KMGT]?)"),
    ("P99", r"(-|\d+(\.\d)?(ns|us|ms|s|m))"),
    ("DROP/S", RATE),
    ("BP/S", RATE),
    ("WAKE/F", r"(-|\d+\.\d{3}|\d+(\.\d)?[kMGTP]?)"),
    ("PROD", r"\d+(\.\d)?[kM]?"),
]


class Failure(Exception):
    pass


class Test:
    def __init__(self, args):
        self.args = args
        self.tmp = tempfile.mkdtemp(prefix="shmlane-top-")
        os.chmod(self.tmp, 0o755)
        self.rt = os.path.join(self.tmp, "rt")
        self.tmux_socket = os.path.join(self.tmp, "tmux.sock")
        self.children = []
        self.failures = []

    def fail(self, msg):
        self.failures.append(msg)
        print(f"FAIL: {msg}", flush=True)

    def spawn(self, name, argv, nice=False):
        out = open(os.path.join(self.tmp, name + ".log"), "w")
        # The busy pair runs niced: it only has to keep a rate non-zero.
        p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                             preexec_fn=(lambda: os.nice(19)) if nice else None)
        p.log_path = out.name
        self.children.append(p)
        return p

    def output(self, p):
        with open(p.log_path) as f:
            return f.read()

    def wait_for(self, what, fn, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            v = fn()
            if v:
                return v
            time.sleep(0.1)
        raise Failure(f"timed out after {timeout}s waiting for {what}")

    def ctl(self, *args, check=True):
        r = subprocess.run([self.args.shmlanectl, "--runtime-dir", self.rt, *args],
                           capture_output=True, text=True, timeout=20)
        if check and r.returncode != 0:
            raise Failure(f"shmlanectl {' '.join(args)}: exit {r.returncode}: {r.stderr}")
        return r

    def tmux(self, *args, check=True):
        r = subprocess.run([self.args.tmux, "-S", self.tmux_socket, "-f", "/dev/null", *args],
                           capture_output=True, text=True, timeout=10)
        if check and r.returncode != 0:
            raise Failure(f"tmux {' '.join(args)}: {r.stderr}")
        return r

    def capture(self):
        # -J joins lines the terminal wrapped: a line wider than the pane
        # shows up as longer than the pane instead of as two lines.
        text = self.tmux("capture-pane", "-p", "-J", "-t", "top").stdout
        return [line.rstrip() for line in text.splitlines()]

    def rows(self, lines):
        """The table rows under the CHANNEL header: {name: [cells]}."""
        out = {}
        try:
            start = next(i for i, l in enumerate(lines) if l.startswith("CHANNEL"))
        except StopIteration:
            return None
        for line in lines[start + 1:]:
            if not line.strip():
                break
            parts = line.split()
            out[parts[0]] = parts[1:]
        return out

    def setup(self):
        self.spawn("shmlaned", [self.args.shmlaned, "--runtime-dir", self.rt,
                                "--metrics-listen", "none"])
        self.wait_for("shmlaned ready",
                      lambda: "state:" in self.output(self.children[0]), 15)
        self.ctl("channels", "create", BUSY, "--ring-bytes", "64KiB")
        self.ctl("channels", "create", IDLE)
        self.spawn("consumer", [self.args.stream_consumer, "--channel", BUSY,
                                "--runtime-dir", self.rt], nice=True)
        self.wait_for("the consumer to attach", lambda: '"consumer_attached": true' in
                      self.ctl("--json", "channels", "get", BUSY).stdout, 10)
        self.spawn("producer", [self.args.stream_producer, "--channel", BUSY, "--runtime-dir",
                                self.rt, "--frames", "1000000000000", "--name", "busy"], nice=True)
        idle = self.spawn("idle", [self.args.peer, "produce", "--dir", self.rt, "--channel", IDLE,
                                   "--frames", "0", "--hold"])
        self.wait_for("the idle producer", lambda: "WROTE" in self.output(idle), 10)

    def check_table(self, lines, width, what):
        rows = self.rows(lines)
        if rows is None:
            self.fail(f"{what}: no CHANNEL header in:\n" + "\n".join(lines))
            return None
        for line in lines:
            if len(line) > width:
                self.fail(f"{what}: line of {len(line)} columns in a {width}-column pane: {line!r}")
        header = next(l for l in lines if l.startswith("CHANNEL")).split()
        if header != ["CHANNEL"] + [c[0] for c in CELLS]:
            self.fail(f"{what}: header is {header}")
        for name, cells in rows.items():
            if len(cells) != len(CELLS):
                self.fail(f"{what}: row {name!r} has {len(cells)} cells: {cells}")
                continue
            for (col, pattern), cell in zip(CELLS, cells):
                if not re.fullmatch(pattern, cell):
                    self.fail(f"{what}: {name} {col} = {cell!r} is not a whole value")
        return rows

    def frames_per_second(self, cell):
        m = re.fullmatch(r"(\d+(?:\.\d)?)([kMGTP]?)", cell)
        if not m:
            return 0.0
        return float(m.group(1)) * {"": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
                                    "P": 1e15}[m.group(2)]

    def run_view(self):
        self.tmux("new-session", "-d", "-s", "top", "-x", "120", "-y", "30",
                  f"{self.args.shmlanectl} --runtime-dir {self.rt} top --interval 1s")
        # Two refreshes: the first has no rates yet.
        def busy_row():
            rows = self.rows(self.capture())
            return rows if rows and BUSY in rows and self.frames_per_second(rows[BUSY][0]) > 0 \
                else None
        try:
            self.wait_for("a non-zero frames/s for top-busy", busy_row, 10)
        except Failure as e:
            self.fail(f"{e}:\n" + "\n".join(self.capture()))
        wide = self.capture()
        print("--- shmlanectl top, 120x30 pane, under load:\n" + "\n".join(wide).rstrip())
        rows = self.check_table(wide, 120, "120 columns")
        if rows is not None:
            if IDLE not in rows:
                self.fail(f"120 columns: no row for {IDLE}: {list(rows)}")
            if BUSY not in rows or self.frames_per_second(rows[BUSY][0]) <= 0:
                self.fail(f"120 columns: top-busy shows no frames/s: {rows.get(BUSY)}")
            elif rows[BUSY][7] != "1":
                self.fail(f"top-busy should show 1 producer, shows {rows[BUSY][7]}")

        self.tmux("resize-window", "-t", "top", "-x", "80", "-y", "24")
        time.sleep(2.2)  # two refreshes at the new size
        narrow = self.capture()
        print("--- after resizing the pane to 80x24:\n" + "\n".join(narrow).rstrip())
        rows = self.check_table(narrow, 80, "80 columns")
        if rows is not None:
            shortened = [n for n in rows if n.endswith("~")]
            if BUSY not in rows or len(shortened) != 1 or not IDLE.startswith(shortened[0][:-1]):
                self.fail(f"80 columns: expected {BUSY} and {IDLE} shortened with ~: {list(rows)}")
            if BUSY in rows and self.frames_per_second(rows[BUSY][0]) <= 0:
                self.fail(f"80 columns: top-busy shows no frames/s: {rows[BUSY]}")

        self.tmux("send-keys", "-t", "top", "n")
        time.sleep(0.5)
        lines = self.capture()
        rows = self.rows(lines)
        if not any("sort: name" in l for l in lines) or rows is None or \
                list(rows) != sorted(rows):
            self.fail("after `n` the rows should be sorted by name:\n" + "\n".join(lines))
        self.tmux("send-keys", "-t", "top", "q")
        try:
            self.wait_for("top to quit on q", lambda: self.tmux(
                "has-session", "-t", "top", check=False).returncode != 0, 5)
        except Failure as e:
            self.fail(str(e))

    def run_json(self):
        r = self.ctl("--json", "top", "--once", "--interval", "500ms")
        doc = json.loads(r.stdout)
        by_name = {c["name"]: c for c in doc["channels"]}
        if set(by_name) != {BUSY, IDLE}:
            self.fail(f"top --once --json lists {list(by_name)}")
            return
        busy = by_name[BUSY]
        if not busy["frames_per_second"] or busy["frames_per_second"] <= 0:
            self.fail(f"top --once --json: top-busy frames_per_second {busy['frames_per_second']}")
        if busy["producers"] != 1 or by_name[IDLE]["producers"] != 1:
            self.fail("top --once --json: each channel has one producer")
        if doc["channels"][0]["name"] != BUSY:
            self.fail("top --once --json sorts by frames/s, highest first")
        print(f"--- top --once --json: {BUSY} {busy['frames_per_second']:.0f} frames/s")

    def run(self):
        try:
            self.setup()
            self.run_json()
            self.run_view()
        except Failure as e:
            self.fail(str(e))
        finally:
            self.tmux("kill-server", check=False)
            for p in reversed(self.children):
                if p.poll() is None:
                    p.kill()
                    p.wait()
        if self.failures:
            print(f"{len(self.failures)} failure(s); logs in {self.tmp}")
            return 1
        shutil.rmtree(self.tmp, ignore_errors=True)
        print("PASS")
        return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for flag in ("shmlaned", "shmlanectl", "stream-producer", "stream-consumer", "peer"):
        ap.add_argument(f"--{flag}", required=True)
    ap.add_argument("--tmux", default=shutil.which("tmux") or "/usr/bin/tmux")
    args = ap.parse_args()
    if not os.access(args.tmux, os.X_OK):
        print(f"SKIP: no tmux at {args.tmux}; install Debian's `tmux` package "
              f"(scripts/install-deps.sh does) to run this test")
        return 77
    return Test(args).run()


if __name__ == "__main__":
    sys.exit(main())
