#!/usr/bin/env python3
"""Hardening policy of shmlane's Kubernetes manifests, checked offline.

    kubectl kustomize deploy/kubernetes/sidecar | deploy/kubernetes/policy.py -
    deploy/kubernetes/policy.py rendered.yaml [more.yaml ...]

Every container (init, regular, ephemeral) of every workload (Pod,
Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob) must run as
non-root with a read-only root file system, no privilege escalation, all
capabilities dropped and the RuntimeDefault (or a Localhost) seccomp
profile; no pod may use hostIPC, hostPID, hostNetwork, privileged
containers or host ports, and the only hostPath allowed is the DaemonSet's
/run/shmlane (type Directory, in a pod without its own user namespace).
The shmlaned container must have grpc startup/readiness/liveness probes on
its --health-listen port, memory requests and limits, a runtime volume at
/run/shmlane, --declare, and, as an init container, restartPolicy: Always
(a native sidecar) with the runtime volume shared with the app.

Exit status: 0 all good, 1 violations (one line each, with a rule id), 2
unreadable input or no workload in it. Needs python3-yaml (Debian).
"""

import sys

import yaml

WORKLOAD_POD_SPEC = {
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "ReplicationController": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
    "PodTemplate": ("template", "spec"),
}
DAEMON_CONTAINER = "shmlaned"
RUNTIME_MOUNT = "/run/shmlane"
ALLOWED_HOST_PATH = "/run/shmlane"


def dig(obj, *path):
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


