"""CPU topology visible to this process, read from Linux /sys, /proc and cgroup files.

Thread pools sized from ``os.cpu_count()`` oversubscribe containers and hyperthreaded
hosts, so this module works out what the process may actually use: the affinity mask,
physical cores (hyperthread siblings share one), any cgroup CPU quota and NUMA nodes.
Every root path is injectable so tests can point at fake trees; unreadable or
malformed files never raise, they just fall back to the next source.
"""

from __future__ import annotations

import functools
import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

__all__ = ["CpuTopology", "PoolSizes", "cpu_topology", "host_memory_available", "parse_cpu_list",
           "pool_sizes", "read_topology"]

ENV_NUM_THREADS = "FA_GPU_NUM_THREADS"
_RANGE = re.compile(r"([0-9]+)(?:-([0-9]+))?")


def parse_cpu_list(text: str) -> frozenset[int]:
    """Parse Linux cpu list syntax such as ``"0-3,8,10-11\\n"`` into a set of CPU ids.

    An empty string is the empty set; anything malformed raises ``ValueError``.
    """
    cpus: set[int] = set()
    stripped = text.strip()
    for part in stripped.split(",") if stripped else ():
        match = _RANGE.fullmatch(part.strip())
        if match is None:
            raise ValueError(f"malformed cpu list: {text!r}")
        lo = int(match[1])
        hi = int(match[2]) if match[2] is not None else lo
        if hi < lo:
            raise ValueError(f"descending range in cpu list: {text!r}")
        cpus.update(range(lo, hi + 1))
    return frozenset(cpus)


def _read(path: Path) -> str | None:
    # sysfs/cgroupfs entries vanish with hotplug and container setups; absence is normal.
    try:
        return path.read_text(encoding="ascii").strip()
    except (OSError, ValueError):
        return None


def _read_cpu_list(path: Path) -> frozenset[int] | None:
    text = _read(path)
    if text is None:
        return None
    try:
        return parse_cpu_list(text)
    except ValueError:
        return None


def _quota(path_quota: Path, path_period: Path | None) -> float | None:
    """Quota in CPUs from a v2 ``cpu.max`` (period None) or a v1 quota/period pair.

    Returns ``math.inf`` for an explicit "unlimited" and None if unreadable or malformed,
    so callers can tell "no limit here" from "no information here".
    """
    text = _read(path_quota)
    if text is None:
        return None
    if path_period is None:
        fields = text.split()
        if len(fields) != 2:
            return None
        quota, period = fields
    else:
        quota, period = text, _read(path_period)
        if period is None:
            return None
    if quota in ("max", "-1"):
        return math.inf
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None


def _cgroup_quota(sys_root: Path, proc_root: Path) -> tuple[float | None, list[str]]:
    base = sys_root / "fs" / "cgroup"
    rel: tuple[str, ...] = ()
    for line in (_read(proc_root / "self" / "cgroup") or "").splitlines():
        if line.startswith("0::"):
            rel = PurePosixPath(line[3:].strip().lstrip("/")).parts
    if ".." in rel:
        # Our cgroup lies outside this cgroup namespace; only the visible root is reachable.
        rel = ()
    # The effective limit is the tightest one on the way up to the root, so read them all.
    candidates: list[tuple[Path, Path | None]] = [
        (base.joinpath(*rel[:i]) / "cpu.max", None) for i in range(len(rel), -1, -1)
    ]
    for v1 in ("cpu", "cpu,cpuacct"):
        candidates.append((base / v1 / "cpu.cfs_quota_us", base / v1 / "cpu.cfs_period_us"))
    limits, used = [], []
    for quota_path, period_path in candidates:
        value = _quota(quota_path, period_path)
        if value is not None:
            limits.append(value)
            used.append(str(quota_path))
    tightest = min(limits, default=math.inf)
    return (None if math.isinf(tightest) else tightest), used


