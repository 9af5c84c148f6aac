"""`make doctor`: each check passes on this machine and fails, with its fix, where it should."""

import re
import socket
import subprocess
import sys
import venv
from pathlib import Path

from trimodal import doctor

ROOT = Path(__file__).resolve().parents[2]


def test_python_versions() -> None:
    assert doctor.check_python((3, 11)).status == "ok"
    for version in ((3, 9), (3, 13), (3, 14)):
        check = doctor.check_python(version)
        assert check.status == "fail" and "python3.12" in check.detail


def test_pyproject_refuses_the_pythons_doctor_refuses() -> None:
    requires = re.search(r'^requires-python = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    assert requires and requires.group(1) == ">=3.10,<3.13"
    assert doctor.SUPPORTED_PYTHON == ((3, 10), (3, 12))


def test_venv_module_missing_names_the_apt_package() -> None:
    assert doctor.check_venv_module(True).status == "ok"
    check = doctor.check_venv_module(False, (3, 11))
    assert check.status == "fail" and "python3-venv" in check.detail and "python3.11-venv" in check.detail


def test_glibc() -> None:
    assert doctor.glibc_version(lambda name: "glibc 2.36") == (2, 36)
    assert doctor.glibc_version(lambda name: None) is None
    assert doctor.glibc_version() is not None, "this machine is glibc"
    assert doctor.check_glibc((2, 36)).status == "ok" and doctor.check_glibc((2, 35)).status == "ok"
    assert doctor.check_glibc((2, 31)).status == "fail" and doctor.check_glibc(None).status == "fail"


def test_disk(tmp_path: Path) -> None:
    assert doctor.check_disk(tmp_path, 0.001).status == "ok"
    assert doctor.check_disk(tmp_path, 1e9).status == "fail"


def test_ports_taken_are_named() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        check = doctor.check_ports([port])
        assert check.status == "fail" and str(port) in check.detail
    assert doctor.check_ports([port], is_free=lambda p: True).status == "ok"


def test_apt_without_root_sudo_or_apt_says_what_to_install() -> None:
    def which(tool):
        return f"/usr/bin/{tool}" if tool in ("dpkg", "apt-get") else None

    missing = doctor.check_apt(installed=lambda p: p != "libb64-0d", is_root=False, has=which)
    assert missing.status == "fail" and "apt-get install -y libb64-0d" in missing.detail
    assert "perf_analyzer" in missing.detail
    assert doctor.check_apt(installed=lambda p: False, is_root=True, has=which).status == "ok"
    assert doctor.check_apt(installed=lambda p: True, is_root=False, has=which).status == "ok"
    no_apt = doctor.check_apt(has=lambda tool: None)
    assert no_apt.status == "warn" and "libb64.so.0d" in no_apt.detail


def test_a_half_made_venv_is_detected_and_removed(tmp_path: Path) -> None:
    broken = tmp_path / "venv"
    (broken / "bin").mkdir(parents=True)  # what a failed `python -m venv` (no ensurepip) can leave
    assert doctor.venv_state(broken) == "broken"
    assert doctor.check_venv(broken).status == "warn"
    assert doctor.check_venv(broken, repair=True).status == "ok" and not broken.exists()
    assert doctor.venv_state(broken) == "absent"


def test_a_venv_without_pip_is_broken_and_one_with_pip_is_partial(tmp_path: Path) -> None:
    venv.create(tmp_path / "nopip", with_pip=False)
    assert doctor.venv_state(tmp_path / "nopip") == "broken"
    venv.create(tmp_path / "withpip", with_pip=True)  # made, but make's install never finished: no marker
    assert doctor.venv_state(tmp_path / "withpip") == "partial"
    assert "the install did not finish" in doctor.check_venv(tmp_path / "withpip").detail
    (tmp_path / "withpip" / ".installed").touch()
    assert doctor.venv_state(tmp_path / "withpip") == "complete"
    assert doctor.venv_state(ROOT / ".venv") == "complete"
    assert doctor.check_stub(ROOT / ".venv").status == "ok"
    assert doctor.check_stub(ROOT / ".venv", (3, 99)).status == "fail"


def test_the_script_runs_with_the_standard_library_only() -> None:
    """`make` runs it with the system python3 before the venv exists: -I -S keeps site-packages out."""
    done = subprocess.run([sys.executable, "-I", "-S", str(ROOT / "trimodal/doctor.py"), "--venv", str(ROOT / ".venv")],
                          capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "doctor: ready" in done.stdout and "glibc" in done.stdout


def test_readme_asks_for_the_disk_the_doctor_checks() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"**Disk**: about {doctor.MIN_FREE_GB:g} GB free" in readme
