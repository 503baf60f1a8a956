"""How many intra-op threads torch should use: ``[train] threads = "auto" | N``.

torch's default (one thread per core of the machine) is wrong twice on shared or containerised
machines: the cores the process may use are fewer (CPU affinity, a cgroup CPU quota, other ranks of
the same job on the node, DataLoader workers), and when other processes keep the cores busy the
OpenMP threads spin waiting for each other -- on a loaded 2-core machine a training step ran ~6x
slower with 2 threads than with 1 (docs/performance.md). ``auto`` therefore takes the cores free to
this process, divided among the local ranks and minus the DataLoader workers, and then *measures*:
a short matrix-multiply probe with that many threads against one thread; when the extra threads do
not pay (the cores are taken by someone else) it backs off to 1. The choice and its reason go into
the run header and ``summary.json``.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

CGROUP = Path("/sys/fs/cgroup")
#: the speed-up that extra threads must show in the probe to be kept (below: the cores are taken)
MIN_SPEEDUP = 1.3


@dataclass
class ThreadChoice:
    """The intra-op thread count chosen, the cores it was chosen from, and why."""

    threads: int
    setting: str
    cores: int
    reason: str
    probe_speedup: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        probe = f", probe speed-up {self.probe_speedup:.2f}x" if self.probe_speedup is not None else ""
        return f"threads: {self.threads} intra-op ({self.setting}; {self.cores} usable core(s); {self.reason}{probe})"


def affinity_cores() -> int:
    """Cores this process may run on (its CPU affinity; all cores where that is unknown)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def cgroup_quota(root: Path = CGROUP) -> float | None:
    """The cgroup CPU quota in cores (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``/``cfs_period_us``), or None
    when there is none. Unreadable or malformed files mean no quota."""
    try:
        text = (root / "cpu.max").read_text().split()
        if len(text) == 2 and text[0] != "max":
            quota, period = float(text[0]), float(text[1])
            return quota / period if quota > 0 and period > 0 else None
        if text:
            return None
    except (OSError, ValueError):
        pass
    for base in (root / "cpu", root / "cpu,cpuacct", root):
        try:
            quota = float((base / "cpu.cfs_quota_us").read_text().strip())
            period = float((base / "cpu.cfs_period_us").read_text().strip())
        except (OSError, ValueError):
            continue
        return quota / period if quota > 0 and period > 0 else None
    return None


def usable_cores(root: Path = CGROUP) -> int:
    """Cores the process can actually use: its affinity, capped by a cgroup quota (rounded up)."""
    cores = affinity_cores()
    quota = cgroup_quota(root)
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota - 1e-9)))
    return cores


def local_world_size() -> int:
    """Processes of this job on this node (torchrun's LOCAL_WORLD_SIZE; 1 outside torchrun)."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


def share(cores: int, local_world: int, workers: int) -> int:
    """This rank's share of ``cores``: divided among the local ranks, minus its DataLoader workers
    (each keeps a core busy decoding), never below 1."""
    return max(1, cores // max(1, local_world) - max(0, workers))


def probe_speedup(threads: int, seconds: float = 0.04) -> float:
    """Measured speed-up of ``threads`` intra-op threads over one on a small matmul loop (best of
    three, so a single preemption does not decide). Restores torch's thread count."""
    import torch

    before = torch.get_num_threads()
    a = torch.randn(192, 192)

    def rate(n: int) -> float:
        torch.set_num_threads(n)
        best = 0.0
        for _ in range(3):
            count, t0 = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - t0) < seconds / 3:
                torch.mm(a, a)
                count += 1
            best = max(best, count / max(elapsed, 1e-9))
        return best

    try:
        rate(threads)  # warm the thread pool
        one, many = rate(1), rate(threads)
    finally:
        torch.set_num_threads(before)
    return many / max(one, 1e-9)


def choose_threads(setting: int | str, *, workers: int = 0, local_world: int | None = None,
                   cores: int | None = None, probe: bool = True) -> ThreadChoice:
    """The thread count for ``setting`` (``"auto"`` or a number); does not apply it."""
    cores = usable_cores() if cores is None else cores
    if setting != "auto":
        return ThreadChoice(int(setting), str(setting), cores, "set in the recipe")
    world = local_world_size() if local_world is None else local_world
    n = share(cores, world, workers)
    parts = [f"{world} local rank(s)"] if world > 1 else []
    if workers:
        parts.append(f"{workers} loader worker(s)")
    after = f" after {', '.join(parts)}" if parts else ""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and 0 < int(env) < n:
        return ThreadChoice(int(env), "auto", cores, "capped by OMP_NUM_THREADS")
    if n == 1:
        return ThreadChoice(1, "auto", cores, "one free core" + after)
    if not probe:
        return ThreadChoice(n, "auto", cores, "free cores" + after)
    speedup = probe_speedup(n)
    if speedup < MIN_SPEEDUP:
        return ThreadChoice(1, "auto", cores, f"backed off: {n} threads gave no speed-up (cores busy)", speedup)
    return ThreadChoice(n, "auto", cores, "free cores, measured speed-up" + after, speedup)


def apply_threads(choice: ThreadChoice) -> None:
    """Set torch's intra-op thread count to the choice."""
    import torch

    torch.set_num_threads(max(1, choice.threads))


__all__ = ["ThreadChoice", "affinity_cores", "apply_threads", "cgroup_quota", "choose_threads", "local_world_size",
           "probe_speedup", "share", "usable_cores"]
