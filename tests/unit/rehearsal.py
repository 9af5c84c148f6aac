"""Run a container's shell command here, as its non-root user, in a temp root shaped like its image.

No Docker: a mount namespace (``unshare --mount``) and ``chroot`` give the command the container's absolute
paths; ``setpriv`` drops to the container's uid/gid (with ``no_new_privs``, as Kubernetes'
``allowPrivilegeEscalation: false``). Each directory of the image that the command touches is created with the
owner and mode the image gives it (read from our Dockerfiles by :func:`image_dirs`), each volume is a fresh
directory with the owner and mode Docker or the kubelet gives it, and the root is read-only when the container's
is. /usr, /etc, /dev and /proc come from this machine (read-only), so the command runs GNU coreutils and this
machine's shell: a stand-in for the image's, close for POSIX sh and cp (see deploy/GPU.md, "What the rehearsal
proves").

Tools that cannot run here are replaced by test doubles named on PATH (``/rehearsal/bin`` comes first); every
other tool is the real one. Needs root (to create the namespace and drop to another uid): elsewhere the tests
that use it skip with the reason.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PATH = "/rehearsal/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# /bin, /lib, ... are symlinks into /usr on merged-/usr systems (Debian 12): recreated as such.
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib64")
# From this machine's /etc, only what programs need to start (the images' own /etc entries, e.g. /etc/prometheus,
# are created by the image model instead).
ETC_ENTRIES = ("passwd", "group", "nsswitch.conf", "hosts", "resolv.conf", "ld.so.cache", "ld.so.conf",
               "ld.so.conf.d", "alternatives", "localtime", "ssl", "ca-certificates", "mime.types")  # fmt: skip
MAX_PROCESSES = 256  # per run, as RLIMIT_NPROC of the container's uid


def unavailable_reason() -> str | None:
    """Why the rehearsal cannot run on this machine, or None when it can."""
    if os.geteuid() != 0:
        return "the deployment rehearsal needs root (a mount namespace and a switch to the container's uid)"
    for tool in ("unshare", "chroot", "setpriv", "mount", "prlimit"):
        if shutil.which(tool) is None:
            return f"{tool} (util-linux/coreutils) is not installed"
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return f"mount namespaces are not allowed here: {probe.stderr.strip()}"
    return None


@dataclass(frozen=True)
class Owned:
    """Owner and mode of a path in an image or a volume."""

    uid: int = 0
    gid: int = 0
    mode: int = 0o755


# Directories every base image has (Debian/Ubuntu-based NGC and Envoy images alike). /root (0700 there) is left
# out: no deployment command uses it, and this machine's Python may live under it (bound at its own path).
BASE_IMAGE_DIRS = {"/tmp": Owned(0, 0, 0o1777), "/home": Owned(0, 0, 0o755)}


@dataclass
class Image:
    """What the rehearsal takes from one of our images: directories, USER, WORKDIR and ENV."""

    dirs: dict[str, Owned]
    user: Owned
    workdir: str
    env: dict[str, str]


def image_dirs(dockerfile: Path, target: str | None = None) -> Image:
    """Directories an image of ours creates, its USER, WORKDIR and ENV, read from the Dockerfile.

    Understands what our Dockerfiles use: ``RUN mkdir [-p] [-m MODE] PATH...`` (root-owned, as RUN runs as root
    until USER) and ``RUN chmod MODE PATH...`` (octal), ``WORKDIR`` (root-owned 0755 when new), ``USER uid:gid``
    and ``ENV K=V ...``. ``target`` picks
    a stage of a multi-stage file.
    """
    dirs = dict(BASE_IMAGE_DIRS)
    user, workdir, env = Owned(0, 0), "/", {}
    stage = None
    for line in _logical_lines(dockerfile.read_text()):
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "FROM":  # a new stage starts from a base image (our files never build FROM a stage)
            match = re.search(r"\bAS\s+(\S+)", rest, re.IGNORECASE)
            stage = match.group(1) if match else None
            if target is None or stage == target:
                dirs, user, workdir, env = dict(BASE_IMAGE_DIRS), Owned(0, 0), "/", {}
            continue
        if target is not None and stage != target:
            continue
        if word == "WORKDIR":
            workdir = rest.strip()
            dirs.setdefault(workdir, Owned(0, 0, 0o755))
        elif word == "ENV":
            words = shlex.split(rest)
            if words and "=" not in words[0]:
                env[words[0]] = " ".join(words[1:])
            else:
                env.update(w.split("=", 1) for w in words)
        elif word == "USER":
            uid, _, gid = rest.strip().partition(":")
            user = Owned(int(uid), int(gid or uid), 0)
        elif word == "RUN":
            for argv in _commands(rest):
                if argv[:1] == ["chmod"]:  # chmod MODE PATH...: an octal mode on directories made before
                    mode = int(argv[1], 8)
                    for path in argv[2:]:
                        if path not in dirs:
                            raise ValueError(f"{dockerfile}: chmod of {path}, which no earlier line creates")
                        dirs[path] = Owned(dirs[path].uid, dirs[path].gid, mode)
                    continue
                if argv[:1] != ["mkdir"]:
                    continue
                mode, paths, args = 0o755, [], iter(argv[1:])
                for arg in args:
                    if arg == "-m":
                        mode = int(next(args), 8)
                    elif arg.startswith("-m") and len(arg) > 2:
                        mode = int(arg[2:], 8)
                    elif not arg.startswith("-"):
                        paths.append(arg)
                for path in paths:
                    dirs[path] = Owned(0, 0, mode)
    return Image(dirs, user, workdir, env)


def _commands(shell: str) -> list[list[str]]:
    """The simple commands of a shell line (split at ``&&``, ``||``, ``;``, ``|``), quotes respected."""
    lexer = shlex.shlex(shell, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token in ("&&", "||", ";", "|", "&"):
            commands.append([])
        else:
            commands[-1].append(token)
    return [c for c in commands if c]


def _logical_lines(text: str) -> list[str]:
    lines, current = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    return lines


@dataclass
class Mount:
    """A volume or bind mount of the container: ``source`` (a directory here) at ``target``."""

    target: str
    source: Path
    read_only: bool = False


@dataclass
class Container:
    """What the rehearsal needs to know about one container."""

    argv: list[str]
    uid: int
    gid: int
    groups: tuple[int, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    image: dict[str, Owned] = field(default_factory=lambda: dict(BASE_IMAGE_DIRS))
    mounts: list[Mount] = field(default_factory=list)
    read_only_root: bool = False
    # name -> file here: placed in /rehearsal/bin, first on PATH (doubles for tools that cannot run here)
    tools: dict[str, Path] = field(default_factory=dict)


def make_dir(path: Path, owned: Owned) -> Path:
    """Create ``path`` (and parents, root-owned 0755) with exactly this owner and mode."""
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, owned.uid, owned.gid)
    os.chmod(path, owned.mode)
    return path


def run(container: Container, root: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``container.argv`` in a fresh temp root under ``root``; returns the finished process."""
    return subprocess.run(command(container, root), capture_output=True, text=True, timeout=timeout, check=False)


