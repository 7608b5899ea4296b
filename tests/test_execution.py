"""Sandbox contract: each outcome maps to its status, and hostile programs are contained fast, leaving nothing."""
from __future__ import annotations

import os
import resource
import time
from pathlib import Path

import pytest

from dllm.eval import execution
from dllm.eval.execution import STATUSES, check_program, check_programs

QUICK = 2.0  # s: a contained program fails at once (interpreter start-up is ~0.1 s), long before its timeout
RUNNER = str(Path(execution.__file__).resolve())


def _processes() -> list[tuple[int, str, int, int, list[bytes]]]:
    """(pid, state, ppid, session id, argv) of every process."""
    found = []
    for proc in (p for p in Path("/proc").iterdir() if p.name.isdigit()):
        try:
            stat = (proc / "stat").read_text()
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:  # it exited while we looked
            continue
        state, ppid, _, session = stat.rsplit(")", 1)[1].split()[:4]
        found.append((int(proc.name), state, int(ppid), int(session), argv))
    return found


@pytest.fixture(autouse=True)
def _no_children_left():
    yield  # every sandbox child is reaped, none left running or as a zombie (concurrent sessions are not ours)
    assert [p for p in _processes() if p[2] == os.getpid() and (p[1] == "Z" or RUNNER.encode() in p[4])] == []


def test_passing_program_captures_stdout():
    r = check_program("def add(a, b):\n    return a + b\nprint('hello')\nassert add(2, 3) == 5")
    assert (r.status, r.passed, r.detail, r.stdout) == ("passed", True, "", "hello\n")
    assert r.seconds < QUICK


@pytest.mark.parametrize("program, status, detail", [
    ("assert 1 + 1 == 3", "failed", "AssertionError"),
    ("def f(x):\n    return x\nassert f(1) == 2, 'f(1) != 2'", "failed", "AssertionError: f(1) != 2"),
    ("raise ValueError('bad')", "failed", "ValueError: bad"),
    ("import sys\nsys.exit(0)\nassert False", "failed", "SystemExit: 0"),    # exiting early is no pass
    ("x = input()", "failed", "EOFError"),                                    # stdin is /dev/null
    ("import ctypes", "failed", "import of ctypes halted"),                   # the easy way around the guard
    ("def f(:\n    pass", "error", "SyntaxError"),
    ("x = 1\0", "error", "null bytes"),
    ("if __name__ == '__main__':\n    raise SystemExit(1)", "passed", ""),  # demo blocks do not run
])
def test_outcomes_map_to_statuses(program, status, detail):
    r = check_program(program)
    assert r.status == status and detail in r.detail and r.passed == (status == "passed")
    assert r.seconds < QUICK


@pytest.mark.parametrize("program", ["while True:\n    pass", "import time\ntime.sleep(60)"])
def test_infinite_loop_times_out(program):
    r = check_program(program, timeout=1.0)
    assert r.status == "timeout" and not r.passed
    assert 1.0 <= r.seconds < 1.0 + 2.0


@pytest.mark.parametrize("program", [
    "import os\nwhile True:\n    os.fork()",
    "import posix\nwhile True:\n    posix.fork()",
    "import subprocess, sys\nwhile True:\n    subprocess.Popen([sys.executable, '-c', 'pass'])",
    "import multiprocessing as mp\nwhile True:\n    mp.Process(target=print).start()",
    "import os\nos.system(':(){ :|:& };:')",
])
def test_fork_bomb_is_refused(program):
    r = check_program(program, timeout=5.0)
    assert r.status == "failed" and "disabled in the sandbox" in r.detail
    assert r.seconds < QUICK


@pytest.mark.parametrize("program, limits", [
    ("x = [0] * 10**10", {}),                                              # 80 GB at once
    ("chunks = []\nwhile True:\n    chunks.append(bytearray(16 << 20))", {"memory_mb": 256}),  # gradual
])
def test_memory_bomb_hits_the_address_space_limit(program, limits):
    r = check_program(program, timeout=10.0, **limits)
    assert r.status == "failed" and "MemoryError" in r.detail
    assert r.seconds < QUICK


@pytest.mark.parametrize("attack", [
    "os.remove(TARGET)",
    "os.unlink(TARGET)",
    "pathlib.Path(TARGET).unlink()",
    "shutil.rmtree(os.path.dirname(TARGET))",
    "os.rename(TARGET, TARGET + '.moved')",
    "os.truncate(TARGET, 0)",
    "os.chmod(TARGET, 0)",
])
def test_files_outside_the_sandbox_survive(tmp_path, attack):
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    r = check_program(f"import os, pathlib, shutil\nTARGET = {str(target)!r}\n{attack}")
    assert r.status == "failed" and "disabled in the sandbox" in r.detail
    assert target.read_text() == "keep me" and os.access(target, os.R_OK | os.W_OK)


