#!/usr/bin/env bash
# deploy/kubernetes, offline: `kubectl kustomize` renders every overlay;
# every rendered object validates against the Kubernetes OpenAPI schema
# (npm's kubernetes-models, and the Prometheus Operator's CRD models,
# installed with `npm ci` into the build tree from the committed lock file);
# the hardening policy (deploy/kubernetes/policy.py) passes on every
# container; the validator refuses a known-bad file; and the daemon's config
# and the declaration files parse as the protobuf messages they claim to be.
source "$(dirname "$0")/lib.sh"
: "${SHMLANE_BUILD_DIR:?}" "${SHMLANE_SOURCE_DIR:?}" "${SHMLANED:?}"
need kubectl "renders the kustomize overlays"
need python3 "runs deploy/kubernetes/policy.py"
python3 -c 'import yaml' 2>/dev/null || skip python3-yaml "Debian package python3-yaml, read by policy.py"
need node "Debian package nodejs: runs the OpenAPI validation"
need npm "comes with nodejs (npm): installs kubernetes-models"

k8s=$SHMLANE_SOURCE_DIR/deploy/kubernetes
here=$SHMLANE_SOURCE_DIR/tests/deploy
out=$SCRATCH/rendered
mkdir -p "$out"

# 1. Render every kustomization that is not a Component (those are rendered
#    as part of the overlays that include them).
overlays=()
for k in "$k8s"/*/kustomization.yaml; do
  dir=$(dirname "$k")
  grep -q '^kind: Component' "$k" && continue
  overlays+=("$(basename "$dir")")
done
[ ${#overlays[@]} -ge 2 ] || die "expected the sidecar and daemonset overlays, found: ${overlays[*]:-none}"
for o in "${overlays[@]}"; do
  kubectl kustomize "$k8s/$o" >"$out/$o.yaml" 2>"$SCRATCH/kustomize-$o.log" ||
    { cat "$SCRATCH/kustomize-$o.log" >&2; die "kubectl kustomize $o failed"; }
  log "rendered $o: $(grep -c '^kind:' "$out/$o.yaml") objects ($(grep '^kind:' "$out/$o.yaml" | awk '{print $2}' | sort | uniq -c | awk '{printf "%s %s, ", $1, $2}' | sed 's/, $//'))"
done

# 2. OpenAPI validation. node_modules lives in the build tree (git-ignored)
#    and is reinstalled only when the lock file changes.
modules=$SHMLANE_BUILD_DIR/tests/deploy/k8s-validate
lock_sum=$(sha256sum "$here/k8s-validate/package-lock.json" | cut -d' ' -f1)
if [ "$(cat "$modules/.lock-sha256" 2>/dev/null)" != "$lock_sum" ] || [ ! -d "$modules/node_modules" ]; then
  log "npm ci (kubernetes-models) into $modules"
  rm -rf "$modules"
  mkdir -p "$modules"
  cp "$here/k8s-validate/package.json" "$here/k8s-validate/package-lock.json" "$modules/"
  t0=$(date +%s)
  (cd "$modules" && timeout 240 npm ci --no-audit --no-fund --loglevel=error) >"$SCRATCH/npm.log" 2>&1 ||
    { cat "$SCRATCH/npm.log" >&2; rm -rf "$modules"; die "npm ci failed (the npm registry must be reachable once)"; }
  echo "$lock_sum" >"$modules/.lock-sha256"
  log "  installed in $(($(date +%s) - t0))s"
fi
cp "$here/k8s-validate/validate.mjs" "$modules/validate.mjs"
(cd "$modules" && node validate.mjs "$out"/*.yaml) >"$SCRATCH/validate.log" 2>&1 || {
  cat "$SCRATCH/validate.log" >&2
  die "rendered manifests do not validate against the OpenAPI schema"
}
tail -1 "$SCRATCH/validate.log"
# ... and the validator is not a rubber stamp.
set +e
(cd "$modules" && node validate.mjs "$here/kubernetes-bad/schema.yaml") >"$SCRATCH/validate-bad.log" 2>&1
rc=$?
set -e
[ "$rc" -eq 1 ] || { cat "$SCRATCH/validate-bad.log" >&2; die "the validator accepted kubernetes-bad/schema.yaml (exit $rc)"; }
[ "$(grep -c '^INVALID' "$SCRATCH/validate-bad.log")" -eq 2 ] ||
  { cat "$SCRATCH/validate-bad.log" >&2; die "the validator should refuse both objects of kubernetes-bad/schema.yaml"; }
log "validator refuses kubernetes-bad/schema.yaml as expected"

# 3. Hardening policy on every workload of every overlay.
for o in "${overlays[@]}"; do
  python3 "$k8s/policy.py" "$out/$o.yaml" || die "policy violations in $o (above)"
done

# 4. The daemon's config and the declarations parse as their messages.
if [ -n "${PROTOC:-}" ] && [ -x "$PROTOC" ]; then
  protos=$SHMLANE_SOURCE_DIR/protos
  "$PROTOC" -I"$protos" -I/usr/include --encode=shmlane.v1.DaemonConfig shmlane/v1/config.proto \
    <"$k8s/base/shmlaned.textproto" >/dev/null || die "base/shmlaned.textproto is not a valid shmlane.v1.DaemonConfig"
  for d in "$k8s"/*/declare.textproto; do
    "$PROTOC" -I"$protos" -I/usr/include --encode=shmlane.v1.Declarations shmlane/v1/declarations.proto \
      <"$d" >/dev/null || die "${d#"$k8s"/} is not a valid shmlane.v1.Declarations"
  done
  log "base/shmlaned.textproto and $(ls "$k8s"/*/declare.textproto | wc -l) declaration files parse"
