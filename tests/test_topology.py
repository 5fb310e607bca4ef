"""Tests for fa_gpu.runtime.topology against fake /sys and /proc trees."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from fa_gpu.runtime.topology import (
    CpuTopology,
    PoolSizes,
    cpu_topology,
    parse_cpu_list,
    pool_sizes,
    read_topology,
)


@pytest.fixture(autouse=True)
def _no_thread_env(monkeypatch):
    # A developer's own FA_GPU_NUM_THREADS must not change the expected defaults.
    monkeypatch.delenv("FA_GPU_NUM_THREADS", raising=False)


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def fake_sys(root: Path, cores: dict[int, str] | None = None,
             kind: str = "core_cpus_list") -> Path:
    """Build root/sys with one topology file of `kind` per CPU in `cores`."""
    sys_root = root / "sys"
    (sys_root / "devices" / "system" / "cpu").mkdir(parents=True)
    for cpu, siblings in (cores or {}).items():
        write(sys_root / "devices/system/cpu" / f"cpu{cpu}" / "topology" / kind, siblings + "\n")
    return sys_root


def read(tmp_path: Path, sys_root: Path, n: int = 4, affinity=None) -> CpuTopology:
    proc_root = tmp_path / "proc"
    proc_root.mkdir(exist_ok=True)
    return read_topology(sys_root, proc_root, affinity=range(n) if affinity is None else affinity,
                         cpu_count=n)


HT_INTERLEAVED = {0: "0,2", 1: "1,3", 2: "0,2", 3: "1,3"}
HT_ADJACENT = {0: "0-1", 1: "0-1", 2: "2-3", 3: "2-3"}


def make_topology(**changes) -> CpuTopology:
    base = CpuTopology(logical_cpus=8, allowed_cpus=frozenset(range(4)),
                       cores=tuple(frozenset({i}) for i in range(8)), usable_cores=2,
                       quota_cpus=None, usable_cpus=4, numa_nodes=(), source="test")
    return dataclasses.replace(base, **changes)


# --- cpu list parsing -------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("0-3,8,10-11", {0, 1, 2, 3, 8, 10, 11}),
    ("5\n", {5}),
    (" 0 , 2 ,4-5\n", {0, 2, 4, 5}),
    ("7-7", {7}),
    ("", set()),
    ("\n", set()),
])
def test_parse_cpu_list(text, expected):
    assert parse_cpu_list(text) == frozenset(expected)


@pytest.mark.parametrize("text", ["a", "3-1", "0,,1", "1-", "0-3,", "-1", "0x2", "1 2"])
def test_parse_cpu_list_rejects_malformed(text):
    with pytest.raises(ValueError, match="cpu list"):
        parse_cpu_list(text)


# --- physical cores ---------------------------------------------------------------------

@pytest.mark.parametrize("layout, expected", [
    (HT_INTERLEAVED, (frozenset({0, 2}), frozenset({1, 3}))),
    (HT_ADJACENT, (frozenset({0, 1}), frozenset({2, 3}))),
])
def test_hyperthreaded_cpus_group_into_cores(tmp_path, layout, expected):
    topo = read(tmp_path, fake_sys(tmp_path, layout))
    assert topo.cores == expected
    assert topo.usable_cores == 2
    assert topo.usable_cpus == 4
    assert topo.logical_cpus == 4
    assert "cores=core_cpus_list" in topo.source


def test_thread_siblings_list_fallback(tmp_path):
    topo = read(tmp_path, fake_sys(tmp_path, HT_ADJACENT, kind="thread_siblings_list"))
    assert topo.cores == (frozenset({0, 1}), frozenset({2, 3}))
    assert topo.usable_cores == 2
    assert "cores=thread_siblings_list" in topo.source


def test_core_cpus_list_preferred_over_thread_siblings(tmp_path):
    sys_root = fake_sys(tmp_path, HT_ADJACENT)
    for cpu in range(4):
        write(sys_root / f"devices/system/cpu/cpu{cpu}/topology/thread_siblings_list", f"{cpu}")
    assert read(tmp_path, sys_root).usable_cores == 2


def test_no_topology_files_means_one_core_per_cpu(tmp_path):
    topo = read(tmp_path, fake_sys(tmp_path))
    assert topo.cores == tuple(frozenset({i}) for i in range(4))
    assert topo.usable_cores == 4
    assert "cores=one-per-cpu" in topo.source


def test_missing_sys_tree_entirely(tmp_path):
    topo = read(tmp_path, tmp_path / "does-not-exist", n=3)
    assert topo.usable_cores == 3
    assert topo.quota_cpus is None
    assert topo.numa_nodes == ()


def test_malformed_and_unreadable_core_files_fall_back_per_cpu(tmp_path):
    sys_root = fake_sys(tmp_path, {0: "0-1", 1: "garbage", 2: "2-3"})
    # A directory where a file should be makes read_text raise IsADirectoryError.
    (sys_root / "devices/system/cpu/cpu3/topology/core_cpus_list").mkdir(parents=True)
    topo = read(tmp_path, sys_root)
    assert topo.cores == (frozenset({0, 1}), frozenset({2, 3}))
    assert topo.usable_cores == 2


def test_affinity_on_one_hyperthread_pair_gives_one_core(tmp_path):
    topo = read(tmp_path, fake_sys(tmp_path, HT_INTERLEAVED), affinity={0, 2})
    assert topo.allowed_cpus == frozenset({0, 2})
    assert topo.usable_cores == 1
    assert topo.usable_cpus == 2
    assert len(topo.cores) == 2


def test_affinity_spanning_two_cores(tmp_path):
    topo = read(tmp_path, fake_sys(tmp_path, HT_INTERLEAVED), affinity={0, 1})
    assert topo.usable_cores == 2
    assert topo.usable_cpus == 2


# --- cgroup quota -----------------------------------------------------------------------

def eight_cpu_four_core_sys(tmp_path: Path) -> Path:
    return fake_sys(tmp_path, {cpu: f"{cpu - cpu % 2}-{cpu - cpu % 2 + 1}" for cpu in range(8)})


def test_cgroup_v2_fractional_quota_rounds_up_and_caps_cores(tmp_path):
    sys_root = eight_cpu_four_core_sys(tmp_path)
    write(sys_root / "fs/cgroup/cpu.max", "150000 100000\n")
    topo = read(tmp_path, sys_root, n=8)
    assert topo.quota_cpus == 1.5
    assert topo.usable_cpus == 2
    assert len(topo.cores) == 4
    assert topo.usable_cores == 2
    assert str(sys_root / "fs/cgroup/cpu.max") in topo.source


def test_cgroup_v2_quota_below_one_cpu_still_gives_one(tmp_path):
    sys_root = eight_cpu_four_core_sys(tmp_path)
    write(sys_root / "fs/cgroup/cpu.max", "50000 100000")
    topo = read(tmp_path, sys_root, n=8)
    assert topo.quota_cpus == 0.5
    assert (topo.usable_cpus, topo.usable_cores) == (1, 1)


def test_cgroup_v2_max_is_unlimited(tmp_path):
    sys_root = eight_cpu_four_core_sys(tmp_path)
    write(sys_root / "fs/cgroup/cpu.max", "max 100000\n")
    topo = read(tmp_path, sys_root, n=8)
    assert topo.quota_cpus is None
    assert (topo.usable_cpus, topo.usable_cores) == (8, 4)


def test_cgroup_v2_nested_path_from_proc_self_cgroup(tmp_path):
    sys_root = eight_cpu_four_core_sys(tmp_path)
    write(sys_root / "fs/cgroup/cpu.max", "max 100000")
    write(sys_root / "fs/cgroup/app/worker/cpu.max", "300000 100000")
    write(tmp_path / "proc/self/cgroup", "0::/app/worker\n")
    topo = read(tmp_path, sys_root, n=8)
    assert topo.quota_cpus == 3.0
    assert topo.usable_cpus == 3
    assert topo.usable_cores == 3


def test_cgroup_v2_tighter_ancestor_wins(tmp_path):
    sys_root = eight_cpu_four_core_sys(tmp_path)
    write(sys_root / "fs/cgroup/app/cpu.max", "100000 100000")
    write(sys_root / "fs/cgroup/app/worker/cpu.max", "400000 100000")
    write(tmp_path / "proc/self/cgroup", "0::/app/worker\n")
    assert read(tmp_path, sys_root, n=8).quota_cpus == 1.0


def test_cgroup_v2_missing_nested_dir_falls_back_to_root(tmp_path):
    sys_root = eight_cpu_four_core_sys(tmp_path)
    write(sys_root / "fs/cgroup/cpu.max", "250000 100000")
    write(tmp_path / "proc/self/cgroup", "0::/not/mounted/here\n")
    topo = read(tmp_path, sys_root, n=8)
    assert topo.quota_cpus == 2.5
    assert topo.usable_cpus == 3


def test_cgroup_path_outside_namespace_uses_root_only(tmp_path):
    sys_root = eight_cpu_four_core_sys(tmp_path)
    write(sys_root / "fs/cgroup/cpu.max", "200000 100000")
    write(tmp_path / "proc/self/cgroup", "0::/../../elsewhere\n")
    assert read(tmp_path, sys_root, n=8).quota_cpus == 2.0


@pytest.mark.parametrize("v1_dir", ["cpu", "cpu,cpuacct"])
def test_cgroup_v1_quota_and_period(tmp_path, v1_dir):
    sys_root = eight_cpu_four_core_sys(tmp_path)
    write(sys_root / "fs/cgroup" / v1_dir / "cpu.cfs_quota_us", "250000\n")
    write(sys_root / "fs/cgroup" / v1_dir / "cpu.cfs_period_us", "100000\n")
    topo = read(tmp_path, sys_root, n=8)
    assert topo.quota_cpus == 2.5
    assert (topo.usable_cpus, topo.usable_cores) == (3, 3)
    assert "cpu.cfs_quota_us" in topo.source


def test_cgroup_v1_minus_one_is_unlimited(tmp_path):
    sys_root = eight_cpu_four_core_sys(tmp_path)
    write(sys_root / "fs/cgroup/cpu/cpu.cfs_quota_us", "-1\n")
    write(sys_root / "fs/cgroup/cpu/cpu.cfs_period_us", "100000\n")
    topo = read(tmp_path, sys_root, n=8)
    assert topo.quota_cpus is None
    assert topo.usable_cpus == 8


def test_cgroup_v1_quota_without_period_ignored(tmp_path):
    sys_root = eight_cpu_four_core_sys(tmp_path)
    write(sys_root / "fs/cgroup/cpu/cpu.cfs_quota_us", "100000\n")
    assert read(tmp_path, sys_root, n=8).quota_cpus is None


@pytest.mark.parametrize("content", ["garbage", "100000", "abc 100000", "0 100000",
                                     "100000 0", "1 2 3", ""])
def test_malformed_cpu_max_is_ignored(tmp_path, content):
    sys_root = eight_cpu_four_core_sys(tmp_path)
    write(sys_root / "fs/cgroup/cpu.max", content)
    topo = read(tmp_path, sys_root, n=8)
    assert topo.quota_cpus is None
    assert (topo.usable_cpus, topo.usable_cores) == (8, 4)


def test_malformed_cpu_max_falls_through_to_valid_v1(tmp_path):
    sys_root = eight_cpu_four_core_sys(tmp_path)
    write(sys_root / "fs/cgroup/cpu.max", "nonsense")
    write(sys_root / "fs/cgroup/cpu/cpu.cfs_quota_us", "200000")
    write(sys_root / "fs/cgroup/cpu/cpu.cfs_period_us", "100000")
    assert read(tmp_path, sys_root, n=8).quota_cpus == 2.0


def test_quota_and_affinity_both_cap_usable_cpus(tmp_path):
    sys_root = eight_cpu_four_core_sys(tmp_path)
    write(sys_root / "fs/cgroup/cpu.max", "600000 100000")
    topo = read(tmp_path, sys_root, n=8, affinity={0, 1, 2})
    assert topo.usable_cpus == 3  # affinity is tighter than the 6-CPU quota
    assert topo.usable_cores == 2


# --- NUMA -------------------------------------------------------------------------------

def test_numa_nodes_parsed_in_numeric_order(tmp_path):
    sys_root = fake_sys(tmp_path, HT_ADJACENT)
    node_dir = sys_root / "devices/system/node"
    write(node_dir / "node0/cpulist", "0-1\n")
    write(node_dir / "node1/cpulist", "2-3\n")
    write(node_dir / "node10/cpulist", "\n")  # memory-only node: no CPUs
    write(node_dir / "possible", "0-1,10\n")  # not a node directory
    topo = read(tmp_path, sys_root)
    assert topo.numa_nodes == (frozenset({0, 1}), frozenset({2, 3}), frozenset())


def test_numa_absent_gives_empty_tuple_and_malformed_node_skipped(tmp_path):
    sys_root = fake_sys(tmp_path, HT_ADJACENT)
    assert read(tmp_path, sys_root).numa_nodes == ()
    write(sys_root / "devices/system/node/node0/cpulist", "zero-one")
    write(sys_root / "devices/system/node/node1/cpulist", "0-3")
    assert read(tmp_path, sys_root).numa_nodes == (frozenset(range(4)),)


# --- describe ---------------------------------------------------------------------------

def test_describe(tmp_path):
    topo = read(tmp_path, fake_sys(tmp_path, {0: "0-1", 1: "0-1"}), n=2)
    assert topo.describe() == ("2 logical CPUs, 2 usable (affinity 2, quota none), "
                               "1 physical core usable, 0 NUMA nodes")
    quoted = make_topology(quota_cpus=1.5, usable_cpus=2, numa_nodes=(frozenset({0}),))
    assert quoted.describe() == ("8 logical CPUs, 2 usable (affinity 4, quota 1.5), "
                                 "2 physical cores usable, 1 NUMA node")


# --- pool sizes -------------------------------------------------------------------------

def test_pool_sizes_default():
    sizes = pool_sizes(make_topology())
    assert sizes == PoolSizes(compute_threads=2, io_threads=16)
    with pytest.raises(dataclasses.FrozenInstanceError):
        sizes.io_threads = 1  # type: ignore[misc]


def test_pool_sizes_io_cap_and_multiplier():
    topo = make_topology(usable_cpus=64, usable_cores=32)
    assert pool_sizes(topo) == PoolSizes(32, 32)
    assert pool_sizes(topo, io_max=100, io_multiplier=1) == PoolSizes(32, 64)
    assert pool_sizes(make_topology(usable_cpus=1, usable_cores=1)) == PoolSizes(1, 4)


def test_pool_sizes_compute_override():
    assert pool_sizes(make_topology(), compute_threads=7) == PoolSizes(7, 16)


def test_pool_sizes_env_override(monkeypatch):
    monkeypatch.setenv("FA_GPU_NUM_THREADS", "3")
    assert pool_sizes(make_topology()).compute_threads == 3
    assert pool_sizes(make_topology(), compute_threads=5).compute_threads == 5


def test_pool_sizes_empty_env_is_unset(monkeypatch):
    monkeypatch.setenv("FA_GPU_NUM_THREADS", "")
    assert pool_sizes(make_topology()).compute_threads == 2


@pytest.mark.parametrize("value", ["abc", "0", "-2", "1.5"])
def test_pool_sizes_bad_env_value(monkeypatch, value):
    monkeypatch.setenv("FA_GPU_NUM_THREADS", value)
    with pytest.raises(ValueError) as excinfo:
        pool_sizes(make_topology())
    assert str(excinfo.value) == f"FA_GPU_NUM_THREADS must be a positive integer, got {value!r}"


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "4"])
def test_pool_sizes_invalid_compute_threads(value):
    with pytest.raises(ValueError, match="^compute_threads must be a positive integer"):
        pool_sizes(make_topology(), compute_threads=value)


@pytest.mark.parametrize("name", ["io_multiplier", "io_max"])
def test_pool_sizes_invalid_io_arguments(name):
    with pytest.raises(ValueError, match=f"^{name} must be a positive integer"):
        pool_sizes(make_topology(), **{name: 0})


# --- the real machine -------------------------------------------------------------------

def test_real_machine_topology_is_self_consistent():
    topo = cpu_topology()
    assert cpu_topology() is topo  # cached
    assert topo.logical_cpus >= 1
    assert 1 <= topo.usable_cpus <= topo.logical_cpus
    assert 1 <= topo.usable_cores <= topo.usable_cpus
    assert topo.usable_cpus <= len(topo.allowed_cpus)
    assert topo.allowed_cpus <= frozenset().union(*topo.cores)
    sizes = pool_sizes(topo)
    assert sizes.compute_threads == topo.usable_cores
    assert 1 <= sizes.io_threads <= 32
