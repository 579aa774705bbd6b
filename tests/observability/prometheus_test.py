#!/usr/bin/env python3
"""shmlane's dashboards, recording rules and alerts against a real Prometheus.

Starts a real shmlaned (--per-lane-metrics), real producer and consumer
processes (the shipped stream_producer/stream_consumer examples and the
client test peer) and Debian's prometheus on a free loopback port with a
temporary config (scrape and evaluation every second) and data directory.
It drives two channels:

  obs-stream  64 KiB rings, block policy: the README tour (two producers of
              300000 frames into stream_consumer, which backpressures them),
              a producer that stays attached, one killed with SIGKILL (a
              peer death), and an attach refused by a quota;
  obs-drop    4 KiB ring, drop policy, a consumer that never reads: one
              producer finds the ring full (backpressure) and drops a frame.

Then, through Prometheus's HTTP API, it checks that every PromQL expression of
every Grafana panel (template variables substituted, each channel in turn)
parses and returns data, every recording rule produces a series, and the
alerts for the induced conditions reach `firing`. The shipped rules are
loaded unchanged; a rule-file overlay, generated from the rules Prometheus
loaded, repeats every alert with `for: 0s` (the test threshold) and the
label test_overlay="true". Finally `promtool check rules`, `promtool check
config` and `promtool test rules` must pass, and the dashboards must follow
their conventions (fixed uid, datasource/job/instance/channel variables, a
unit and a description on every panel, runbook links that exist).

Exit status 0 on success, 1 on failure, 77 (ctest SKIP_RETURN_CODE) when the
prometheus binary is missing.
"""

import argparse
import glob
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

DEADLINE_S = 85  # the whole test; ctest's TIMEOUT is above this

INDUCED_ALERTS = [
    "ShmlanePeerDied",
    "ShmlaneSustainedBackpressure",
    "ShmlaneFramesDropped",
    "ShmlaneQuotaRejections",
]
NO_FOR_ALERTS = ["ShmlanePeerDied", "ShmlaneQuotaRejections"]  # fire as shipped
NEVER_ALERTS = ["ShmlaneDaemonDown", "ShmlaneLaneBroken", "ShmlaneAttachSendOverflows"]
CHANNELS = ["obs-stream", "obs-drop"]


class Failure(Exception):
    pass