else
  die "protoc not found (PROTOC=${PROTOC:-unset}); it is part of the build"
fi

# 5. The container args against the real binary, once it has the flags.
args=$(python3 -c '
import sys, yaml
for d in yaml.safe_load_all(open(sys.argv[1])):
    if d and d.get("kind") == "Deployment":
        for c in d["spec"]["template"]["spec"].get("initContainers", []):
            if c["name"] == "shmlaned":
                print("\n".join(c["args"]))
' "$out/sidecar.yaml")
help=$("$SHMLANED" --help)
grep -q -- '--health-listen' <<<"$help" || die "shmlaned --help lists no --health-listen"
grep -q -- '--declare' <<<"$help" || die "shmlaned --help lists no --declare"
# --print-config parses flags and file without starting; paths are the pod's.
mapfile -t argv < <(echo "$args" | sed -e "s|^--config=/etc/shmlane/shmlaned.textproto|--config=$k8s/base/shmlaned.textproto|" \
  -e "s|^--declare=/etc/shmlane/declare.textproto|--declare=$k8s/sidecar/declare.textproto|")
"$SHMLANED" "${argv[@]}" --print-config >"$SCRATCH/print-config.txt" 2>&1 ||
  { cat "$SCRATCH/print-config.txt" >&2; die "shmlaned refuses the sidecar's args: $(echo $args)"; }
grep -q "^declare: \"$k8s/sidecar/declare.textproto\"" "$SCRATCH/print-config.txt" ||
  { cat "$SCRATCH/print-config.txt" >&2; die "--print-config does not show the sidecar's --declare"; }
log "shmlaned accepts the sidecar's args: $(echo $args)"

# 6. Each overlay's declarations apply to a real daemon: every channel, grant
#    and quota in them is accepted (not just well-formed).
for d in "$k8s"/*/declare.textproto; do
  name=$(basename "$(dirname "$d")")
  rt="$SCRATCH/rt-$name"
  "$SHMLANED" --runtime-dir "$rt" --metrics-listen none --audit-log none --declare "$d" \
    >"$SCRATCH/declare-$name.out" 2>"$SCRATCH/declare-$name.err" &
  pid=$!
  for _ in $(seq 100); do
    grep -q ' ready$' "$SCRATCH/declare-$name.out" && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if ! grep -q '^  declare: ' "$SCRATCH/declare-$name.out"; then
    kill -9 "$pid" 2>/dev/null || true
    cat "$SCRATCH/declare-$name.err" >&2
    die "shmlaned did not apply $name/declare.textproto"
  fi
  if grep -q 'cannot ' "$SCRATCH/declare-$name.err"; then
    kill -9 "$pid" 2>/dev/null || true
    cat "$SCRATCH/declare-$name.err" >&2
    die "$name/declare.textproto has declarations the daemon cannot apply"
  fi
  kill "$pid" && wait "$pid" || die "shmlaned with $name/declare.textproto did not stop cleanly"
  log "$name/declare.textproto applies: $(grep -o '([0-9]* channels, [0-9]* grants, [0-9]* quotas' "$SCRATCH/declare-$name.out" | tr -d '(')"
done