def _cgroup_rel(proc_root: Path, controller: str | None) -> tuple[str, ...]:
    """Our cgroup's path parts: the v2 entry (``0::``) when ``controller`` is None, else the v1
    line naming ``controller``; () when outside this namespace or unknown."""
    rel: tuple[str, ...] = ()
    for line in (_read(proc_root / "self" / "cgroup") or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if (controller is None and parts[0] == "0") or (controller is not None
                                                        and controller in parts[1].split(",")):
            rel = PurePosixPath(parts[2].strip().lstrip("/")).parts
    return () if ".." in rel else rel


def _int_file(path: Path) -> int | None:
    text = _read(path)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None  # "max" (v2 unlimited) or malformed


def _stat_field(path: Path, name: str) -> int:
    """Field ``name`` of a cgroup ``memory.stat`` file, 0 when absent."""
    for line in (_read(path) or "").splitlines():
        key, _, value = line.partition(" ")
        if key == name and value.strip().isdigit():
            return int(value)
    return 0


def host_memory_available(sys_root: str | Path = "/sys", proc_root: str | Path = "/proc") -> tuple[int | None, str]:
    """Bytes of host memory this process can still allocate, and where that figure came from:
    the lowest of ``MemAvailable`` (/proc/meminfo) and, at every level of our cgroup (v2
    ``memory.max`` - ``memory.current``, v1 ``memory.limit_in_bytes`` - ``memory.usage_in_bytes``),
    the limit minus the usage, the usage less its reclaimable page cache (``inactive_file`` /
    ``total_inactive_file`` of ``memory.stat``). ``(None, "unknown")`` when nothing is readable."""
    sys_root, proc_root = Path(sys_root), Path(proc_root)
    found: list[tuple[int, str]] = []
    for line in (_read(proc_root / "meminfo") or "").splitlines():
        if line.startswith("MemAvailable:"):
            fields = line.split()
            if len(fields) >= 2 and fields[1].isdigit():
                found.append((int(fields[1]) * 1024, "MemAvailable"))
    base = sys_root / "fs" / "cgroup"
    rel2, rel1 = _cgroup_rel(proc_root, None), _cgroup_rel(proc_root, "memory")
    levels = [(base.joinpath(*rel2[:i]), "memory.max", "memory.current", "inactive_file")
              for i in range(len(rel2), -1, -1)]
    # v1: the hierarchy is mounted at base/memory; inside a container its root is our cgroup
    levels += [((base / "memory").joinpath(*rel1[:i]), "memory.limit_in_bytes",
                "memory.usage_in_bytes", "total_inactive_file") for i in range(len(rel1), -1, -1)]
    for directory, limit_name, usage_name, reclaimable in levels:
        limit, usage = _int_file(directory / limit_name), _int_file(directory / usage_name)
        if limit is not None and usage is not None and limit < 1 << 60:  # v1 "unlimited" is ~2^63
            # usage counts the page cache; its inactive part is given back under pressure
            usage -= min(usage, _stat_field(directory / "memory.stat", reclaimable))
            found.append((max(0, limit - usage), str(directory / limit_name)))
    if not found:
        return None, "unknown"
    return min(found)


def _numbered(directory: Path, prefix: str) -> list[tuple[int, Path]]:
    try:
        entries = list(directory.iterdir())
    except OSError:
        return []
    found = [(int(e.name[len(prefix):]), e) for e in entries
             if e.name.startswith(prefix) and e.name[len(prefix):].isdigit()]
    return sorted(found)


@dataclass(frozen=True)
class CpuTopology:
    """What this process may run on; ``source`` names the files the answer came from."""

    logical_cpus: int
    allowed_cpus: frozenset[int]
    cores: tuple[frozenset[int], ...]
    usable_cores: int
    quota_cpus: float | None
    usable_cpus: int
    numa_nodes: tuple[frozenset[int], ...]
    source: str

    def describe(self) -> str:
        """One-line human summary, e.g. for an ``fa-gpu info`` command."""
        quota = "none" if self.quota_cpus is None else f"{self.quota_cpus:g}"
        core_word = "core" if self.usable_cores == 1 else "cores"
        node_word = "node" if len(self.numa_nodes) == 1 else "nodes"
        return (f"{self.logical_cpus} logical CPUs, {self.usable_cpus} usable "
                f"(affinity {len(self.allowed_cpus)}, quota {quota}), "
                f"{self.usable_cores} physical {core_word} usable, "
                f"{len(self.numa_nodes)} NUMA {node_word}")


def read_topology(sys_root: str | Path = "/sys", proc_root: str | Path = "/proc",
                  affinity: Iterable[int] | None = None,
                  cpu_count: int | None = None) -> CpuTopology:
    """Read the CPU topology under ``sys_root``/``proc_root``.

    ``affinity`` and ``cpu_count`` default to the live process values
    (``os.sched_getaffinity(0)``, ``os.cpu_count()``); pass them to describe another machine.
    """
    sys_root, proc_root = Path(sys_root), Path(proc_root)
    logical = cpu_count if cpu_count is not None else (os.cpu_count() or 1)
    if affinity is not None:
        allowed, sources = frozenset(affinity), ["affinity=given"]
    elif hasattr(os, "sched_getaffinity"):
        allowed, sources = frozenset(os.sched_getaffinity(0)), ["affinity=sched_getaffinity"]
    else:
        allowed, sources = frozenset(range(logical)), ["affinity=all"]

    cpu_dir = sys_root / "devices" / "system" / "cpu"
    cores: list[frozenset[int]] = []
    core_files = set()
    for cpu in sorted(set(range(logical)) | allowed):
        # A sibling already listed by an earlier CPU is settled, even if its own file is bad.
        if any(cpu in core for core in cores):
            continue
        siblings = None
        for name in ("core_cpus_list", "thread_siblings_list"):
            siblings = _read_cpu_list(cpu_dir / f"cpu{cpu}" / "topology" / name)
            if siblings:
                core_files.add(name)
                break
        # No topology info means we cannot prove any sharing, so assume a full core.
        cores.append((siblings or frozenset()) | {cpu})
    sources.append("cores=" + ("+".join(sorted(core_files)) or "one-per-cpu"))

    quota, quota_files = _cgroup_quota(sys_root, proc_root)
    sources.append("quota=" + (",".join(quota_files) or "none-found"))

    node_dir = sys_root / "devices" / "system" / "node"
    nodes = [_read_cpu_list(path / "cpulist") for _, path in _numbered(node_dir, "node")]
    numa = tuple(n for n in nodes if n is not None)
    if numa:
        sources.append(f"numa={node_dir}")

    cap = math.ceil(quota) if quota is not None else math.inf
    cores_with_allowed = sum(1 for core in cores if core & allowed)
    return CpuTopology(
        logical_cpus=logical,
        allowed_cpus=allowed,
        cores=tuple(cores),
        usable_cores=max(1, min(cores_with_allowed, cap)),
        quota_cpus=quota,
        usable_cpus=max(1, min(len(allowed), cap)),
        numa_nodes=numa,
        source="; ".join(sources),
    )


@functools.lru_cache(maxsize=1)
def cpu_topology() -> CpuTopology:
    """Topology of the running machine, read once per process."""
    return read_topology()


@dataclass(frozen=True)
class PoolSizes:
    """Thread counts for the compute pool (one per core) and the blocking-I/O pool."""

    compute_threads: int
    io_threads: int


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def pool_sizes(topology: CpuTopology | None = None, *, io_multiplier: int = 4,
               io_max: int = 32, compute_threads: int | None = None) -> PoolSizes:
    """Size the thread pools from ``topology`` (default: this machine).

    Compute threads default to usable physical cores, since hyperthread siblings share
    execution units and a second thread per core rarely speeds up numeric work;
    ``compute_threads`` or the ``FA_GPU_NUM_THREADS`` environment variable override that.
    I/O threads mostly wait, so they scale with usable logical CPUs, capped at ``io_max``.
    """
    topo = topology if topology is not None else cpu_topology()
    io_multiplier = _positive_int("io_multiplier", io_multiplier)
    io_max = _positive_int("io_max", io_max)
    if compute_threads is not None:
        compute = _positive_int("compute_threads", compute_threads)
    elif os.environ.get(ENV_NUM_THREADS, "").strip():
        raw = os.environ[ENV_NUM_THREADS]
        try:
            compute = _positive_int(ENV_NUM_THREADS, int(raw))
        except ValueError:
            raise ValueError(
                f"{ENV_NUM_THREADS} must be a positive integer, got {raw!r}") from None
    else:
        compute = topo.usable_cores
    return PoolSizes(compute, max(1, min(io_max, io_multiplier * topo.usable_cpus)))