class Checker:
    def __init__(self):
        self.violations = []
        self.workloads = 0
        self.containers = 0

    def fail(self, where, rule, message):
        self.violations.append(f"{where}: [{rule}] {message}")

    def check_document(self, doc):
        if not isinstance(doc, dict):
            return
        kind = doc.get("kind")
        if kind == "List":
            for item in doc.get("items") or []:
                self.check_document(item)
            return
        if kind not in WORKLOAD_POD_SPEC:
            return
        pod = dig(doc, *WORKLOAD_POD_SPEC[kind])
        name = dig(doc, "metadata", "name") or "?"
        where = f"{kind}/{name}"
        if not isinstance(pod, dict):
            self.fail(where, "pod-spec", "no pod spec")
            return
        self.workloads += 1
        self.check_pod(where, pod)

    def check_pod(self, where, pod):
        for field in ("hostIPC", "hostPID", "hostNetwork"):
            if pod.get(field) is True:
                self.fail(where, field, f"{field}: true shares the node's namespace; shmlane needs none")
        if pod.get("shareProcessNamespace") is True:
            self.fail(where, "shareProcessNamespace", "shareProcessNamespace: true is not needed")
        pod_sc = pod.get("securityContext") or {}
        volumes = {v.get("name"): v for v in pod.get("volumes") or [] if isinstance(v, dict)}
        host_paths = [v for v in volumes.values() if "hostPath" in v]
        for v in host_paths:
            hp = v["hostPath"] or {}
            if hp.get("path") != ALLOWED_HOST_PATH or hp.get("type") != "Directory":
                self.fail(where, "hostPath",
                          f"volume {v.get('name')}: hostPath {hp.get('path')!r} type {hp.get('type')!r}; "
                          f"only {ALLOWED_HOST_PATH!r} with type Directory is allowed")
        if host_paths and pod.get("hostUsers") is False:
            self.fail(where, "hostUsers",
                      "hostUsers: false with the node's /run/shmlane: SO_PEERCRED uids would not match "
                      "across user namespaces")

        groups = (("initContainers", pod.get("initContainers")),
                  ("containers", pod.get("containers")),
                  ("ephemeralContainers", pod.get("ephemeralContainers")))
        if not pod.get("containers"):
            self.fail(where, "containers", "no containers")
        for group, containers in groups:
            for c in containers or []:
                if not isinstance(c, dict):
                    continue
                self.containers += 1
                cwhere = f"{where} {group}/{c.get('name', '?')}"
                self.check_container(cwhere, c, pod_sc)
                if c.get("name") == DAEMON_CONTAINER:
                    self.check_daemon(cwhere, group, c, pod, volumes)

    def check_container(self, where, c, pod_sc):
        sc = c.get("securityContext") or {}

        def effective(key):
            return sc[key] if key in sc else pod_sc.get(key)

        if effective("runAsNonRoot") is not True:
            self.fail(where, "runAsNonRoot", "runAsNonRoot must be true (container or pod)")
        if effective("runAsUser") == 0:
            self.fail(where, "runAsUser", "runAsUser: 0")
        if sc.get("privileged") is True:
            self.fail(where, "privileged", "privileged: true")
        if sc.get("allowPrivilegeEscalation") is not False:
            self.fail(where, "allowPrivilegeEscalation", "allowPrivilegeEscalation must be false")
        if sc.get("readOnlyRootFilesystem") is not True:
            self.fail(where, "readOnlyRootFilesystem", "readOnlyRootFilesystem must be true")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            self.fail(where, "capabilities", "capabilities.drop must contain ALL")
        if caps.get("add"):
            self.fail(where, "capabilities", f"capabilities.add {caps.get('add')}")
        seccomp = (effective("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            self.fail(where, "seccompProfile", f"seccompProfile.type {seccomp!r}; want RuntimeDefault")
        if sc.get("procMount") not in (None, "Default"):
            self.fail(where, "procMount", f"procMount {sc.get('procMount')!r}")
        for port in c.get("ports") or []:
            if isinstance(port, dict) and port.get("hostPort"):
                self.fail(where, "hostPort", f"hostPort {port.get('hostPort')}")
        resources = c.get("resources") or {}
        if not dig(resources, "requests", "memory") or not dig(resources, "limits", "memory"):
            self.fail(where, "resources", "memory requests and limits must be set")

    def check_daemon(self, where, group, c, pod, volumes):
        args = [str(a) for a in (c.get("args") or []) + (c.get("command") or [])]
        health = [a.split("=", 1)[1] for a in args if a.startswith("--health-listen=")]
        for i, a in enumerate(args[:-1]):
            if a == "--health-listen":
                health.append(args[i + 1])
        if not health:
            self.fail(where, "health-listen", "no --health-listen ADDR:PORT for the grpc probes")
            port = None
        else:
            port = health[-1].rsplit(":", 1)[-1]
        if not any(a == "--declare" or a.startswith("--declare=") for a in args):
            self.fail(where, "declare", "no --declare FILE")
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            p = c.get(probe)
            if not isinstance(p, dict) or "grpc" not in p:
                self.fail(where, probe, f"{probe} must be a grpc probe")
                continue
            if port is not None and str(p["grpc"].get("port")) != port:
                self.fail(where, probe, f"{probe} port {p['grpc'].get('port')} != --health-listen port {port}")
        if not dig(c, "resources", "limits", "memory"):
            self.fail(where, "resources", "shmlaned needs a memory limit")
        mounts = {m.get("name"): m for m in c.get("volumeMounts") or [] if isinstance(m, dict)}
        run = [m for m in mounts.values() if m.get("mountPath") == RUNTIME_MOUNT]
        if not run:
            self.fail(where, "runtime-volume", f"no volume mounted at {RUNTIME_MOUNT}")
            return
        volume = volumes.get(run[0].get("name"))
        if volume is None:
            self.fail(where, "runtime-volume", f"volume {run[0].get('name')!r} is not in the pod")
            return
        if group == "initContainers":
            if c.get("restartPolicy") != "Always":
                self.fail(where, "native-sidecar",
                          "shmlaned as an init container needs restartPolicy: Always")
            if "emptyDir" not in volume:
                self.fail(where, "runtime-volume", "a sidecar's runtime volume must be an emptyDir")
            shared = [x for x in pod.get("containers") or []
                      if any(m.get("name") == volume.get("name") for m in x.get("volumeMounts") or [])]
            if not shared:
                self.fail(where, "runtime-volume",
                          f"no application container mounts {volume.get('name')!r}: nothing can attach")
        elif "emptyDir" not in volume and "hostPath" not in volume:
            self.fail(where, "runtime-volume", "the runtime volume must be an emptyDir or the node's /run/shmlane")


def main(argv):
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if len(argv) >= 2 else 2
    checker = Checker()
    for path in argv[1:]:
        try:
            text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
            docs = list(yaml.safe_load_all(text))
        except (OSError, yaml.YAMLError) as e:
            print(f"policy: {path}: {e}", file=sys.stderr)
            return 2
        for doc in docs:
            checker.check_document(doc)
    if checker.workloads == 0:
        print("policy: no workload (Pod, Deployment, DaemonSet, ...) in the input", file=sys.stderr)
        return 2
    for v in checker.violations:
        print(f"policy: {v}")
    print(f"policy: {checker.workloads} workloads, {checker.containers} containers, "
          f"{len(checker.violations)} violations")
    return 1 if checker.violations else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
