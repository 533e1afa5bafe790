import subprocess
import sys
from pathlib import Path

import pytest

from softswitch.stack.host import ensure_kernel_limit
from softswitch.stack.services import running_command

pytestmark = pytest.mark.unit


def test_a_lower_kernel_limit_is_raised(tmp_path: Path) -> None:
    setting = tmp_path / "rmem_max"
    setting.write_text("212992\n")
    assert ensure_kernel_limit(setting, 4194304) == 4194304
    assert setting.read_text() == "4194304\n"


def test_a_higher_kernel_limit_is_left_alone(tmp_path: Path) -> None:
    setting = tmp_path / "rmem_max"
    setting.write_text("8388608\n")
    assert ensure_kernel_limit(setting, 4194304) == 8388608
    assert setting.read_text() == "8388608\n"


def test_an_unwritable_kernel_setting_is_reported_not_fatal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Read-only even for root: stands for a container's read-only /proc/sys.
    read_only = Path("/proc/sys/fs/file-nr")
    in_force = int(read_only.read_text().split()[0])
    assert ensure_kernel_limit(read_only, in_force + 10**9) < in_force + 10**9
    assert "cannot be raised here" in caplog.text


def test_the_command_line_of_a_running_process_is_read_back() -> None:
    command = (sys.executable, "-c", "print('ready', flush=True); import time; time.sleep(30)")
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == "ready\n"  # running its own program by now
        assert running_command(process.pid) == command
    finally:
        process.kill()
        process.wait()