@pytest.mark.parametrize("program", [
    "import socket\nsocket.socket(socket.AF_INET, socket.SOCK_STREAM).connect(('127.0.0.1', 9))",
    "import socket\nsocket.create_connection(('127.0.0.1', 9), timeout=1)",
    "import socket\nsocket.getaddrinfo('example.com', 80)",
    "import urllib.request\nurllib.request.urlopen('http://127.0.0.1:9', timeout=1)",
])
def test_network_is_refused(program):
    r = check_program(program)
    assert r.status == "failed" and "disabled in the sandbox" in r.detail
    assert r.seconds < QUICK


def test_home_and_environment_are_scrubbed(monkeypatch):
    monkeypatch.setenv("DLLM_TEST_SECRET", "hunter2")
    r = check_program("import os\nprint(os.path.expanduser('~'))\nprint(os.getcwd())\nprint(sorted(os.environ))")
    home, cwd, names = r.stdout.splitlines()
    assert r.passed and home == cwd and Path(home).name.startswith("dllm-exec-")
    assert home != os.path.expanduser("~") and not Path(home).exists()  # the sandbox is deleted afterwards
    assert "DLLM_TEST_SECRET" not in names and "HOME" in names


def test_program_cannot_kill_its_parent():
    program = ("import os, signal\nprint(os.getpgrp(), os.getsid(0))\n"
               "for kill in (lambda: os.kill(os.getppid(), signal.SIGKILL),\n"
               "             lambda: os.killpg(os.getpgid(os.getppid()), signal.SIGKILL),\n"
               "             lambda: signal.pidfd_send_signal(os.pidfd_open(os.getppid()), signal.SIGKILL)):\n"
               "    try:\n        kill()\n    except PermissionError:\n        pass\n"
               "    else:\n        raise SystemExit('a kill went through')\n")
    r = check_program(program)
    assert r.passed, r.detail  # every attempt raised PermissionError, and we are still here to check
    pgrp, sid = map(int, r.stdout.split())
    assert pgrp != os.getpgrp() and sid != os.getsid(0)  # its own session: killpg on it cannot reach us


def test_escaped_fork_dies_with_the_process_group():
    # Rebuilding `posix` from its spec undoes the guard (monkeypatching is no security boundary), so this fork
    # succeeds; the grandchild still dies with the session when the deadline kills the process group.
    program = ("import importlib.util, os, time\n"
               "spec = importlib.util.find_spec('posix')\nposix = importlib.util.module_from_spec(spec)\n"
               "spec.loader.exec_module(posix)\npid = posix.fork()\n"
               "print(os.getsid(0), pid, flush=True)\ntime.sleep(60)\n")
    r = check_program(program, timeout=3.0)   # room for two interpreter start-ups on a loaded 2-core machine
    lines = sorted(r.stdout.split("\n")[:2])
    assert r.status == "timeout" and len(lines) == 2 and lines[0].endswith(" 0")  # both printed: it forked
    session = int(lines[0].split()[0])
    # dead; an orphan may stay a zombie for a moment until init reaps it, which is init's job, not ours
    deadline = time.monotonic() + 2.0          # SIGKILL delivery is asynchronous: allow the kernel a moment
    while [p for p in _processes() if p[3] == session and p[1] != "Z"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [p for p in _processes() if p[3] == session and p[1] != "Z"] == []


def test_huge_file_is_cut_at_the_size_limit():
    r = check_program("import os\nprint(os.getcwd(), flush=True)\n"
                      "with open('big.bin', 'wb') as f:\n    f.write(b'x' * (64 << 20))", timeout=5.0)
    assert r.status == "failed" and "File too large" in r.detail
    assert r.seconds < QUICK and not Path(r.stdout.strip()).exists()


def test_huge_output_is_capped_in_host_memory():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    r = check_program("import sys\nfor _ in range(256):\n    sys.stdout.write('x' * (1 << 20))\n"
                      "    sys.stderr.write('y' * (1 << 20))\nprint('done')", timeout=20.0, output_bytes=1 << 16)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert r.passed and r.stdout.endswith("done\n") and len(r.stdout) == 1 << 16 and len(r.stderr) == 1 << 16
    assert grown_mb < 64  # 512 MB went through the pipes
    assert r.seconds < 10.0


def test_check_programs_keeps_order_and_runs_in_parallel():
    nap = "import time\ntime.sleep(0.5)"
    programs = [nap, "assert False", "def f(:", "while True: pass", nap + "\nassert False"]
    start = time.monotonic()
    results = check_programs(programs, timeout=1.5, workers=len(programs))
    assert [r.status for r in results] == ["passed", "failed", "error", "timeout", "failed"]
    assert set(STATUSES) == {"passed", "failed", "error", "timeout"}
    assert time.monotonic() - start < 2.4  # a serial run needs 0.5 + 1.5 + 0.5 s plus five start-ups


def test_unknown_limit_fails_loudly():
    with pytest.raises(TypeError):
        check_program("pass", memroy_mb=1)

