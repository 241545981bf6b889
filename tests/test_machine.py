"""What a command may take of the machine, and the thread policy that keeps it fair on a busy one."""

import os
import re
import resource
import subprocess
import sys

import pytest
from conftest import BIN, DEMO_ONNX

from occnet.runtime import machine
from occnet.runtime.machine import available_cores, available_memory, thread_environment
from occnet.runtime.session import OccupancyModel

AFFINITY = len(os.sched_getaffinity(0))


@pytest.mark.parametrize("text,cores", [("max 100000\n", AFFINITY), ("50000 100000\n", 1), ("100000 100000", 1),
                                        ("150000 100000\n", min(AFFINITY, 2)), (f"{AFFINITY + 5}00000 100000",
                                                                                AFFINITY), ("garbage", AFFINITY)])
def test_a_container_quota_caps_the_cores(tmp_path, monkeypatch, text, cores):
    (tmp_path / "cpu.max").write_text(text)
    monkeypatch.setattr(machine, "CGROUP_CPU_MAX", tmp_path / "cpu.max")
    assert available_cores() == cores


@pytest.mark.parametrize("quota,cores", [("-1", AFFINITY), ("25000", 1), ("300000", min(AFFINITY, 3))])
def test_a_cgroup_v1_quota_caps_the_cores(tmp_path, monkeypatch, quota, cores):
    (tmp_path / "quota").write_text(quota)
    (tmp_path / "period").write_text("100000")
    monkeypatch.setattr(machine, "CGROUP_CPU_MAX", tmp_path / "absent")
    monkeypatch.setattr(machine, "CGROUP_V1_QUOTA", tmp_path / "quota")
    monkeypatch.setattr(machine, "CGROUP_V1_PERIOD", tmp_path / "period")
    assert available_cores() == cores


def test_thread_environment_sleeps_idle_threads_and_keeps_what_the_user_set(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert thread_environment() == {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": str(available_cores())}
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert thread_environment() == {"OMP_WAIT_POLICY": "ACTIVE", "OMP_NUM_THREADS": "1"}


def test_a_command_has_its_thread_environment_before_torch_loads(tmp_path):
    """The OpenMP runtime reads its environment once, when torch loads: the command must set it first."""
    script = tmp_path / "probe.py"
    script.write_text(
        "import os, sys, typer\n"
        "from occnet.runtime.console import run_app\n"
        "app = typer.Typer()\n"
        "@app.command()\n"
        "def probe() -> None:\n"
        "    print(os.environ['OMP_WAIT_POLICY'], os.environ['OMP_NUM_THREADS'], 'torch' in sys.modules)\n"
        "run_app(app, 'probe', [])\n")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["PASSIVE", str(available_cores()), "False"]


def test_onnxruntime_sessions_do_not_spin_and_take_the_usable_cores():
    options = OccupancyModel(DEMO_ONNX, device="cpu")._session.get_session_options()
    assert options.intra_op_num_threads == available_cores()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.get_session_config_entry("session.inter_op.allow_spinning") == "0"
    assert OccupancyModel(DEMO_ONNX, device="cpu", threads=1)._session.get_session_options().intra_op_num_threads == 1


@pytest.mark.parametrize("files,left", [
    ({"memory.max": "1073741824\n", "memory.current": "536870912\n",
      "memory.stat": "anon 1\ninactive_file 268435456\n"}, 2**30 - 2**28),
    ({"memory.max": "max\n", "memory.current": "536870912\n"}, None),
    ({"memory.max": "1073741824\n", "memory.current": "garbage"}, None),
])
def test_a_container_memory_limit_less_its_use_bounds_the_memory(tmp_path, monkeypatch, files, left):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    monkeypatch.setattr(machine, "CGROUP_MEMORY", tmp_path)
    monkeypatch.setattr(machine, "CGROUP_V1_MEMORY", tmp_path / "absent")
    container = "the container's memory limit"
    assert (available_memory() == machine.Memory(left, container)) if left else available_memory().limit != container


@pytest.mark.parametrize("limit,left", [("9223372036854771712", None), ("2147483648", 2**31 - 3 * 2**28)])
def test_a_cgroup_v1_memory_limit_bounds_the_memory(tmp_path, monkeypatch, limit, left):
    (tmp_path / "memory.limit_in_bytes").write_text(limit)
    (tmp_path / "memory.usage_in_bytes").write_text(str(2**30))
    (tmp_path / "memory.stat").write_text(f"inactive_file 5\ntotal_inactive_file {2**28}\n")
    monkeypatch.setattr(machine, "CGROUP_MEMORY", tmp_path / "absent")
    monkeypatch.setattr(machine, "CGROUP_V1_MEMORY", tmp_path)
    container = "the container's memory limit"
    assert (available_memory() == machine.Memory(left, container)) if left else available_memory().limit != container


def test_ulimit_v_is_heeded_and_named_by_a_real_command(tmp_path):
    """Under ``ulimit -v`` of 3 GB on a machine with more free memory, occ-mesh refuses a 4096^3 extraction
    up front, naming the limit and the largest resolution that fits, instead of dying of a bare MemoryError."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (3 * 2**30, resource.RLIM_INFINITY))

    result = subprocess.run([str(BIN / "occ-mesh"), str(DEMO_ONNX), "-o", str(tmp_path / "m.ply"), "--resolution",
                             "4096"], capture_output=True, text=True, preexec_fn=limit, timeout=120)
    assert result.returncode == 1, result.stderr
    found = re.fullmatch(r"occ-mesh: error: resolution 4096 needs about [\d.]+ GiB, only [\d.]+ GiB \(this "
                         r"process's ulimit -v\) is available; resolution (\d+) is the largest that would fit\n",
                         result.stderr)
    assert found, result.stderr
    assert 600 < int(found[1]) < 4096 and list(tmp_path.iterdir()) == []
