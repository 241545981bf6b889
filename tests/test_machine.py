"""What a command may take of the machine, and the thread policy that keeps it fair on a busy one."""

import os
import subprocess
import sys

import pytest
from conftest import DEMO_ONNX

from occnet.runtime import machine
from occnet.runtime.machine import available_cores, thread_environment
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
