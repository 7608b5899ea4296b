"""Run untrusted Python programs (MBPP candidates plus their asserts), each in its own OS-level sandbox.

    check_program("def f(): return 1\nassert f() == 1")  # ExecResult(status='passed', ...)

Pass = every top-level statement of the program ran to its end without raising (pass@1 as in HF `evaluate`
code_eval and openai/human-eval, eval.md §2.4). Each program runs in a fresh `python -I` under bubblewrap
(`sandbox.py`); `harness.py` is its entry point inside.

Threat model (isolation="sandbox", the default). The program is arbitrary code, run as the evaluating user.
Contained:
  * processes: fresh user, pid, net, mount, ipc, uts and cgroup namespaces, no capabilities, a new session,
    nested user namespaces disabled; the program is its pid namespace's pid 1 and only process. A seccomp
    filter refuses fork/vfork/clone (threads are allowed), so no shell, subprocess, daemon or fork bomb
    starts, and when the check ends the namespace is killed with everything in it. Signals reach only the
    sandbox itself: the evaluator is not in its pid namespace.
  * files: `/` is read-only; /root, /home, the evaluator's HOME, /run and /var/tmp are empty read-only tmpfs
    (the interpreter's own folders are bound back read-only); /tmp (cwd, HOME, TMPDIR) and /dev/shm are
    private tmpfs of `tmpfs_mb` each, gone with the sandbox. Nothing the program writes reaches the host.
  * network: a network namespace of its own, with only its own loopback: no host, no 127.0.0.1 of the host.
  * secrets: the environment is a fixed minimal one (bwrap's too), and /proc shows only the sandbox: no
    /proc/<evaluator>/environ or /mem, no evaluator memory.
  * resources: a wall-clock deadline counted from the program's first statement (interpreter start-up is not
    charged, so many workers do not time each other out), then SIGKILL to the namespace; RLIMIT_CPU,
    RLIMIT_AS, RLIMIT_FSIZE, RLIMIT_NOFILE, RLIMIT_CORE = 0 (RLIMIT_NPROC too, which Linux ignores for root);
    stdout/stderr are drained by the parent, which keeps only the last `output_bytes` of each.
  * the verdict: passed needs, after the last statement, the line "<nonce> <statements run>" on a pipe only
    the harness writes, with a fresh nonce the harness reads only then, the statement count it announced
    before the program's first statement ran (so the program cannot lower it), and exit status 0. Exiting
    early by any path (sys.exit, os._exit, posix._exit after re-importing posix, ctypes `_exit`, the
    harness's own exit function found through sys._getframe, a signal) writes no line and fails; skipping
    statements (e.g. emptying the harness's statement list) fails the count.
Not contained:
  * reading: the program can read every file under `/` that the evaluating user can (system files, the
    project, datasets) outside the hidden folders; keep secrets in the hidden ones or in the environment.
  * a forged verdict by impersonation: the program runs in the same interpreter as the harness, so code
    written against this protocol can read the nonce pipe and write the pass line itself (or make its values
    compare equal to anything). No in-process scheme prevents that; what it cannot do is leave the sandbox.
  * the kernel: bubblewrap relies on it (namespaces, seccomp); a kernel exploit is out of scope.
  * CPU and memory between programs: limits are per process, not a cgroup; the host's memory is shared.

isolation="guard" is the old, weak mode, an explicit opt-in for machines without bubblewrap or user namespaces:
`harness.install_guard` (reliability_guard's monkeypatching) in a temp folder, its own session, the same limits
and verdict; one line of hostile code undoes the guard, and then nothing above but the limits holds.
Without bubblewrap, isolation="sandbox" refuses to run (SandboxUnavailable says what to install or enable).

Status mapping:
  passed  -- the verdict above.
  failed  -- anything else that ran: an exception (AssertionError, SystemExit...; exit 1), an exit before the
             end, a signal other than SIGXCPU (SIGSEGV; SIGKILL from the OOM killer).
  timeout -- the wall-clock deadline passed, or RLIMIT_CPU fired (SIGXCPU).
  error   -- the program does not compile (SyntaxError, null bytes), or the sandbox failed: setting up, start-up
             beyond STARTUP_S, or on the host (spawn, wait).
"""
from __future__ import annotations

