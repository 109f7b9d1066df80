"""The lock of tested versions (locks/pyX.Y.txt): write it from this environment, or show how this environment differs.

    python scripts/lock_diff.py LOCK            print packages whose installed version differs from LOCK
    python scripts/lock_diff.py --write LOCK    write LOCK from this environment's installed packages

torch (pinned by scripts/setup.sh, or a CUDA build the user brings) and what only a CUDA torch brings are
left out, so that the lock never asks pip to replace a user's torch.
"""

from __future__ import annotations

import datetime
import platform
import re
import sys
from importlib import metadata
from pathlib import Path

LEFT_OUT = re.compile(r"^(edgead|torch|triton|nvidia-.*|cuda-.*)$")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed() -> dict[str, str]:
    found = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name and not LEFT_OUT.match(canonical(name)):
            found[canonical(name)] = dist.version
    return dict(sorted(found.items()))


def read_lock(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[canonical(name)] = version.strip()
    return pins


def main(argv: list[str]) -> int:
    write = "--write" in argv
    paths = [a for a in argv if a != "--write"]
    if len(paths) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    path, now = Path(paths[0]), installed()
    if write:
        header = [
            f"# edgead's lock for CPython {sys.version_info[0]}.{sys.version_info[1]} ({platform.machine()} {platform.system()}): the versions the test suite passed with.",
            f"# Written by scripts/lock.sh on {datetime.date.today().isoformat()}; scripts/setup.sh installs with it as pip constraints.",
            "# torch is not here: setup.sh pins it (or you bring a CUDA build). Do not edit by hand: run bash scripts/lock.sh.",
        ]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(header + [f"{name}=={version}" for name, version in now.items()]) + "\n")
        return 0
    if not path.is_file():
        print(f"no lock at {path}: every installed version is new", file=sys.stderr)
        return 1
    locked, changed = read_lock(path), 0
    for name in sorted(set(locked) | set(now)):
        if locked.get(name) != now.get(name):
            print(f"  {name}: {locked.get(name, '-')} -> {now.get(name, '-')}")
            changed += 1
    print(f"  {changed} of {len(set(locked) | set(now))} differ" if changed else "  none: the newest versions are the locked ones")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
