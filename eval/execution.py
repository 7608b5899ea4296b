"""Run untrusted Python programs (MBPP candidates plus their asserts) in throw-away subprocesses.

Same design as HF `evaluate` code_eval and openai/human-eval (eval.md §2.4: temp cwd, a `reliability_guard`
that disables destructive functions, a time limit, pass = no exception), but each program gets its own
`python -I` process instead of a forked worker, so a crash, a fork or a flood of output cannot reach the
evaluator:

    check_program("def f(): return 1\nassert f() == 1")  # ExecResult(status='passed', ...)

What is contained, and by what:
  * time: a wall-clock deadline, then SIGKILL to the whole process group (`start_new_session`); RLIMIT_CPU too.
  * memory, file sizes, open files, core dumps: RLIMIT_AS, RLIMIT_FSIZE, RLIMIT_NOFILE, RLIMIT_CORE = 0.
  * output: stdout/stderr are pipes drained by the parent, which keeps only the last `output_bytes` of each.
  * processes: fork, exec, spawn, system, popen, subprocess and `_posixsubprocess` are disabled; RLIMIT_NPROC
    is set too, but Linux never enforces it for root.
  * signals: kill, killpg, pidfd signals are disabled, and the child is in its own session.
  * files: remove/unlink/rename/replace/truncate/chmod/chown/chdir and shutil.rmtree/move are disabled; cwd,
    HOME and TMPDIR are a fresh temp directory that is deleted afterwards; the environment is scrubbed.
  * network: `socket` construction and name resolution are disabled; ctypes/resource/pty cannot be imported.

What is NOT contained: the guard is Python-level monkeypatching, exactly like `reliability_guard`, which its
authors say is not a security sandbox. Deliberately hostile code can undo it (`del sys.modules["ctypes"]`,
rebuilding `posix` from its import spec, frame inspection); it can read and overwrite any path the evaluating
user can (`open()` on an absolute path is not blocked; `pwd` still names the real home); and as root
RLIMIT_NPROC does nothing. A forked grandchild that survives its parent keeps the pipes open, so the run then
lasts until the deadline, where the process-group kill still ends it. Run untrusted generations as an
unprivileged user, in a container without network, for real isolation.

Status mapping (`_child_main` below sets the child's exit code; while the guard holds, the program cannot):
  passed  -- the program ran to the end without raising (exit 0).
  failed  -- it raised anything, AssertionError and SystemExit included (exit 1), or it died of a signal other
             than SIGXCPU (e.g. SIGSEGV, or SIGKILL from the kernel's OOM killer).
  timeout -- the wall-clock deadline passed (start-up included), or RLIMIT_CPU fired (SIGXCPU).
  error   -- the program does not compile (SyntaxError, null bytes; exit 3), or the sandbox failed: setting up
             (exit 4), starting the interpreter (any other code), or on the host (temp dir, spawn, wait).
"""
from __future__ import annotations

import json
import math
import os
import resource
import selectors
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import types
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Sequence

STATUSES = ("passed", "failed", "timeout", "error")
_EXIT_COMPILE, _EXIT_SANDBOX = 3, 4  # child exit codes for "error"; 0 and 1 are passed and failed


@dataclass(frozen=True)
class ExecResult:
    status: str       # one of STATUSES
    detail: str       # one line: the exception, the signal, or why the sandbox failed
    seconds: float    # wall clock, interpreter start-up included
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
    nproc: int = 32                 # RLIMIT_NPROC: counts all processes and threads of the user; root ignores it
    nofile: int = 64                # RLIMIT_NOFILE
    output_bytes: int = 64 * 1024   # bytes of stdout and of stderr kept by the parent

    def rlimits(self, timeout: float) -> dict[str, int]:
        # CPU seconds back up the wall clock; they can only fire first when several threads burn CPU at once.
        return {"RLIMIT_CPU": math.ceil(timeout) + 1, "RLIMIT_AS": self.memory_mb << 20,
                "RLIMIT_FSIZE": self.file_mb << 20, "RLIMIT_NPROC": self.nproc,
                "RLIMIT_NOFILE": self.nofile, "RLIMIT_CORE": 0}


