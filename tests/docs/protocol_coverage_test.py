#!/usr/bin/env python3
"""docs/protocol.md must specify the whole attach protocol: every message,
enum, enum value and field of protos/shmlane/v1/attach.proto is named in it
(in `code` or a code block). Exits 1 listing what is missing."""
import re
import sys
from pathlib import Path

src = Path(sys.argv[1])
proto = (src / "protos/shmlane/v1/attach.proto").read_text()
doc = (src / "docs/protocol.md").read_text()
# Identifiers in fenced blocks, and in inline `code` outside them.
fences = re.findall(r"^```[^\n]*\n(.*?)^```", doc, re.M | re.S)
prose = re.sub(r"^```[^\n]*\n.*?^```", "", doc, flags=re.M | re.S)
words = set()
for text in fences + re.findall(r"`([^`\n]+)`", prose):
    words.update(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text))

proto = re.sub(r"//[^\n]*", "", proto)
missing = []
for kind, name, body in re.findall(r"\b(message|enum)\s+(\w+)\s*\{([^{}]*(?:\{[^{}]*\}[^{}]*)*)\}", proto):
    if name not in words:
        missing.append(f"{kind} {name}")
    if kind == "message":
        for field in re.findall(r"^\s*(?:repeated\s+|optional\s+)?[\w.]+\s+(\w+)\s*=\s*\d+", body, re.M):
            if field not in words:
                missing.append(f"field {name}.{field}")
    else:
        for value in re.findall(r"^\s*(\w+)\s*=\s*\d+", body, re.M):
            if value not in words:
                missing.append(f"enum value {name}.{value}")
if missing:
    print("docs/protocol.md does not name (in `code` or a code block):\n  " + "\n  ".join(missing))
    sys.exit(1)
print("protocol_coverage_test: every message, enum and field of attach.proto is in docs/protocol.md")