import json
import math
import os
import secrets
import select
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from dllm.eval import harness, sandbox
from dllm.eval.sandbox import SandboxUnavailable

STATUSES = ("passed", "failed", "timeout", "error")
ISOLATIONS = ("sandbox", "guard")
STARTUP_S = 60.0  # s allowed from spawn to the program's first statement (16 start-ups on 2 busy cores)
_HARNESS = Path(harness.__file__).read_text(encoding="utf-8")

__all__ = ["STATUSES", "ISOLATIONS", "ExecResult", "Limits", "SandboxUnavailable", "check_program",
           "check_programs", "require_isolation"]


@dataclass(frozen=True)
class ExecResult:
    status: str       # one of STATUSES
    detail: str       # one line: the exception, the signal, or why the sandbox failed
    seconds: float    # wall clock, sandbox and interpreter start-up included
    stdout: str = ""  # the last `output_bytes` the program wrote to stdout
    stderr: str = ""  # the last `output_bytes` of stderr (the traceback ends here)

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@dataclass(frozen=True)
class Limits:
    """Per-program resource limits (pass as keyword arguments to `check_program`)."""
    memory_mb: int = 1024           # RLIMIT_AS: a MemoryError beyond it; numpy imports need ~300 MB
    file_mb: int = 10               # RLIMIT_FSIZE: writes beyond it raise OSError(EFBIG)
    tmpfs_mb: int = 64              # size of each private tmpfs (/tmp, /dev/shm) in the sandbox: host memory
    nproc: int = 32                 # RLIMIT_NPROC: counts all processes and threads of the user; root ignores it
    nofile: int = 64                # RLIMIT_NOFILE
    output_bytes: int = 64 * 1024   # bytes of stdout and of stderr kept by the parent

    def rlimits(self, timeout: float) -> dict[str, int]:
        # CPU seconds back up the wall clock; they can only fire first when several threads burn CPU at once.
        return {"RLIMIT_CPU": math.ceil(timeout) + 1, "RLIMIT_AS": self.memory_mb << 20,
                "RLIMIT_FSIZE": self.file_mb << 20, "RLIMIT_NPROC": self.nproc,
                "RLIMIT_NOFILE": self.nofile, "RLIMIT_CORE": 0}


def require_isolation(isolation: str) -> None:
    """ValueError for an unknown mode; SandboxUnavailable if "sandbox" cannot run here (checked once)."""
    if isolation not in ISOLATIONS:
        raise ValueError(f"isolation must be one of {ISOLATIONS}, got {isolation!r}")
    if isolation == "sandbox":
        sandbox.bwrap_path()


def check_program(program: str, timeout: float = 3.0, isolation: str = "sandbox", **limits: int) -> ExecResult:
    """Run `program` in a fresh sandbox; passed iff every top-level statement runs to its end without raising.

    `timeout` is wall-clock seconds from the program's first statement; `limits` are `Limits` fields.
    `isolation`: "sandbox" (bubblewrap; SandboxUnavailable where it cannot run) or "guard" (see the module doc).
    """
    lim = Limits(**limits)  # unknown limit names fail loudly
    require_isolation(isolation)
    start = time.monotonic()
    try:
        return _run(program, timeout, lim, isolation, start)
    except (OSError, UnicodeError, subprocess.SubprocessError) as e:
        return ExecResult("error", f"sandbox: {e!r}", time.monotonic() - start)


def check_programs(programs: Sequence[str], timeout: float = 3.0, workers: int | None = None,
                   isolation: str = "sandbox", **limits: int) -> list[ExecResult]:
    """`check_program` over many programs, `workers` at a time (default: one per CPU); results in input order."""
    Limits(**limits)
    require_isolation(isolation)  # once, before any thread starts
    workers = workers or os.cpu_count() or 1
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda p: check_program(p, timeout, isolation, **limits), programs))


