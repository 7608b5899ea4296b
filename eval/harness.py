"""The child side of `execution.py`: runs ./program.py one top-level statement at a time, then reports.

`execution.py` starts this file's text as `python -I -B -c <text> <json>`, inside the bubblewrap sandbox or,
with isolation="guard", in a throw-away folder after `install_guard`. It imports only the standard library.

Protocol (fds named in the json; see execution.py for why a pass cannot be forged by exiting early):
  report fd  "S<statements>\\n" just before the program's first statement (the supervisor starts the timeout
             then), and after the last one "<nonce> <statements run>\\n", the nonce read only then from its fd.
  exit code  0 after the report; 1 the program raised (SystemExit included); 3 it does not compile; 4 the
             harness failed to set up; 5 the CPU time limit (SIGXCPU).
"""
from __future__ import annotations

import __future__
import ast
import json
import os
import resource
import signal
import sys
import traceback
import types

EXIT_FAILED, EXIT_COMPILE, EXIT_SETUP, EXIT_CPU = 1, 3, 4, 5
_FUTURE_FLAGS = 0
for _name in __future__.all_feature_names:
    _FUTURE_FLAGS |= getattr(__future__, _name).compiler_flag

_BLOCKED_IMPORTS = ("ctypes", "_ctypes", "resource", "pty", "psutil", "tkinter", "ipdb", "joblib")
# (modules, names): each function is replaced by one raising PermissionError. `os` functions are the `posix`
# ones, so both modules are patched. The selection follows reliability_guard's, plus exec/spawn/pidfd.
_DISABLED: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (("os", "posix"), (  # process creation, signals, leaving the session
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


def install_guard() -> None:
    """HF code_eval's `reliability_guard`, extended: Python-level monkeypatching, undone by one line of
    hostile code (`sys.modules.pop('posix'); import posix`). Only for isolation="guard"."""
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


def compile_statements(source: str) -> list[types.CodeType]:
    """One code object per top-level statement, as the whole module would run them (same __future__ flags,
    same line numbers). Raises what `compile` raises for the whole source."""
    whole = compile(source, "program.py", "exec", dont_inherit=True)  # also what ast.parse lets through
    flags = whole.co_flags & _FUTURE_FLAGS
    tree = ast.parse(source, "program.py")
    return [compile(ast.Module(body=[stmt], type_ignores=[]), "program.py", "exec", flags=flags, dont_inherit=True)
            for stmt in tree.body]


def main(args: dict) -> None:
    # Kept before the program runs (it may patch os); none of these is a verdict: exiting, even with 0, is not.
    exit_now, write, read = os._exit, os.write, os.read
    report_fd, nonce_fd = args["report_fd"], args["nonce_fd"]

    def finish(code: int, message: str = "") -> None:
        try:
            sys.__stderr__.write(message)
            for stream in (sys.stdout, sys.__stdout__, sys.__stderr__):
                stream.flush()
        except Exception:  # e.g. the program closed its stdout; the exit code and the report still tell
            pass
        exit_now(code)

    try:
        for name, value in args["rlimits"].items():
            limit = getattr(resource, name)
            hard = resource.getrlimit(limit)[1]  # only root may raise a hard limit: stay at or below it
            unlimited = hard == resource.RLIM_INFINITY
            soft = value if unlimited else min(value, hard)
            # RLIMIT_CPU: SIGXCPU at the soft limit, SIGKILL a second later at the hard one. The sandbox's pid 1
            # ignores signals it has no handler for (pid_namespaces(7)), hence the handler below.
            top = soft + 1 if name == "RLIMIT_CPU" and (unlimited or soft < hard) else soft
            resource.setrlimit(limit, (soft, top))
        signal.signal(signal.SIGXCPU, lambda *_: finish(EXIT_CPU, "CPU time limit exceeded (SIGXCPU)\n"))
        with open("program.py", encoding="utf-8") as f:
            source = f.read()
    except BaseException:
        finish(EXIT_SETUP, traceback.format_exc())
    try:
        statements = compile_statements(source)
    except Exception as e:  # SyntaxError; ValueError for null bytes; RecursionError/MemoryError when too deep
        finish(EXIT_COMPILE, "".join(traceback.format_exception_only(e)))
    try:
        if args["guard"]:
            install_guard()
        write(report_fd, f"S{len(statements)}\n".encode("ascii"))  # before any of the program runs
    except BaseException:
        finish(EXIT_SETUP, traceback.format_exc())
    # A registered module (not "__main__", so a model's `if __name__ == "__main__":` demo does not run, as in
    # HF's `exec(program, {})`); registering it lets dataclasses and pickle resolve the program's classes.
    module = sys.modules["__sandbox__"] = types.ModuleType("__sandbox__")
    ran = 0
    try:
        for code in statements:
            exec(code, module.__dict__)
            ran += 1
    except BaseException:  # SystemExit included: a program that exits before its asserts has not passed
        finish(EXIT_FAILED, traceback.format_exc())
    try:
        nonce = read(nonce_fd, 64).decode("ascii").strip()
        write(report_fd, f"{nonce} {ran}\n".encode("ascii"))
    except BaseException:
        finish(EXIT_SETUP, traceback.format_exc())
    finish(0)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
