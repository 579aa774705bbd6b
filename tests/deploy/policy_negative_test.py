#!/usr/bin/env python3
"""The hardening policy (deploy/kubernetes/policy.py) refuses what it must.

Takes rendered overlays (kubectl kustomize output), checks that each passes
as is, then breaks them one way at a time -- hostIPC, runAsNonRoot dropped,
privileged, capabilities kept, a writable root, a missing probe, a plain init
container instead of a native sidecar, a stray hostPath, hostUsers: false on
the node daemon -- and expects the policy to fail with that rule each time.
Also feeds tests/deploy/kubernetes-bad/hostipc.yaml as a file.

    policy_negative_test.py POLICY.py SIDECAR.yaml DAEMONSET.yaml BAD_DIR
"""

import copy
import importlib.util
import os
import subprocess
import sys

import yaml


def load_policy(path):
    spec = importlib.util.spec_from_file_location("shmlane_policy", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def violations(policy, docs):
    checker = policy.Checker()
    for d in docs:
        checker.check_document(d)
    return checker.violations, checker.workloads


def pod_of(docs, kind):
    for d in docs:
        if d.get("kind") == kind:
            return d["spec"]["template"]["spec"]
    raise SystemExit(f"no {kind} in the rendered manifests")


def daemon_of(pod):
    for c in (pod.get("initContainers") or []) + pod["containers"]:
        if c["name"] == "shmlaned":
            return c
    raise SystemExit("no shmlaned container")


def app_of(pod):
    return next(c for c in pod["containers"] if c["name"] != "shmlaned")


def main(argv):
    policy_path, sidecar_path, daemonset_path, bad_dir = argv[1:5]
    policy = load_policy(policy_path)
    sidecar = [d for d in yaml.safe_load_all(open(sidecar_path)) if d]
    daemonset = [d for d in yaml.safe_load_all(open(daemonset_path)) if d]

    failures = []
    for name, docs in (("sidecar", sidecar), ("daemonset", daemonset)):
        v, n = violations(policy, docs)
        if v or n == 0:
            failures.append(f"{name} as rendered: expected to pass with workloads, got {v} ({n} workloads)")

    def sc(c):
        return c.setdefault("securityContext", {})

    cases = [
        # (name, which rendering, mutation(pod), rule that must be reported)
        ("hostIPC", "sidecar", lambda p: p.__setitem__("hostIPC", True), "[hostIPC]"),
        ("hostPID", "sidecar", lambda p: p.__setitem__("hostPID", True), "[hostPID]"),
        ("hostNetwork", "daemonset", lambda p: p.__setitem__("hostNetwork", True), "[hostNetwork]"),
        ("runAsNonRoot dropped everywhere", "sidecar",
         lambda p: [p["securityContext"].pop("runAsNonRoot", None)]
         + [sc(c).pop("runAsNonRoot", None) for c in p["containers"] + p["initContainers"]],
         "[runAsNonRoot]"),
        ("runAsNonRoot false on the app", "sidecar",
         lambda p: sc(app_of(p)).__setitem__("runAsNonRoot", False), "[runAsNonRoot]"),
        ("runAsUser 0", "sidecar", lambda p: sc(app_of(p)).__setitem__("runAsUser", 0), "[runAsUser]"),
        ("privileged", "daemonset", lambda p: sc(daemon_of(p)).__setitem__("privileged", True),
         "[privileged]"),
        ("allowPrivilegeEscalation", "sidecar",
         lambda p: sc(daemon_of(p)).pop("allowPrivilegeEscalation"), "[allowPrivilegeEscalation]"),
        ("writable root", "sidecar",
         lambda p: sc(app_of(p)).__setitem__("readOnlyRootFilesystem", False), "[readOnlyRootFilesystem]"),
        ("capabilities kept", "sidecar",
         lambda p: sc(daemon_of(p)).__setitem__("capabilities", {"drop": ["NET_RAW"]}), "[capabilities]"),
        ("capability added", "daemonset",
         lambda p: sc(daemon_of(p))["capabilities"].__setitem__("add", ["SYS_ADMIN"]), "[capabilities]"),
        ("seccomp Unconfined", "sidecar",
         lambda p: [p["securityContext"].__setitem__("seccompProfile", {"type": "Unconfined"})]
         + [sc(c).pop("seccompProfile", None) for c in p["containers"] + p["initContainers"]],
         "[seccompProfile]"),
        ("no startup probe", "sidecar", lambda p: daemon_of(p).pop("startupProbe"), "[startupProbe]"),
        ("exec liveness probe", "daemonset",
         lambda p: daemon_of(p).__setitem__("livenessProbe", {"exec": {"command": ["true"]}}),
         "[livenessProbe]"),
        ("probe on another port", "sidecar",
         lambda p: daemon_of(p)["readinessProbe"]["grpc"].__setitem__("port", 9464), "[readinessProbe]"),
        ("no --health-listen", "sidecar",
         lambda p: daemon_of(p).__setitem__(
             "args", [a for a in daemon_of(p)["args"] if not a.startswith("--health-listen")]),
         "[health-listen]"),
        ("no --declare", "sidecar",
         lambda p: daemon_of(p).__setitem__(
             "args", [a for a in daemon_of(p)["args"] if not a.startswith("--declare")]),
         "[declare]"),
        ("plain init container", "sidecar", lambda p: daemon_of(p).pop("restartPolicy"), "[native-sidecar]"),
        ("runtime volume not shared", "sidecar", lambda p: app_of(p).pop("volumeMounts"), "[runtime-volume]"),
        ("no memory limit", "sidecar", lambda p: daemon_of(p)["resources"].pop("limits"), "[resources]"),
        ("hostPort", "daemonset", lambda p: daemon_of(p)["ports"][0].__setitem__("hostPort", 9464),
         "[hostPort]"),
        ("hostPath elsewhere", "daemonset",
         lambda p: p["volumes"].append({"name": "root", "hostPath": {"path": "/", "type": "Directory"}}),
         "[hostPath]"),
        ("hostPath DirectoryOrCreate", "daemonset",
         lambda p: next(v for v in p["volumes"] if "hostPath" in v)["hostPath"].__setitem__(
             "type", "DirectoryOrCreate"), "[hostPath]"),
        ("hostUsers false on the node daemon", "daemonset",
         lambda p: p.__setitem__("hostUsers", False), "[hostUsers]"),
    ]
    for name, which, mutate, rule in cases:
        docs = copy.deepcopy(sidecar if which == "sidecar" else daemonset)
        pod = pod_of(docs, "Deployment" if which == "sidecar" else "DaemonSet")
        mutate(pod)
        v, _ = violations(policy, docs)
        if not any(rule in line for line in v):
            failures.append(f"mutation '{name}': expected a {rule} violation, got {v or 'none'}")
        else:
            print(f"refused as expected: {name}: {next(line for line in v if rule in line)}")

    # The same through the command line, on a file: exit 1 and the rule.
    bad = os.path.join(bad_dir, "hostipc.yaml")
    run = subprocess.run([sys.executable, policy_path, bad], capture_output=True, text=True, timeout=60)
    if run.returncode != 1 or "[hostIPC]" not in run.stdout:
        failures.append(f"policy.py {bad}: expected exit 1 with [hostIPC], got {run.returncode}: {run.stdout}")
    else:
        print(f"refused as expected: {bad} (exit 1)")
    empty = subprocess.run([sys.executable, policy_path, "-"], input="", capture_output=True, text=True,
                           timeout=60)
    if empty.returncode != 2:
        failures.append(f"policy.py on empty input: expected exit 2, got {empty.returncode}")

    for f in failures:
        print(f"FAIL: {f}", file=sys.stderr)
    print(f"{len(cases) + 2 - len(failures)} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