def start(container: Container, root: Path) -> subprocess.Popen[str]:
    """Start ``container.argv`` like :func:`run`, in the background: its PID is the container's PID 1."""
    return subprocess.Popen(command(container, root), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def command(container: Container, root: Path) -> list[str]:
    """Prepare the temp root under ``root``; returns the command that mounts it and runs the container in it."""
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)
    for path, owned in sorted(container.image.items()):
        make_dir(root / path.lstrip("/"), owned)
    for name in ("bin", "sbin", "lib", "lib64"):
        host = Path("/") / name
        if host.is_symlink():
            (root / name).symlink_to(os.readlink(host))
    bindir = make_dir(root / "rehearsal" / "bin", Owned(0, 0, 0o755))
    for name in container.tools:
        (bindir / name).touch()
        os.chmod(bindir / name, 0o755)

    script = ["set -e", f"R={shlex.quote(str(root))}", 'mount --bind "$R" "$R"']

    def bind(source: str | Path, target: str, read_only: bool, recursive: bool = False, is_file: bool = False):
        dest = f'"$R"{shlex.quote(target)}'
        script.append(f"[ -e {dest} ] || touch {dest}" if is_file else f"mkdir -p {dest}")
        script.append(f"mount {'--rbind' if recursive else '--bind'} {shlex.quote(str(source))} {dest}")
        if read_only:
            script.append(f"mount -o remount,bind,ro {dest}")

    for system in SYSTEM_DIRS:
        host = Path(system)
        if host.is_dir() and not host.is_symlink():
            bind(host, system, read_only=True)
    make_dir(root / "etc", Owned(0, 0, 0o755))
    for entry in ETC_ENTRIES:
        host = Path("/etc") / entry
        if host.exists():
            bind(host.resolve(), f"/etc/{entry}", read_only=True, is_file=host.resolve().is_file())
    bind("/dev", "/dev", read_only=False, recursive=True)
    bind("/proc", "/proc", read_only=False, recursive=True)
    for mount in container.mounts:
        bind(mount.source, mount.target, read_only=mount.read_only, is_file=mount.source.is_file())
    # The project's venv and the interpreter it links to, at their own paths (shebangs are absolute). Bound after
    # the container's mounts: a checkout under /tmp (CI's clone, say) must not be hidden by the container's /tmp.
    bind(ROOT, str(ROOT), read_only=True)
    base = Path(sys.base_prefix).resolve()
    if not str(base).startswith(("/usr/", str(ROOT))):
        bind(base, str(base), read_only=True)
    for name, tool in container.tools.items():
        bind(tool, f"/rehearsal/bin/{name}", read_only=True, is_file=True)
    if container.read_only_root:
        script.append('mount -o remount,bind,ro "$R"')
    groups = ",".join(str(g) for g in (container.groups or (container.gid,)))
    env = {"PATH": PATH, **container.env}
    drop = [
        "chroot", str(root), "/usr/bin/setpriv", f"--reuid={container.uid}", f"--regid={container.gid}",
        f"--groups={groups}", "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all",
        "/usr/bin/env", "-i", f"--chdir={container.workdir}", *(f"{k}={v}" for k, v in env.items()),
        *container.argv,
    ]  # fmt: skip
    # RLIMIT_NPROC for the container's uid: a runaway command (a fork loop) stops here, not at the machine's limit.
    script.append("exec " + shlex.join(["prlimit", f"--nproc={MAX_PROCESSES}", *drop]))
    # every step execs the next: the container's command keeps this process' PID (signals reach it)
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", "\n".join(script)]


def tree(path: Path) -> dict[str, tuple[int, int, str]]:
    """Every path under ``path``: (uid, gid, mode as octal string), for assertions and messages."""
    out = {}
    for entry in sorted(path.rglob("*")):
        st = entry.lstat()
        out[str(entry.relative_to(path))] = (st.st_uid, st.st_gid, oct(st.st_mode & 0o7777))
    return out
