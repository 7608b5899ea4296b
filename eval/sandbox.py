"""The OS-level sandbox for `execution.py`: a bubblewrap (`bwrap`) command line and its seccomp filter.

bubblewrap (github.com/containers/bubblewrap) is the unprivileged namespace launcher Flatpak uses. Each program
gets fresh user, pid, network, mount, ipc, uts and cgroup namespaces (`--unshare-all --unshare-user`), no
capabilities, its own session, and is its pid namespace's pid 1 and only process. It sees `/` read-only, with
the evaluating user's homes and runtime folders hidden behind empty read-only tmpfs, private size-capped tmpfs
for /tmp (its working folder) and /dev/shm, a minimal /dev, and the /proc of its own pid namespace. When it
exits or is killed, the namespace dies and the kernel kills everything left in it (pid_namespaces(7)).

The seccomp filter (seccomp(2), classic BPF over `struct seccomp_data`) refuses new processes: fork, vfork and
clone without CLONE_THREAD fail with EPERM; clone3, whose flags BPF cannot read, fails with ENOSYS so that
glibc falls back to clone. Threads still work. This is what bounds a fork bomb when the evaluator is root,
where RLIMIT_NPROC is never enforced.
"""
from __future__ import annotations

import functools
import os
import platform
import shutil
import struct
import subprocess
import sys

WORKDIR = "/tmp"  # inside the sandbox: the program's cwd, HOME and TMPDIR, on a private tmpfs
# Replaced by empty read-only tmpfs: where the evaluator's secrets live (API keys in ~/.netrc, tokens in
# ~/.cache, sockets in /run). The interpreter is bound back read-only where it lives under one of them.
HIDDEN = ("/root", "/home", "/run", "/var/tmp")
INSTALL_HINT = ("install bubblewrap (Debian/Ubuntu: `apt-get install bubblewrap`, Fedora: `dnf install "
                "bubblewrap`)")
OPT_IN_HINT = ("or opt in to the weaker in-process guard, which hostile code can undo, with isolation='guard' "
               "(MBPP: task.isolation=guard)")


class SandboxUnavailable(RuntimeError):
    """bubblewrap is missing or cannot create namespaces here; the message says what to install or enable."""


def bwrap_path() -> str:
    """The `bwrap` executable, or SandboxUnavailable saying how to get one or how to opt out."""
    path = shutil.which("bwrap")
    if path is None:
        raise SandboxUnavailable(f"isolation='sandbox' needs bubblewrap (`bwrap`), which is not on PATH: "
                                 f"{INSTALL_HINT}, {OPT_IN_HINT}.")
    _probe(path)
    return path


@functools.cache
def _probe(path: str) -> None:
    """Run `true` in a sandbox once per process: namespaces can be disabled (sysctl, container seccomp)."""
    try:
        seccomp = data_fd(seccomp_filter())
        try:
            argv = command(path, tmpfs_mb=1, env=minimal_env(), fds={"seccomp": seccomp}) + ["/bin/true"]
            done = subprocess.run(argv, env=minimal_env(), stdin=subprocess.DEVNULL, capture_output=True,
                                  pass_fds=(seccomp,), timeout=60)
        finally:
            os.close(seccomp)
        failure = done.stderr.decode(errors="replace").strip() or "no message" if done.returncode else ""
    except (OSError, subprocess.SubprocessError) as e:
        failure = repr(e)
    if failure:
        raise SandboxUnavailable(
            f"bubblewrap ({path}) could not create a sandbox: {failure}. It needs bubblewrap 0.8 or newer "
            f"(--disable-userns, --size) and user namespaces: enable them (sysctl kernel.unprivileged_userns_clone=1 "
            f"and user.max_user_namespaces > 0; in a container, a seccomp/AppArmor profile that allows unshare and "
            f"mount), {OPT_IN_HINT}.")