def check_program(program: str, timeout: float = 3.0, **limits: int) -> ExecResult:
    """Run `program` in a fresh sandboxed interpreter; passed iff it runs to the end without raising.

    `timeout` is wall-clock seconds for the whole child, interpreter start-up (~0.05-0.1 s) included; `limits`
    are `Limits` fields.
    """
    lim = Limits(**limits)  # unknown limit names fail loudly
    start = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="dllm-exec-", ignore_cleanup_errors=True) as sandbox:
            with open(os.path.join(sandbox, "program.py"), "w", encoding="utf-8") as f:
                f.write(program)
            return _run(sandbox, timeout, lim, start)
    except (OSError, UnicodeError, subprocess.SubprocessError) as e:
        return ExecResult("error", f"sandbox: {e!r}", time.monotonic() - start)


def check_programs(programs: Sequence[str], timeout: float = 3.0, workers: int | None = None,
                   **limits: int) -> list[ExecResult]:
    """`check_program` over many programs, `workers` at a time (default: one per CPU); results in input order."""
    workers = workers or os.cpu_count() or 1
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda p: check_program(p, timeout, **limits), programs))


def _run(sandbox: str, timeout: float, lim: Limits, start: float) -> ExecResult:
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": sandbox, "TMPDIR": sandbox,
           # one BLAS/OpenMP thread, as reliability_guard sets OMP_NUM_THREADS=1 (threads count for NPROC).
           "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    # -I: no PYTHON* variables, no user site, no script dir on sys.path; -B: no .pyc writes. This file is the
    # child's entry point (`__main__` below); it imports only the standard library.
    argv = [sys.executable, "-I", "-B", os.path.abspath(__file__), json.dumps(lim.rlimits(timeout))]
    # Rlimits are set by the child itself, not via preexec_fn: preexec_fn may deadlock when the parent has
    # threads (subprocess docs), and check_programs calls this from a thread pool.
    proc = subprocess.Popen(argv, cwd=sandbox, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        exited, out, err = _supervise(proc, start + timeout, lim.output_bytes)
    finally:
        _kill_group(proc.pid)  # also kills anything the program left behind in its session
        proc.wait()            # reap: no zombies
        proc.stdout.close()
        proc.stderr.close()
    seconds = time.monotonic() - start
    stdout, stderr = out.decode(errors="replace"), err.decode(errors="replace")
    status, detail = _classify(exited, proc.returncode, stderr, timeout)
    return ExecResult(status, detail, seconds, stdout, stderr)


def _supervise(proc: subprocess.Popen, deadline: float, cap: int) -> tuple[bool, bytes, bytes]:
    """Drain stdout/stderr, keeping the last `cap` bytes of each, until the child exits (-> True) or the
    deadline passes (-> False)."""
    buffers = {proc.stdout: bytearray(), proc.stderr: bytearray()}
    with selectors.DefaultSelector() as sel:
        for stream, buf in buffers.items():
            sel.register(stream, selectors.EVENT_READ, buf)
        while sel.get_map() and (remaining := deadline - time.monotonic()) > 0:
            for key, _ in sel.select(remaining):
                chunk = os.read(key.fd, 1 << 16)
                if not chunk:  # EOF: the child (normally) exited
                    sel.unregister(key.fileobj)
                buf = key.data
                buf.extend(chunk)
                del buf[:max(0, len(buf) - cap)]  # bounded host memory however much is printed
    exited = _wait_unreaped(proc.pid, deadline)
    return exited, bytes(buffers[proc.stdout]), bytes(buffers[proc.stderr])


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


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _classify(exited: bool, returncode: int, stderr: str, timeout: float) -> tuple[str, str]:
    last = next((line.strip() for line in reversed(stderr.splitlines()) if line.strip()), "")
    if not exited:
        return "timeout", f"wall-clock limit of {timeout:g} s exceeded"
    if returncode == 0:
        return "passed", ""
    if returncode == 1:
        return "failed", last or "exit status 1"
    if returncode == -signal.SIGXCPU:
        return "timeout", "CPU time limit exceeded (SIGXCPU)"
    if returncode < 0:
        return "failed", f"killed by {signal.Signals(-returncode).name}"
    if returncode == _EXIT_COMPILE:
        return "error", last
    # _EXIT_SANDBOX, or a code the runner never uses (2: the interpreter could not start it)
    return "error", f"sandbox: exit status {returncode}" + (f": {last}" if last else "")


# ---- the child side: everything below runs inside the sandboxed interpreter ----

_BLOCKED_IMPORTS = ("ctypes", "_ctypes", "resource", "pty", "psutil", "tkinter", "ipdb", "joblib")
# (modules, names): each function is replaced by one raising PermissionError. `os` functions are the `posix`
# ones, so both modules are patched. The selection follows reliability_guard's, plus exec/spawn/pidfd.
_DISABLED: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (("os", "posix"), (  # process creation, signals, leaving the session, faking the exit code
        "fork", "forkpty", "system", "popen", "posix_spawn", "posix_spawnp", "kill", "killpg", "pidfd_open",
        "setsid", "setpgid", "setpgrp", "_exit", "execv", "execve", "execl", "execle", "execlp", "execlpe",
        "execvp", "execvpe", "spawnv", "spawnve", "spawnl", "spawnle", "spawnlp", "spawnlpe", "spawnvp",
        "spawnvpe")),
    (("os", "posix"), (  # destroying or leaving files and directories
        "remove", "unlink", "rmdir", "removedirs", "rename", "renames", "replace", "truncate", "chmod",
        "fchmod", "lchmod", "chown", "fchown", "lchown", "chroot", "chdir", "fchdir")),
    (("shutil",), ("rmtree", "move", "chown")),
    (("subprocess",), ("Popen",)),
    (("_posixsubprocess",), ("fork_exec",)),
    (("signal", "_signal"), ("pidfd_send_signal",)),
    (("socket", "_socket"), ("socketpair", "fromfd", "create_connection", "create_server", "getaddrinfo",
                             "gethostbyname", "gethostbyname_ex", "gethostbyaddr")),
)


