"""Run course scripts the way a grader does (``cd <course> && python <script> <flags>``), each in a
process of its own, without paying PyTorch's import for every run.

A server process imports torch and ``common`` once (no tensor work, so no thread pool yet) and
forks a child per request; the child changes into the course folder, puts it first on
``sys.path``, sets ``sys.argv`` and runs the script as ``__main__`` with its stdout and stderr in
files. An uncaught exception prints its traceback and exits 1, as ``python script.py`` would.
Forking costs milliseconds where a fresh interpreter costs 3-5 s on a busy CPU; the
subprocess tests that start a real interpreter (``test_offline.py``, each course's end-to-end
test) cover the launch itself.
"""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from helpers import ROOT

SERVER = r'''
import json, os, runpy, signal, sys, traceback
import numpy, torch  # noqa: F401 - imported once, shared by every forked run
import common.cli, common.data, common.metrics, common.paths, common.plotting, common.training  # noqa: F401
reply = sys.stdout
for line in sys.stdin:
    req = json.loads(line)
    sys.stdout.flush(); sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            for fd, name in ((1, req["stdout"]), (2, req["stderr"])):
                f = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(f, fd)
                os.close(f)
            signal.alarm(req["timeout"])
            os.chdir(req["cwd"])
            sys.path[0] = req["cwd"]
            sys.argv = [req["script"], *req["args"]]
            try:
                runpy.run_path(req["script"], run_name="__main__")
                code = 0
            except SystemExit as exc:
                if exc.code is None or isinstance(exc.code, int):
                    code = exc.code or 0
                else:
                    print(exc.code, file=sys.stderr)
                    code = 1
            except BaseException:
                traceback.print_exc()
                code = 1
        finally:
            sys.stdout.flush(); sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    rc = os.waitstatus_to_exitcode(status)
    reply.write(json.dumps({"rc": rc}) + "\n"); reply.flush()
'''


@dataclass
class Result:
    rc: int
    stdout: str
    stderr: str

    def lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


class ScriptRunner:
    """``runner.run("ee8520_hw2/hw2_step1_main.py", "--quick")`` -> :class:`Result`."""

    def __init__(self, env: dict, logs: Path):
        self.logs = Path(logs)
        self.logs.mkdir(parents=True, exist_ok=True)
        self.count = 0
        self.proc = subprocess.Popen([sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env, cwd=ROOT)

    def run(self, script: str, *args: str, timeout: int = 300) -> Result:
        self.count += 1
        out, err = self.logs / f"{self.count}.out", self.logs / f"{self.count}.err"
        path = ROOT / script
        req = {"cwd": str(path.parent), "script": path.name, "args": list(args), "stdout": str(out),
               "stderr": str(err), "timeout": timeout}
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the script runner stopped")
        return Result(json.loads(line)["rc"], out.read_text(), err.read_text())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