def minimal_env() -> dict[str, str]:
    """The whole environment of the program, and of bwrap too: none of the evaluator's variables (API keys)
    enters the sandbox by any route."""
    return {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": WORKDIR, "TMPDIR": WORKDIR,
            # one BLAS/OpenMP thread, as reliability_guard sets OMP_NUM_THREADS=1
            "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def data_fd(data: bytes) -> int:
    """A file descriptor to read `data` from (an anonymous memory file: no size limit, no trace on disk)."""
    fd = os.memfd_create("dllm-exec", 0)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def command(path: str, tmpfs_mb: int, env: dict[str, str], fds: dict[str, int]) -> list[str]:
    """bwrap's argv up to the program's own. `fds`, read and closed by bwrap: "seccomp" (the filter), and but
    for the probe "program" (its text, copied to WORKDIR/program.py) and "info" (bwrap writes the program's
    pid there)."""
    # --as-pid-1: the program is the namespace's only process, so the seccomp filter covers all of it (bwrap's
    # own pid-1 reaper is unfiltered, and the program could ptrace it or write its /proc/1/mem).
    argv = [path, "--unshare-all", "--unshare-user", "--disable-userns", "--cap-drop", "ALL", "--new-session",
            "--die-with-parent", "--as-pid-1", "--hostname", "sandbox",
            "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev"]
    hidden = sorted({os.path.realpath(d) for d in (*HIDDEN, os.path.expanduser("~")) if os.path.isdir(d)} - {"/"})
    private = [WORKDIR, "/dev/shm"]
    for d in hidden:
        argv += ["--tmpfs", d]
    for d in private:
        argv += ["--size", str(tmpfs_mb << 20), "--tmpfs", d]
    for d in sorted(_interpreter_dirs(hidden + private)):  # e.g. a CI checkout's venv under /tmp
        argv += ["--ro-bind", d, d]
    for d in hidden:
        argv += ["--remount-ro", d]
    argv += ["--seccomp", str(fds["seccomp"])]
    if "program" in fds:
        argv += ["--perms", "0444", "--file", str(fds["program"]), f"{WORKDIR}/program.py"]
    if "info" in fds:
        argv += ["--info-fd", str(fds["info"])]
    argv += ["--chdir", WORKDIR, "--clearenv"]
    for name, value in env.items():
        argv += ["--setenv", name, value]
    return argv + ["--"]


def _interpreter_dirs(covered: list[str]) -> set[str]:
    """What the interpreter needs from under the covered folders: its prefixes (venv and base) and sys.path."""
    wanted = {sys.prefix, sys.base_prefix, os.path.dirname(os.path.dirname(os.path.realpath(sys.executable))),
              *(p for p in sys.path if os.path.isdir(p))}
    inside = {os.path.realpath(p) for p in wanted if any(_under(os.path.realpath(p), d) for d in covered)}
    return {p for p in inside if not any(q != p and _under(p, q) for q in inside)}  # outermost only


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


# ---- seccomp: no new processes ----
_ARCH = {  # machine -> (AUDIT_ARCH_*, {name: syscall number}); <linux/audit.h>, the kernel's syscall tables
    "x86_64": (0xC000003E, {"fork": 57, "vfork": 58, "clone": 56, "clone3": 435}),
    "aarch64": (0xC00000B7, {"clone": 220, "clone3": 435}),  # no fork/vfork syscalls there
}
_LD_W_ABS, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06  # BPF_LD|BPF_W|BPF_ABS, BPF_JMP|..., BPF_RET|BPF_K
_KILL, _ALLOW, _ERRNO = 0x80000000, 0x7FFF0000, 0x00050000  # SECCOMP_RET_KILL_PROCESS, _ALLOW, _ERRNO | errno
_EPERM, _ENOSYS, _CLONE_THREAD, _X32_BIT = 1, 38, 0x00010000, 0x40000000


def seccomp_filter() -> bytes:
    """A `struct sock_filter[]` for bwrap --seccomp: the calls above refused, everything else allowed."""
    machine = platform.machine()
    if machine not in _ARCH:
        raise SandboxUnavailable(f"the sandbox's seccomp filter knows {sorted(_ARCH)}, not {machine!r}: "
                                 f"add its syscall numbers to dllm.eval.sandbox, {OPT_IN_HINT}.")
    arch, nr = _ARCH[machine]
    ops = [(_LD_W_ABS, 0, 0, 4), (_JEQ, 1, 0, arch), (_RET, 0, 0, _KILL),  # seccomp_data.arch: no other ABI
           (_LD_W_ABS, 0, 0, 0)]                                           # seccomp_data.nr
    if machine == "x86_64":  # the x32 ABI reuses the numbers with bit 30 set
        ops += [(_JGE, 0, 1, _X32_BIT), (_RET, 0, 0, _KILL)]
    for name in ("fork", "vfork"):
        if name in nr:
            ops += [(_JEQ, 0, 1, nr[name]), (_RET, 0, 0, _ERRNO | _EPERM)]
    ops += [(_JEQ, 0, 1, nr["clone3"]), (_RET, 0, 0, _ERRNO | _ENOSYS),
            (_JEQ, 0, 3, nr["clone"]), (_LD_W_ABS, 0, 0, 16),              # args[0] (flags), low 32 bits
            (_JSET, 1, 0, _CLONE_THREAD), (_RET, 0, 0, _ERRNO | _EPERM),    # a process: refused
            (_RET, 0, 0, _ALLOW)]                                           # a thread, or any other call
    return b"".join(struct.pack("=HBBI", *op) for op in ops)