class Test:
    def __init__(self, args):
        self.args = args
        self.start = time.monotonic()
        self.tmp = tempfile.mkdtemp(prefix="shmlane-obs-")
        os.chmod(self.tmp, 0o755)
        self.rt = os.path.join(self.tmp, "rt")
        self.children = []  # Popen, killed at the end
        self.failures = []
        self.prom_url = None

    # ---- helpers ----------------------------------------------------------
    def left(self):
        return DEADLINE_S - (time.monotonic() - self.start)

    def log(self, msg):
        print(f"[{time.monotonic() - self.start:5.1f}s] {msg}", flush=True)

    def fail(self, msg):
        self.failures.append(msg)
        print(f"FAIL: {msg}", flush=True)

    def spawn(self, name, argv):
        out = open(os.path.join(self.tmp, name + ".log"), "w")
        p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        p.log_path = out.name
        self.children.append(p)
        return p

    def output(self, p):
        with open(p.log_path) as f:
            return f.read()

    def wait_for(self, what, fn, timeout):
        deadline = time.monotonic() + min(timeout, max(self.left(), 1))
        while time.monotonic() < deadline:
            value = fn()
            if value:
                return value
            time.sleep(0.1)
        raise Failure(f"timed out after {timeout}s waiting for {what}")

    def wait_line(self, p, word, timeout=10):
        def seen():
            if p.poll() is not None and word not in self.output(p):
                raise Failure(f"{p.args[0]} exited {p.returncode} before '{word}': {self.output(p)}")
            return word in self.output(p)
        self.wait_for(f"'{word}' from {' '.join(p.args[:2])}", seen, timeout)

    def ctl(self, *args, check=True):
        r = subprocess.run([self.args.shmlanectl, "--runtime-dir", self.rt, *args],
                           capture_output=True, text=True, timeout=20)
        if check and r.returncode != 0:
            raise Failure(f"shmlanectl {' '.join(args)}: exit {r.returncode}: {r.stderr}")
        return r

    def peer(self, name, *args):
        return self.spawn(name, [self.args.peer, args[0], "--dir", self.rt, *args[1:]])

    def http(self, path, data=None, timeout=5):
        req = urllib.request.Request(self.prom_url + path, data=data,
                                     method="POST" if data is not None else "GET")
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.read().decode()

    def api(self, path, **params):
        query = urllib.parse.urlencode(params, doseq=True)
        try:
            body = self.http(f"/api/v1/{path}" + (f"?{query}" if query else ""))
        except urllib.error.HTTPError as e:
            return {"status": "error", "error": e.read().decode()}
        return json.loads(body)

    # ---- setup ------------------------------------------------------------
    def start_daemon(self):
        self.daemon = self.spawn("shmlaned", [self.args.shmlaned, "--runtime-dir", self.rt,
                                              "--metrics-listen", "127.0.0.1:0",
                                              "--per-lane-metrics"])
        text = self.wait_for("shmlaned ready", lambda: (lambda t: t if "state:" in t else None)(
            self.output(self.daemon)), 15)
        m = re.search(r"metrics:\s+http://127\.0\.0\.1:(\d+)/metrics", text)
        if not m:
            raise Failure(f"no metrics port in: {text}")
        self.metrics_port = int(m.group(1))
        self.log(f"shmlaned ready, metrics on 127.0.0.1:{self.metrics_port}")

    def start_prometheus(self):
        # Prometheus cannot listen on port 0: take a free port, then free it.
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.prom_url = f"http://127.0.0.1:{port}"
        rules = os.path.join(self.args.repo, "dashboards/prometheus/rules")
        self.overlay = os.path.join(self.tmp, "overlay.rules.yml")
        with open(self.overlay, "w") as f:
            json.dump({"groups": []}, f)
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": sorted(glob.glob(os.path.join(rules, "*.yml"))) + [self.overlay],
            "scrape_configs": [{"job_name": "shmlane", "static_configs": [
                {"targets": [f"127.0.0.1:{self.metrics_port}"]}]}],
        }
        cfg_path = os.path.join(self.tmp, "prometheus.yml")
        with open(cfg_path, "w") as f:
            json.dump(config, f, indent=2)  # JSON is YAML
        self.prometheus = self.spawn("prometheus", [
            self.args.prometheus, f"--config.file={cfg_path}",
            f"--storage.tsdb.path={os.path.join(self.tmp, 'data')}",
            f"--web.listen-address=127.0.0.1:{port}", "--web.enable-lifecycle",
            "--log.level=warn"])

        def ready():
            if self.prometheus.poll() is not None:
                raise Failure(f"prometheus exited: {self.output(self.prometheus)}")
            try:
                return self.http("/-/ready", timeout=1) is not None
            except (urllib.error.URLError, ConnectionError, socket.timeout):
                return False
        self.wait_for("prometheus ready", ready, 20)
        self.log(f"prometheus ready on {self.prom_url}")

    def query(self, expr):
        r = self.api("query", query=expr)
        if r.get("status") != "success":
            raise Failure(f"query {expr!r}: {r.get('error')}")
        return r["data"]["result"]

    def write_overlay(self):
        """Every loaded alert again, with the test threshold for: 0s."""
        r = self.api("rules", type="alert")
        rules = [rule for g in r["data"]["groups"] for rule in g["rules"]]
        names = {rule["name"] for rule in rules}
        for want in INDUCED_ALERTS + NEVER_ALERTS:
            if want not in names:
                raise Failure(f"alert {want} is not among the loaded rules: {sorted(names)}")
        overlay = {"groups": [{"name": "shmlane.alerts.test-overlay", "rules": [
            {"alert": rule["name"], "expr": rule["query"], "for": "0s",
             "labels": {**rule.get("labels", {}), "test_overlay": "true"},
             "annotations": rule.get("annotations", {})} for rule in rules]}]}
        with open(self.overlay, "w") as f:
            json.dump(overlay, f, indent=2)
        self.http("/-/reload", data=b"")
        self.wait_for("the overlay to load", lambda: any(
            g["name"] == "shmlane.alerts.test-overlay"
            for g in self.api("rules", type="alert")["data"]["groups"]), 10)
        self.log(f"overlay loaded: {len(rules)} alerts with for: 0s")

    # ---- traffic ----------------------------------------------------------
    def drive(self):
        self.ctl("channels", "create", "obs-stream", "--ring-bytes", "64KiB")
        self.ctl("channels", "create", "obs-drop", "--ring-bytes", "4KiB",
                 "--backpressure", "drop")
        # Control calls whose duration series then exist before the scrapes
        # (they are created at the first call), so that the calls below
        # show up in rate().
        self.ctl("channels", "list")
        self.ctl("stats", "obs-stream")
        # Let Prometheus see every counter at 0 before anything happens, so
        # increase() and rate() see the change.
        self.wait_for("two scrapes of both channels", lambda: len(self.query(
            'count_over_time(shmlane_frames_total{direction="sent"}[1m]) >= 2')) == 2, 15)
        self.log("both channels scraped twice")

        # obs-stream: the README tour, with backpressure from the 64 KiB rings.
        consumer = self.spawn("consumer", [self.args.stream_consumer, "--channel", "obs-stream",
                                           "--runtime-dir", self.rt])
        self.wait_for("the consumer to attach", lambda: '"consumer_attached": true' in
                      self.ctl("--json", "channels", "get", "obs-stream").stdout, 10)
        producers = [self.spawn(f"producer{i}", [
            self.args.stream_producer, "--channel", "obs-stream", "--runtime-dir", self.rt,
            "--name", f"p{i}", "--frames", "300000"]) for i in (1, 2)]
        for p in producers:
            try:
                code = p.wait(timeout=max(self.left() - 40, 5))
            except subprocess.TimeoutExpired:
                raise Failure("stream_producer did not finish")
            if code != 0:
                raise Failure(f"stream_producer exited {code}: {self.output(p)}")
        self.log("tour producers done")
        # A producer that stays attached, for the per-lane series. It writes
        # long enough (seconds) for Prometheus to see its lane's counters
        # move, then holds its lane open.
        # (100 M frames: 2-5 s on these machines; the data plane got faster and
        # 20 M could finish before the lane's first scrape.)
        stays = self.peer("peer-stays", "produce", "--channel", "obs-stream", "--frames",
                          "100000000", "--size", "16", "--index", "7", "--hold")
        self.wait_line(stays, "WROTE", timeout=60)
        self.log("the staying producer wrote 100000000 frames")
        # And one that dies.
        victim = self.peer("peer-victim", "produce", "--channel", "obs-stream", "--frames", "100",
                           "--index", "9", "--hold")
        self.wait_line(victim, "WROTE")
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=5)
        self.log("killed a producer with SIGKILL")

        # obs-drop: a consumer that never reads; the producer fills the 4 KiB
        # ring, finds it full and the drop policy drops a frame.
        stall = self.peer("peer-stall", "stall", "--channel", "obs-drop")
        self.wait_line(stall, "ATTACHED")
        dropper = self.peer("peer-dropper", "produce", "--channel", "obs-drop", "--frames", "1000",
                            "--report-full")
        code = dropper.wait(timeout=10)
        if code != 4 or "dropped" not in self.output(dropper):
            raise Failure(f"the producer on obs-drop should stop at a dropped frame (exit 4), "
                          f"got {code}: {self.output(dropper)}")
        self.log("obs-drop: ring full, one frame dropped")

        # A quota rejection: cap our uid's attachments at what it holds now.
        uid = str(os.getuid())
        usage = json.loads(self.ctl("--json", "quota", "get", "--uid", uid).stdout)
        held = int(usage.get("usage", {}).get("attachments", 0))
        self.ctl("quota", "set", "--uid", uid, "--max-attachments", str(max(held, 1)))
        refused = self.peer("peer-refused", "attach", "--channel", "obs-stream", "--role",
                            "producer")
        code = refused.wait(timeout=10)
        if code != 8:  # RESOURCE_EXHAUSTED
            raise Failure(f"an attach over quota should fail with RESOURCE_EXHAUSTED (8), got "
                          f"{code}: {self.output(refused)}")
        self.ctl("quota", "set", "--uid", uid, "--reset")
        self.log(f"attach refused over quota (max-attachments {held})")
        # A control error for the error panels, and the calls made before the
        # scrapes again.
        if self.ctl("channels", "get", "no-such-channel", check=False).returncode != 1:
            raise Failure("GetChannel of a missing channel should fail")
        self.ctl("channels", "list")
        self.ctl("stats", "obs-stream")
        self.live = [consumer, stays, stall]

    # ---- checks -----------------------------------------------------------
    def check_alerts(self):
        def states():
            out = {}
            for a in self.api("alerts")["data"]["alerts"]:
                key = (a["labels"]["alertname"], a["labels"].get("test_overlay") == "true")
                if out.get(key) != "firing":
                    out[key] = a["state"]
            return out

        def all_firing():
            # The overlay (for: 0s) fires; the shipped rules are at least
            # pending, and fire where they have no `for`. Rule groups are
            # evaluated at their own offsets, so wait for all of them.
            s = states()
            return s if (all(s.get((n, True)) == "firing" for n in INDUCED_ALERTS) and
                         all(s.get((n, False)) in ("pending", "firing") for n in INDUCED_ALERTS)
                         and all(s.get((n, False)) == "firing" for n in NO_FOR_ALERTS)) else None
        try:
            s = self.wait_for("the induced alerts to fire", all_firing, 30)
        except Failure as e:
            self.fail(f"{e}: {states()}")
            return
        for name in INDUCED_ALERTS:
            self.log(f"alert {name}: overlay firing, shipped rule {s.get((name, False), 'inactive')}")
        # Alerts without `for` fire as shipped; those with one are at least pending.
        for name in INDUCED_ALERTS:
            if s.get((name, False)) not in ("pending", "firing"):
                self.fail(f"the shipped {name} should be pending or firing, is "
                          f"{s.get((name, False), 'inactive')}")
        for name in NO_FOR_ALERTS:
            if s.get((name, False)) != "firing":
                self.fail(f"the shipped {name} (no `for`) should be firing")
        for name in NEVER_ALERTS:
            if (name, True) in s or (name, False) in s:
                self.fail(f"{name} should not be active: {s}")

    def check_rules(self):
        groups = self.api("rules")["data"]["groups"]
        records = 0
        for g in groups:
            for rule in g["rules"]:
                if rule.get("health") != "ok":
                    self.fail(f"rule {rule['name']} in {g['name']}: health {rule.get('health')}: "
                              f"{rule.get('lastError')}")
                if rule["type"] == "recording":
                    records += 1
                    if not self.query(f'{{__name__="{rule["name"]}"}}'):
                        self.fail(f"recording rule {rule['name']} has no series")
        if records < 20:
            self.fail(f"only {records} recording rules loaded")
        self.log(f"{records} recording rules, each with a series")

    def label_values(self, query):
        m = re.fullmatch(r"label_values\((?:(.*),\s*)?(\w+)\)", query.strip())
        if not m:
            raise Failure(f"not a label_values() query: {query}")
        params = {"match[]": m.group(1)} if m.group(1) else {}
        r = self.api(f"label/{m.group(2)}/values", **params)
        return r["data"] if r.get("status") == "success" else []

    def check_dashboards(self):
        grafana = os.path.join(self.args.repo, "dashboards/grafana")
        runbooks = os.path.join(self.args.repo, "docs/runbooks")
        uids = set()
        exprs = 0
        for path in sorted(glob.glob(os.path.join(grafana, "*.json"))):
            name = os.path.basename(path)
            with open(path) as f:
                dash = json.load(f)
            if "__inputs" in dash or "${DS_" in json.dumps(dash):
                self.fail(f"{name}: uses ${{DS_...}} inputs (breaks file provisioning)")
            if not dash.get("uid") or dash["uid"] in uids:
                self.fail(f"{name}: needs a fixed, unique uid")
            uids.add(dash.get("uid"))
            variables = {v["name"]: v for v in dash["templating"]["list"]}
            for want in ("datasource", "job", "instance", "channel"):
                if want not in variables:
                    self.fail(f"{name}: no `{want}` template variable")
            if variables.get("datasource", {}).get("type") != "datasource":
                self.fail(f"{name}: `datasource` must be a datasource variable")
            # The variables' own queries, in order, against the real server.
            values_all = {}
            for var in ("job", "instance", "channel"):
                q = variables[var]["query"]["query"]
                if "job" in values_all:
                    q = q.replace("$job", values_all["job"][0])
                if "instance" in values_all:
                    q = q.replace("$instance", "(" + "|".join(values_all["instance"]) + ")")
                got = self.label_values(q)
                if not got:
                    self.fail(f"{name}: variable {var} ({q}) has no values")
                    break
                values_all[var] = got
            if len(values_all) < 3:
                continue
            if sorted(values_all["channel"]) != sorted(CHANNELS):
                self.fail(f"{name}: channel variable lists {values_all['channel']}")
            for panel in dash["panels"]:
                if panel["type"] == "row":
                    continue
                title = f"{name} / {panel['title']}"
                if not panel.get("description"):
                    self.fail(f"{title}: no description")
                if not panel.get("fieldConfig", {}).get("defaults", {}).get("unit"):
                    self.fail(f"{title}: no unit")
                if panel.get("datasource", {}).get("uid") != "${datasource}":
                    self.fail(f"{title}: datasource is not ${{datasource}}")
                for link in panel.get("links", []):
                    m = re.search(r"docs/runbooks/(\w+\.md)$", link["url"])
                    if m and not os.path.exists(os.path.join(runbooks, m.group(1))):
                        self.fail(f"{title}: runbook {m.group(1)} does not exist")
                for t in panel["targets"]:
                    exprs += 1
                    self.check_expr(title, t["expr"], values_all, variables)
        if len(uids) < 2:
            self.fail("expected an overview and a channel dashboard")
        self.log(f"{exprs} panel expressions checked against Prometheus")

    def check_expr(self, title, expr, values_all, variables):
        base = expr
        for k, v in {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "5m"}.items():
            base = base.replace(k, v)
        base = base.replace("$job", values_all["job"][0])
        # Multi-value variables as Grafana sends them to Prometheus: (a|b).
        insts = values_all["instance"]
        base = base.replace("$instance", "(" + "|".join(insts) + ")"
                            if variables["instance"].get("multi") else insts[0])
        substitutions = ([("(" + "|".join(values_all["channel"]) + ")", "all channels")]
                         if variables["channel"].get("multi") else
                         [(c, c) for c in values_all["channel"]])
        finite = False
        for value, label in substitutions:
            q = base.replace("$channel", value)
            if "$" in q:
                self.fail(f"{title}: unsubstituted variable in {q}")
                return
            try:
                result = self.query(q)
            except Failure as e:
                self.fail(f"{title}: {e}")
                return
            if not result:
                self.fail(f"{title} ({label}): no data for {q}")
                continue
            finite = finite or any(math.isfinite(float(r["value"][1])) for r in result)
        if not finite:
            self.fail(f"{title}: only NaN/Inf for {base}")

    def check_alert_files(self):
        runbooks = os.path.join(self.args.repo, "docs/runbooks")
        rules = self.api("rules", type="alert")["data"]["groups"]
        for g in rules:
            if g["name"].endswith("test-overlay"):
                continue
            for rule in g["rules"]:
                ann = rule.get("annotations", {})
                for key in ("summary", "description", "runbook_url"):
                    if not ann.get(key):
                        self.fail(f"alert {rule['name']}: no {key}")
                m = re.search(r"docs/runbooks/(\w+)\.md$", ann.get("runbook_url", ""))
                if not m or m.group(1) != rule["name"]:
                    self.fail(f"alert {rule['name']}: runbook_url should end docs/runbooks/"
                              f"{rule['name']}.md")
                elif not os.path.exists(os.path.join(runbooks, m.group(1) + ".md")):
                    self.fail(f"alert {rule['name']}: {m.group(1)}.md missing in docs/runbooks")

    def promtool(self):
        d = os.path.join(self.args.repo, "dashboards/prometheus")
        for argv in (["check", "rules", *sorted(glob.glob(f"{d}/rules/*.yml"))],
                     ["check", "config", f"{d}/prometheus.yml"],
                     ["test", "rules", *sorted(glob.glob(f"{d}/tests/*.test.yml"))]):
            r = subprocess.run([self.args.promtool, *argv], capture_output=True, text=True,
                               timeout=30, cwd=d)
            if r.returncode != 0:
                self.fail(f"promtool {' '.join(argv[:2])}: exit {r.returncode}\n{r.stdout}{r.stderr}")
            else:
                self.log(f"promtool {argv[0]} {argv[1]}: ok")

    def run(self):
        try:
            self.start_daemon()
            self.start_prometheus()
            self.write_overlay()
            self.drive()
            self.check_alerts()
            # Two more evaluations so every recording rule has seen the traffic.
            time.sleep(2)
            self.check_rules()
            self.check_dashboards()
            self.check_alert_files()
            self.promtool()
        except Failure as e:
            self.fail(str(e))
        finally:
            for p in reversed(self.children):
                if p.poll() is None:
                    p.kill()
                    p.wait()
        if self.failures:
            print(f"\n{len(self.failures)} failure(s); logs in {self.tmp}")
            for p in self.children:
                print(f"--- {p.log_path}\n{self.output(p)[-1500:]}")
            return 1
        if not os.environ.get("SHMLANE_KEEP_TEST_DIRS"):
            shutil.rmtree(self.tmp, ignore_errors=True)
        self.log("PASS")
        return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for flag in ("shmlaned", "shmlanectl", "stream-producer", "stream-consumer", "peer", "repo"):
        ap.add_argument(f"--{flag}", required=True)
    ap.add_argument("--prometheus", default=shutil.which("prometheus") or "/usr/bin/prometheus")
    ap.add_argument("--promtool", default=shutil.which("promtool") or "/usr/bin/promtool")
    args = ap.parse_args()
    if not os.access(args.prometheus, os.X_OK):
        print(f"SKIP: no prometheus binary at {args.prometheus}; install Debian's `prometheus` "
              f"package (scripts/install-deps.sh does) to run this test")
        return 77
    if not os.access(args.promtool, os.X_OK):
        print(f"FAIL: prometheus is installed but promtool is not at {args.promtool}")
        return 1
    return Test(args).run()


if __name__ == "__main__":
    sys.exit(main())