def _run(program: str, timeout: float, lim: Limits, isolation: str, start: float) -> ExecResult:
    nonce = secrets.token_hex(16)
    ours: list[int] = []    # descriptors the parent reads
    theirs: list[int] = []  # descriptors for the child, closed here once it has them
    try:
        with tempfile.TemporaryDirectory(prefix="dllm-exec-", ignore_cleanup_errors=True) as folder:
            report_r, report_w = _pipe(ours, theirs)
            nonce_r, nonce_w = _pipe(theirs, ours)  # the child reads this one
            os.write(nonce_w, nonce.encode())       # 32 bytes: never blocks
            _close([ours.pop()])  # then EOF: a harness whose nonce was taken reads b"" and fails, not hangs
            args = {"rlimits": lim.rlimits(timeout), "guard": isolation == "guard", "report_fd": report_w,
                    "nonce_fd": nonce_r}
            info_r = None
            if isolation == "sandbox":
                info_r, info_w = _pipe(ours, theirs)
                fds = {"info": info_w}
                for name, data in (("program", program.encode("utf-8", errors="surrogatepass")),
                                   ("seccomp", sandbox.seccomp_filter())):
                    fds[name] = sandbox.data_fd(data)
                    theirs.append(fds[name])
                env, cwd = sandbox.minimal_env(), None
                prefix = sandbox.command(sandbox.bwrap_path(), lim.tmpfs_mb, env, fds)
            else:  # only here is the folder used: the sandbox's working folder is a tmpfs of its own
                Path(folder, "program.py").write_text(program, encoding="utf-8", errors="surrogatepass")
                env, cwd, prefix = {**sandbox.minimal_env(), "HOME": folder, "TMPDIR": folder}, folder, []
            # -I: no PYTHON* variables, no user site, no script dir on sys.path; -B: no .pyc writes. Rlimits are
            # set by the harness itself: preexec_fn may deadlock when the parent has threads (subprocess docs).
            argv = prefix + [sys.executable, "-I", "-B", "-c", _HARNESS, json.dumps(args)]
            proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, pass_fds=theirs, start_new_session=True)
            _close(theirs)  # else the report pipe would never reach EOF
            run = _Supervision(proc, report_r, info_r, lim.output_bytes)
            try:
                run.watch(start + STARTUP_S, timeout)
            finally:
                run.close()  # kills whatever is left (the whole pid namespace), reaps
    finally:
        _close(ours + theirs)
    code = proc.returncode
    if isolation == "sandbox" and code > 128:  # bwrap reports death by signal N as exit status 128 + N
        code = -(code - 128)
    stdout, stderr = run.out.decode(errors="replace"), run.err.decode(errors="replace")
    status, detail = _classify(run, code, _verdict(run.report, nonce), stderr, timeout)
    return ExecResult(status, detail, time.monotonic() - start, stdout, stderr)


def _verdict(report: bytearray, nonce: str) -> bool:
    """All the report pipe may carry for a pass: "S<n>\\n" from the harness before the program ran (so the
    program cannot change n), then "<nonce> <n>\\n" after its last statement."""
    head, _, tail = bytes(report).partition(b"\n")
    return head[:1] == b"S" and head[1:].isdigit() and tail == f"{nonce} {int(head[1:])}\n".encode()


def _pipe(read_side: list[int], write_side: list[int]) -> tuple[int, int]:
    r, w = os.pipe()
    read_side.append(r)
    write_side.append(w)
    return r, w


def _close(fds: list[int]) -> None:
    while fds:
        try:
            os.close(fds.pop())
        except OSError:
            pass


