#!/usr/bin/env python3
"""The folders' layering (README, "Layout"): each folder includes headers only
from itself and the folders it builds on,

    core -> eventlog, model -> shared -> command-svc, query-svc, cli

and a unit test includes a library's public header, never a path into
another folder ("../query-svc/x.h"). Reads the #include lines of every C
file the repository tracks; exits 1 naming each include that breaks a rule.
"""
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# folder -> the folders whose headers it may include (besides its own).
ALLOWED = {
    "core": set(),
    "eventlog": {"core"},
    "model": {"core"},
    "shared": {"core", "eventlog"},
    "command-svc": {"core", "eventlog", "model", "shared"},
    "query-svc": {"core", "eventlog", "model", "shared"},
    "cli": {"core", "eventlog", "model", "shared"},
}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def tracked_c_files():
    out = subprocess.run(["git", "-C", ROOT, "ls-files", "*.c", "*.h"],
                         check=True, capture_output=True, text=True).stdout
    return [p for p in out.split("\n") if p]


def header_owners(files):
    """'fledger/util.h' -> 'core', 'projection.h' -> 'query-svc', ..."""
    owners = {}
    for path in files:
        if not path.endswith(".h"):
            continue
        parts = path.split("/")
        folder = parts[0]
        if folder not in ALLOWED:
            continue
        if len(parts) >= 4 and parts[1] == "include":
            owners.setdefault("/".join(parts[2:]), set()).add(folder)
        elif len(parts) == 2:
            owners.setdefault(parts[1], set()).add(folder)
    return owners


def main():
    files = tracked_c_files()
    owners = header_owners(files)
    problems = []
    for path in files:
        folder = path.split("/")[0]
        with open(os.path.join(ROOT, path), encoding="utf-8") as f:
            text = f.read()
        for name in INCLUDE.findall(text):
            where = f"{path}: #include \"{name}\""
            if folder == "tests" and not path.startswith("tests/fuzz/"):
                if name.startswith("../"):
                    problems.append(f"{where}: a test includes a library's public header, not a path into its folder")
                continue
            if folder not in ALLOWED:
                continue
            if name.startswith("../"):
                problems.append(f"{where}: a path out of the folder")
                continue
            local = os.path.join(os.path.dirname(path), name)
            if os.path.exists(os.path.join(ROOT, local)):
                continue  # a header beside the file
            found = owners.get(name)
            if not found:
                continue  # a system or dependency header named with quotes
            if folder in found:
                continue
            if not found & ALLOWED[folder]:
                problems.append(f"{where}: {folder}/ may not use {'/'.join(sorted(found))}/")
    for p in problems:
        print("FAIL:", p, file=sys.stderr)
    if problems:
        return 1
    print(f"layers: {len(files)} files, every include within its layer")
    return 0


if __name__ == "__main__":
    sys.exit(main())
