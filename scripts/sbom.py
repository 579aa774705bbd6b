#!/usr/bin/env python3
"""Software bill of materials for a shmlane build, and a license check.

Lists the Debian packages shmlane is built against (the -dev packages whose
headers and libraries CMake's find_package() picks up) and the packages
whose shared libraries its shipped binaries load at run time (ldd, which
follows every library's own dependencies), with versions and licenses, as
CycloneDX 1.5 JSON. Licenses come from each package's
machine-readable /usr/share/doc/PKG/copyright: the License of its
`Files: *` stanza (the code itself; stanzas for debian/* packaging or
build scripts are not what we link). Packages whose copyright file is not
machine-readable are listed in REVIEWED with the license read by hand.

--check fails (exit 1) when a package's license is not in ALLOWED, naming
the package and its license: a dependency under a license we have not
accepted must be a decision, not an accident.

Usage: scripts/sbom.py --version V [--binary PATH ...] [--out FILE] [--check]
"""
import argparse
import datetime
import json
import re
import subprocess
import sys
import uuid
from pathlib import Path

# What CMake's find_package() calls resolve to (CMakeLists.txt), as packages.
DIRECT = [
    "libgrpc++-dev", "libgrpc-dev", "libprotobuf-dev", "libabsl-dev",
    "prometheus-cpp-dev", "libcivetweb-dev", "libcli11-dev", "nlohmann-json3-dev",
    "libstdc++-12-dev", "libc6-dev",
]

# Licenses (SPDX ids or Debian's short names, compared case-insensitively)
# that we accept for code we link or ship.
ALLOWED = {
    "apache-2.0", "apache-2.0 with llvm exception", "bsd-2-clause", "bsd-3-clause",
    "bsd-3-clause~google", "bsd-3-google", "bsd-4-clause-uc", "expat", "mit", "zlib",
    "isc", "0bsd", "public-domain", "bsl-1.0", "curl", "openssl", "ssleay",
    "lgpl-2.1+", "lgpl-2.1", "u-of-i-bsd-like",
    "gpl-3+ with gcc-exception-3.1",  # libstdc++ / libgcc: the runtime library exception
}

# Copyright files that are not machine-readable, read by hand.
REVIEWED = {
    "libc6": "LGPL-2.1+",
    "libc6-dev": "LGPL-2.1+",
    "libgcc-s1": "GPL-3+ with GCC-exception-3.1",
    "libstdc++6": "GPL-3+ with GCC-exception-3.1",
    "libstdc++-12-dev": "GPL-3+ with GCC-exception-3.1",
    "libc-ares2": "MIT",
}


def dpkg_query(fmt, pkg):
    r = subprocess.run(["dpkg-query", "-W", "-f", fmt, pkg], capture_output=True, text=True)
    return r.stdout if r.returncode == 0 else None


def installed(pkg):
    s = dpkg_query("${Status}", pkg)
    return s is not None and "install ok installed" in s


def runtime_packages(binaries):
    pkgs = set()
    for b in binaries:
        r = subprocess.run(["ldd", b], capture_output=True, text=True)
        for line in r.stdout.splitlines():
            m = re.search(r"=> (/\S+)", line)
            if not m:
                continue
            path = Path(m.group(1)).resolve()
            for candidate in (str(path), m.group(1), "/usr" + str(path) if not str(path).startswith("/usr") else str(path)[4:]):
                s = subprocess.run(["dpkg", "-S", candidate], capture_output=True, text=True)
                if s.returncode == 0:
                    pkgs.add(s.stdout.split(":")[0].strip())
                    break
    return pkgs


def main_license(pkg):
    """The License of the `Files: *` stanza, or None if not machine-readable."""
    doc = Path("/usr/share/doc") / pkg / "copyright"
    if not doc.is_file():
        # Some -dev packages link their doc directory to the library's.
        return None
    text = doc.read_text(errors="replace")
    if not text.startswith("Format:"):
        return None
    for stanza in re.split(r"\n\s*\n", text):
        fields = {}
        key = None
        for line in stanza.splitlines():
            if line[:1] in (" ", "\t") and key:
                continue
            if ":" in line:
                key, value = line.split(":", 1)
                fields[key.strip().lower()] = value.strip()
        if fields.get("files", "").split() and fields["files"].split()[0] == "*" and "license" in fields:
            return fields["license"]
    return None


def license_of(pkg):
    return REVIEWED.get(pkg) or main_license(pkg)


def allowed(expr):
    # "A or B": one acceptable alternative suffices; "A and B": all must be.
    if expr is None:
        return False
    ors = [a.strip() for a in re.split(r"\s+or\s+", expr, flags=re.I)]
    return any(all(t.strip().lower() in ALLOWED for t in re.split(r"\s+and\s+", o, flags=re.I)) for o in ors)


def component(pkg):
    version = dpkg_query("${Version}", pkg) or ""
    arch = dpkg_query("${Architecture}", pkg) or ""
    lic = license_of(pkg)
    c = {
        "type": "library",
        "bom-ref": f"pkg:deb/debian/{pkg}@{version}?arch={arch}",
        "name": pkg,
        "version": version,
        "purl": f"pkg:deb/debian/{pkg}@{version}?arch={arch}",
        "licenses": [{"expression": lic}] if lic else [],
    }
    home = dpkg_query("${Homepage}", pkg)
    if home:
        c["externalReferences"] = [{"type": "website", "url": home}]
    return c


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--version", required=True, help="shmlane's version")
    p.add_argument("--binary", action="append", default=[], help="a shipped binary (ldd)")
    p.add_argument("--out", help="write the CycloneDX JSON here (default: stdout)")
    p.add_argument("--check", action="store_true", help="fail on a license not in the allowed list")
    a = p.parse_args()

    missing = [d for d in DIRECT if not installed(d)]
    if missing:
        print(f"sbom: not installed: {' '.join(missing)} (scripts/install-deps.sh)", file=sys.stderr)
        return 2
    runtime = runtime_packages(a.binary)
    pkgs = sorted(set(DIRECT) | runtime)
    bom = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": f"urn:uuid:{uuid.uuid4()}",
        "version": 1,
        "metadata": {
            "timestamp": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "tools": [{"name": "shmlane scripts/sbom.py"}],
            "component": {"type": "application", "name": "shmlane", "version": a.version,
                          "licenses": [{"expression": "Apache-2.0"}]},
        },
        "components": [dict(component(x), scope="required" if x in runtime else "optional")
                       for x in pkgs],
    }
    text = json.dumps(bom, indent=2) + "\n"
    if a.out:
        Path(a.out).write_text(text)
    else:
        sys.stdout.write(text)

    if a.check:
        bad = [(c["name"], c["licenses"][0]["expression"] if c["licenses"] else None)
               for c in bom["components"]
               if not allowed(c["licenses"][0]["expression"] if c["licenses"] else None)]
        for name, lic in bad:
            why = "no machine-readable license: read it and add it to REVIEWED" if lic is None \
                else f"license {lic!r} is not in ALLOWED"
            print(f"sbom: {name}: {why} (scripts/sbom.py)", file=sys.stderr)
        print(f"sbom: {len(pkgs)} packages, {len(bad)} with a license we have not accepted",
              file=sys.stderr)
        return 1 if bad else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
