"""The Debian sid chroot holding Asterisk 22 and Kamailio 6.1.

Built once with debootstrap into a folder outside the checkout and reused by every clone on
the machine. A marker written only after the last install step tells a complete chroot from
a half-built one, which is rebuilt.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from softswitch.settings import StackSettings
from softswitch.stack.host import StackError, ensure_packages, run

MARKER = Path("etc/softswitch-chroot.json")
ASTERISK_PACKAGES = ["asterisk", "asterisk-modules", "asterisk-core-sounds-en-gsm"]
KAMAILIO_PACKAGES = [
    "kamailio",
    "kamailio-extra-modules",  # http_async_client, jansson
    "kamailio-json-modules",  # json, jsonrpcc
    "kamailio-utils-modules",  # http_client
    "kamailio-postgres-modules",  # db_postgres for auth_db and usrloc
]


def chroot_ready(settings: StackSettings) -> bool:
    return (settings.chroot_dir / MARKER).is_file()


def chroot_versions(settings: StackSettings) -> dict[str, str]:
    marker = settings.chroot_dir / MARKER
    if not marker.is_file():
        return {}
    versions: dict[str, str] = json.loads(marker.read_text())["versions"]
    return versions


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve())
    with open("/proc/mounts") as mounts:
        points = [line.split()[1] for line in mounts]
    return [p for p in points if p == prefix or p.startswith(prefix + "/")]


def _remove_tree(path: Path) -> None:
    if not path.exists():
        return
    if mounted := _mounts_under(path):
        # rm -rf through a bind mount would delete host files.
        raise StackError(f"refusing to delete {path}: mounted inside: {mounted}")
    shutil.rmtree(path)


def ensure_chroot(settings: StackSettings) -> bool:
    """A complete chroot at settings.chroot_dir; True when it had to be built."""
    if chroot_ready(settings):
        return False
    ensure_packages(["debootstrap"])
    target = settings.chroot_dir
    building = target.with_name(target.name + ".building")
    _remove_tree(building)
    building.parent.mkdir(parents=True, exist_ok=True)
    run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(ASTERISK_PACKAGES)}",
            settings.suite,
            str(building),
            settings.debian_mirror,
        ],
        timeout=1800,
    )
    # Nothing installed in the chroot may start itself; the stack starts what it needs.
    policy = building / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    run(
        [
            "chroot",
            str(building),
            "apt-get",
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            *KAMAILIO_PACKAGES,
        ],
        env={"DEBIAN_FRONTEND": "noninteractive"},
        timeout=1800,
    )
    versions = _installed_versions(building, [*ASTERISK_PACKAGES, *KAMAILIO_PACKAGES])
    (building / MARKER).write_text(
        json.dumps({"suite": settings.suite, "versions": versions}, indent=2) + "\n"
    )
    _remove_tree(target)
    building.rename(target)
    return True


def _installed_versions(root: Path, packages: list[str]) -> dict[str, str]:
    result = subprocess.run(
        ["chroot", str(root), "dpkg-query", "-W", "-f=${Package} ${Version}\n", *packages],
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(line.split(" ", 1) for line in result.stdout.splitlines() if " " in line)
