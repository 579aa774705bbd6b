#!/usr/bin/env bash
# The hardening policy fails when it must: renders the overlays and runs
# policy_negative_test.py, which breaks them one rule at a time.
source "$(dirname "$0")/lib.sh"
: "${SHMLANE_SOURCE_DIR:?}"
need kubectl "renders the kustomize overlays"
need python3 "runs deploy/kubernetes/policy.py"
python3 -c 'import yaml' 2>/dev/null || skip python3-yaml "Debian package python3-yaml"
k8s=$SHMLANE_SOURCE_DIR/deploy/kubernetes
kubectl kustomize "$k8s/sidecar" >"$SCRATCH/sidecar.yaml" || die "kubectl kustomize sidecar failed"
kubectl kustomize "$k8s/daemonset" >"$SCRATCH/daemonset.yaml" || die "kubectl kustomize daemonset failed"
python3 "$SHMLANE_SOURCE_DIR/tests/deploy/policy_negative_test.py" "$k8s/policy.py" \
  "$SCRATCH/sidecar.yaml" "$SCRATCH/daemonset.yaml" "$SHMLANE_SOURCE_DIR/tests/deploy/kubernetes-bad"
