#!/usr/bin/env python3
"""scripts/sbom.py: the license rule refuses what it must, and the SBOM of
the built binaries is complete CycloneDX with every license accepted."""
import importlib.util
import json
import subprocess
import sys
import tempfile
from pathlib import Path

src, binaries = Path(sys.argv[1]), sys.argv[2:]
spec = importlib.util.spec_from_file_location("sbom", src / "scripts/sbom.py")
sbom = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sbom)

failures = []
for expr, want in [("Apache-2.0", True), ("GPL-3+", False), ("GPL-2+ or LGPL-3+", False),
                   ("Expat or GPL-2+", True), ("MIT and GPL-3", False), (None, False),
                   ("GPL-3+ with GCC-exception-3.1", True)]:
    if sbom.allowed(expr) != want:
        failures.append(f"allowed({expr!r}) should be {want}")

with tempfile.TemporaryDirectory() as tmp:
    out = Path(tmp) / "sbom.json"
    r = subprocess.run([sys.executable, str(src / "scripts/sbom.py"), "--version", "test",
                        "--out", str(out), "--check"] + [a for b in binaries for a in ("--binary", b)],
                       capture_output=True, text=True, timeout=120)
    print(r.stderr, end="")
    if r.returncode != 0:
        failures.append(f"sbom.py --check exited {r.returncode}")
    else:
        bom = json.loads(out.read_text())
        names = {c["name"] for c in bom["components"]}
        for need in ["libgrpc++1.51", "libprotobuf32", "libabsl20220623", "libc6", "libcli11-dev"]:
            if need not in names:
                failures.append(f"{need} missing from the SBOM")
        if bom.get("bomFormat") != "CycloneDX" or bom.get("specVersion") != "1.5":
            failures.append("not CycloneDX 1.5")
        for c in bom["components"]:
            if not c["licenses"] or not c["version"] or not c["purl"].startswith("pkg:deb/debian/"):
                failures.append(f"{c['name']}: incomplete component {c}")

print("\n".join(failures) if failures else "sbom_test: ok")
sys.exit(1 if failures else 0)
