"""How much memory this process may still use: the one reading of /proc/meminfo and the cgroup limit,
shared by the component memory budget (membudget) and the decoded-sample cache's budget. Torch-free."""

from __future__ import annotations

import os
from pathlib import Path

MEMINFO = Path("/proc/meminfo")
CGROUP = Path("/sys/fs/cgroup")


def meminfo_available(path: Path = MEMINFO) -> int | None:
    """The kernel's MemAvailable in bytes, or None where it cannot be read."""
    try:
        for line in path.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def cgroup_headroom(root: Path = CGROUP) -> int | None:
    """Bytes left under a cgroup v2/v1 memory limit, or None when there is no limit."""
    for limit_name, usage_name in (("memory.max", "memory.current"),
                                   ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes")):
        try:
            limit_text = (root / limit_name).read_text().strip()
            if limit_text == "max":
                return None
            limit, usage = int(limit_text), int((root / usage_name).read_text().strip())
        except (OSError, ValueError):
            continue
        return None if limit >= 2**60 else max(0, limit - usage)
    return None


def available_bytes(meminfo: Path = MEMINFO, cgroup: Path = CGROUP) -> int:
    """The smaller of MemAvailable and the cgroup's headroom; the physical memory where neither is known."""
    found = [v for v in (meminfo_available(meminfo), cgroup_headroom(cgroup)) if v is not None]
    if not found:
        found.append(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    return min(found)