class _Supervision:
    """The parent's side of one run: drains stdout/stderr (the last `cap` bytes of each), the report pipe and
    bwrap's info pipe; starts the program's clock at its "S"; at the end kills and reaps everything."""

    def __init__(self, proc: subprocess.Popen, report_r: int, info_r: int | None, cap: int):
        self.proc, self.cap = proc, cap
        self.out, self.err, self.report, self.info = bytearray(), bytearray(), bytearray(), bytearray()
        self.fds = [fd for fd in (report_r, info_r) if fd is not None]  # closed by the caller
        self.started = self.exited = False
        self.init_pidfd: int | None = None  # the sandbox's pid 1: the namespace dies with it

    def watch(self, startup_deadline: float, timeout: float) -> None:
        deadline = startup_deadline
        sources = {self.proc.stdout.fileno(): self.out, self.proc.stderr.fileno(): self.err,
                   **dict(zip(self.fds, (self.report, self.info)))}
        with selectors.DefaultSelector() as sel:
            for fd, buf in sources.items():
                sel.register(fd, selectors.EVENT_READ, buf)
            while sel.get_map() and (remaining := deadline - time.monotonic()) > 0:
                for key, _ in sel.select(remaining):
                    chunk = os.read(key.fd, 1 << 16)
                    if not chunk:  # EOF: every holder of the write end closed it (normally: exited)
                        sel.unregister(key.fd)
                        if key.data is self.info:
                            self._open_init()
                    buf = key.data
                    buf.extend(chunk)
                    if buf is self.report:
                        del buf[256:]  # longer than any verdict: it fails anyway
                        if not self.started and buf[:1] == b"S":
                            self.started, deadline = True, time.monotonic() + timeout  # the program's clock
                    elif buf is not self.info:
                        del buf[:max(0, len(buf) - self.cap)]  # bounded host memory however much is printed
        self.exited = _wait_unreaped(self.proc.pid, deadline)

    def _open_init(self) -> None:
        try:
            pid = json.loads(self.info)["child-pid"]
            pidfd = os.pidfd_open(pid)
        except (ValueError, KeyError, TypeError, OSError):
            return  # bwrap failed before starting it, or it already exited: nothing of the sandbox is left
        if _parent_pid(pid) == self.proc.pid:  # not a recycled pid: bwrap has not reaped its child yet
            self.init_pidfd = pidfd
        else:
            os.close(pidfd)

    def close(self) -> None:
        if self.init_pidfd is not None:
            try:  # the kernel kills every process of the pid namespace when its init dies
                signal.pidfd_send_signal(self.init_pidfd, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:  # bwrap itself, or in guard mode the program's session (all that is left of it)
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()  # reap: no zombies
        if self.init_pidfd is not None:  # readable once pid 1 exited, i.e. after the namespace was emptied
            select.select([self.init_pidfd], [], [], 10.0)
            os.close(self.init_pidfd)
        self.proc.stdout.close()
        self.proc.stderr.close()


def _parent_pid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def _wait_unreaped(pid: int, deadline: float) -> bool:
    """Wait for `pid` to exit without reaping it: while it is a zombie its pid (= its process group id) cannot be
    recycled, so the killpg that follows cannot hit an unrelated group."""
    delay = 1e-3
    while os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(delay, remaining))
        delay = min(2 * delay, 0.05)
    return True


def _classify(run: _Supervision, code: int, verdict: bool, stderr: str, timeout: float) -> tuple[str, str]:
    last = next((line.strip() for line in reversed(stderr.splitlines()) if line.strip()), "")
    if not run.exited:
        if run.started:
            return "timeout", f"wall-clock limit of {timeout:g} s exceeded"
        return "error", f"sandbox: the program did not start within {STARTUP_S:g} s"
    if code in (-signal.SIGXCPU, harness.EXIT_CPU):
        return "timeout", "CPU time limit exceeded (SIGXCPU)"
    if not run.started:  # before the program's first statement only the harness (or bwrap) ran
        if code == harness.EXIT_COMPILE:
            return "error", last
        return "error", f"sandbox: exit status {code}" + (f": {last}" if last else "")
    if verdict and code == 0:
        return "passed", ""
    if code == harness.EXIT_FAILED:
        return "failed", last or "exit status 1"
    if code < 0:
        return "failed", f"killed by {signal.Signals(-code).name}"
    if code == 0 and not bytes(run.report).partition(b"\n")[2]:
        return "failed", "exited with status 0 before the end of the program: no verdict"
    if code == 0:
        return "failed", f"wrong verdict {bytes(run.report[:80])!r}: statements skipped, or a forgery"
    return "failed", f"exit status {code} before the verdict" + (f": {last}" if last else "")