def _refuse(qualname: str):
    def refuse(*args, **kwargs):
        raise PermissionError(f"{qualname} is disabled in the sandbox")
    return refuse


def _install_guard() -> None:
    import socket

    for module_names, names in _DISABLED:
        for module_name in module_names:
            module = __import__(module_name)
            for name in names:
                if hasattr(module, name):
                    setattr(module, name, _refuse(f"{module_name}.{name}"))

    class NoSocket(socket.socket):  # a class, so modules that subclass socket.socket (ssl) still import
        def __init__(self, *args, **kwargs):
            raise PermissionError("socket.socket is disabled in the sandbox")

    socket.socket = socket.SocketType = NoSocket
    sys.modules["_socket"].socket = sys.modules["_socket"].SocketType = NoSocket
    for name in _BLOCKED_IMPORTS:
        sys.modules[name] = None  # `import name` now raises ImportError


def _child_main(rlimits: dict[str, int]) -> None:
    exit_now = os._exit  # kept before the guard disables it; no atexit hook of the program can change the code
    streams = (sys.__stdout__, sys.__stderr__)

    def finish(code: int, message: str = "") -> None:
        try:
            sys.__stderr__.write(message)
            for stream in streams:
                stream.flush()
        except Exception:  # e.g. the program closed its stdout; the exit code still tells
            pass
        exit_now(code)

    try:
        for name, value in rlimits.items():
            limit = getattr(resource, name)
            hard = resource.getrlimit(limit)[1]  # only root may raise a hard limit: stay at or below it
            value = value if hard == resource.RLIM_INFINITY else min(value, hard)
            resource.setrlimit(limit, (value, value))
        with open("program.py", encoding="utf-8") as f:
            source = f.read()
    except BaseException:
        finish(_EXIT_SANDBOX, traceback.format_exc())
    try:
        code = compile(source, "program.py", "exec")
    except Exception as e:  # SyntaxError; ValueError for null bytes; RecursionError/MemoryError when too deep
        finish(_EXIT_COMPILE, "".join(traceback.format_exception_only(e)))
    try:
        _install_guard()
    except BaseException:
        finish(_EXIT_SANDBOX, traceback.format_exc())
    # A registered module (not "__main__", so a model's `if __name__ == "__main__":` demo does not run, as in
    # HF's `exec(program, {})`); registering it lets dataclasses and pickle resolve the program's classes.
    module = sys.modules["__sandbox__"] = types.ModuleType("__sandbox__")
    try:
        exec(code, module.__dict__)
    except BaseException:  # SystemExit included: a program that exits before its asserts has not passed
        finish(1, traceback.format_exc())
    finish(0)


if __name__ == "__main__":
    _child_main(json.loads(sys.argv[1]))
