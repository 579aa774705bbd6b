#!/usr/bin/env python3
"""Checks the documents against the binaries they describe.

Every flag that a program's --help lists must appear (as `--flag`) in the
document that describes the program, and every --help must exit 0. Run by
ctest (label docs) with the built binaries' paths; exits 1 listing each
undocumented flag and where it should be documented.
"""
import argparse
import re
import subprocess
import sys
from pathlib import Path

FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")


def run_help(argv):
    r = subprocess.run(argv + ["--help"], capture_output=True, text=True, timeout=20)
    return r.returncode, r.stdout + r.stderr


def flags_in_help(text):
    # Option lines start with spaces then -x, or --flag; skip prose.
    found = set()
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("-"):
            m = FLAG.search(stripped)
            if m:
                found.add(m.group(1))
    return found - {"--help", "--help-all"}


def shmlanectl_commands(ctl):
    """(command, subcommand) pairs from --help-all."""
    text = subprocess.run([ctl, "--help-all"], capture_output=True, text=True, timeout=20).stdout
    pairs, current, in_subs = [], None, False
    for line in text.splitlines():
        if re.match(r"^[a-z]+(, [a-z]+)?$", line):
            current, in_subs = line.split(",")[0], False
            pairs.append((current,))
        elif line.strip() == "Subcommands:" and current:
            in_subs = True
        elif in_subs and re.match(r"^    [a-z]+ ", line):
            pairs.append((current, line.split()[0]))
        elif not line.startswith("    "):
            in_subs = False
    return pairs


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--source-dir", required=True)
    p.add_argument("--shmlaned", required=True)
    p.add_argument("--shmlanectl", required=True)
    p.add_argument("--example", action="append", default=[])
    p.add_argument("--tool", action="append", default=[], help="other binaries whose --help must exit 0")
    a = p.parse_args()
    src = Path(a.source_dir)
    problems = []

    def check(argv, doc, what):
        code, text = run_help(argv)
        if code != 0:
            problems.append(f"{' '.join(argv)} --help exits {code}")
        documented = set(FLAG.findall((src / doc).read_text()))
        for flag in sorted(flags_in_help(text)):
            if flag not in documented:
                problems.append(f"{what}: {flag} is not documented in {doc}")
        return text

    check([a.shmlaned], "docs/operations.md", "shmlaned")
    check([a.shmlanectl], "docs/operations.md", "shmlanectl")
    pairs = shmlanectl_commands(a.shmlanectl)
    if len(pairs) < 10:
        problems.append(f"found only {len(pairs)} shmlanectl commands in --help-all: parser out of date?")
    for pair in pairs:
        check([a.shmlanectl, *pair], "docs/operations.md", "shmlanectl " + " ".join(pair))
    for example in a.example:
        check([example], "clients/README.md", Path(example).name)
    for tool in a.tool:
        code, _ = run_help([tool])
        if code != 0:
            problems.append(f"{tool} --help exits {code}")

    checked = 2 + len(pairs) + len(a.example)
    if problems:
        print("\n".join(problems))
        print(f"docs_check: {len(problems)} problems in {checked} --help texts")
        return 1
    print(f"docs_check: {checked} --help texts, every flag documented")
    return 0


if __name__ == "__main__":
    sys.exit(main())
