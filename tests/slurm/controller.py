"""A real single-node SLURM controller for the `slurm` tests: Debian's slurm-wlm and munge (installed with
apt when missing), one node with this machine's name, no accounting database, started and stopped by PID.

Facts this relies on (found on a root Debian container without systemd or cgroups): `proctrack/linuxproc`
and `task/none`; the config at the default /etc/slurm/slurm.conf (the executor plugin strips every
`SLURM_*` variable, SLURM_CONF included, before its inner `srun`); job states through `squeue`, so
`MinJobAge` keeps finished jobs visible long enough; requests above the node's CPUs or memory pend
forever instead of failing.
"""
from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

SLURM_CONF = Path("/etc/slurm/slurm.conf")
PACKAGES = ["slurm-wlm", "munge"]
PLUGIN = "snakemake-executor-plugin-slurm>=1.0"  # as in pyproject's `paper` extra
PARTITION = "debug"


class ControllerError(RuntimeError):
    pass


def _run(cmd: list[str], timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)


def ensure_packages() -> list[str]:
    """Install slurm-wlm and munge with apt when `slurmctld` is missing; the plugin with pip when it is not
    importable. Returns what was installed (for the test's report)."""
    installed = []
    if shutil.which("slurmctld") is None or shutil.which("munged") is None:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES]):
            try:
                out = _run(cmd, timeout=900, env=env)
            except FileNotFoundError as error:
                raise ControllerError(f"`{' '.join(cmd)}` cannot run ({error}): the slurm tests need a Debian "
                                      f"machine with apt, or {' and '.join(PACKAGES)} installed") from error
            if out.returncode != 0:
                raise ControllerError(f"`{' '.join(cmd)}` failed ({out.returncode}):\n{out.stdout[-3000:]}"
                                      f"\n{out.stderr[-3000:]}")
        if shutil.which("slurmctld") is None or shutil.which("munged") is None:
            raise ControllerError(f"apt installed {PACKAGES} but slurmctld or munged is still not on PATH")
        installed += PACKAGES
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        out = _run([sys.executable, "-m", "pip", "install", "--quiet", PLUGIN], timeout=600)
        if out.returncode != 0:
            raise ControllerError(f"pip install {PLUGIN} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
        installed.append(PLUGIN)
    return installed


def node_memory_mb() -> int:
    """The node's RealMemory: 80% of this machine's memory, at most 8 GB (the smoke study's jobs ask for
    2 GB each, two at a time)."""
    total_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                    if line.startswith("MemTotal:"))
    return min(8192, int(total_kb / 1024 * 0.8))


def slurm_conf(node: str, state: Path, cpus: int, memory_mb: int) -> str:
    return f"""# written by tests/slurm (xkdbench); the original, if any, is restored when the tests end
ClusterName=xkdbench
SlurmctldHost={node}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=600
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
StateSaveLocation={state}/slurmctld
SlurmdSpoolDir={state}/slurmd
SlurmctldPidFile={state}/slurmctld.pid
SlurmdPidFile={state}/slurmd.pid
SlurmctldLogFile={state}/slurmctld.log
SlurmdLogFile={state}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName={PARTITION} Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


def _munge_works() -> bool:
    if shutil.which("munge") is None or shutil.which("unmunge") is None:
        return False
    credential = _run(["munge", "-n"], timeout=10)
    if credential.returncode != 0:
        return False
    return _run(["unmunge"], input=credential.stdout, timeout=10).returncode == 0


def _controller_up() -> bool:
    try:
        return "UP" in _run(["scontrol", "ping"], timeout=15).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False


class Controller:
    """munged, slurmctld and slurmd of one node, each started here in the foreground (so its PID is the
    daemon's own) and stopped by that PID; /etc/slurm/slurm.conf is replaced while it runs."""

    def __init__(self, state: Path, cpus: int = 2):
        self.state = state
        self.node = socket.gethostname().split(".")[0]
        self.cpus = max(1, min(cpus, os.cpu_count() or 1))
        self.memory_mb = node_memory_mb()
        self.processes: dict[str, subprocess.Popen] = {}
        self.backup: Path | None = None
        self.wrote_conf = False

    # -- start ---------------------------------------------------------------------------------------
    def start(self, timeout: float = 90) -> None:
        if _controller_up():
            raise ControllerError("a SLURM controller is already running on this machine; the slurm tests start "
                                  "their own (stop it first)")
        (self.state / "slurmctld").mkdir(parents=True, exist_ok=True)
        (self.state / "slurmd").mkdir(parents=True, exist_ok=True)
        self._write_conf()
        self._start_munge()
        self._spawn("slurmctld", ["slurmctld", "-D", "-i"])
        self._wait(_controller_up, timeout, "slurmctld to answer")
        self._spawn("slurmd", ["slurmd", "-D", "-N", self.node])
        self._wait(self._node_idle, timeout, f"node {self.node} to be idle in sinfo")

    def _write_conf(self) -> None:
        SLURM_CONF.parent.mkdir(parents=True, exist_ok=True)
        if SLURM_CONF.exists():
            self.backup = SLURM_CONF.with_name("slurm.conf.before-xkdbench-tests")
            shutil.copy2(SLURM_CONF, self.backup)
        SLURM_CONF.write_text(slurm_conf(self.node, self.state, self.cpus, self.memory_mb))
        self.wrote_conf = True

    def _start_munge(self) -> None:
        if _munge_works():  # a munged is already running (not ours: left alone)
            return
        munge = pwd.getpwnam("munge")
        key = Path("/etc/munge/munge.key")
        if not key.exists():
            out = _run(["mungekey", "--create", f"--keyfile={key}"])
            if out.returncode != 0:
                raise ControllerError(f"mungekey --create failed: {out.stderr}")
        os.chown(key, munge.pw_uid, munge.pw_gid)
        key.chmod(0o400)
        for directory in (Path("/run/munge"), Path("/var/lib/munge"), Path("/var/log/munge")):
            directory.mkdir(parents=True, exist_ok=True)
            os.chown(directory, munge.pw_uid, munge.pw_gid)
        # as the munge user, in the foreground: the Popen's PID is munged's
        self._spawn("munged", ["munged", "-F"], user=munge.pw_uid, group=munge.pw_gid, extra_groups=[])
        self._wait(_munge_works, 30, "munged to answer")

    def _spawn(self, name: str, cmd: list[str], **kwargs) -> None:
        log = open(self.state / f"{name}.out", "w")  # noqa: SIM115 (closed with the process)
        self.processes[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                start_new_session=True, **kwargs)

    def _node_idle(self) -> bool:
        out = _run(["sinfo", "-h", "-N", "-o", "%T"], timeout=10)
        return out.returncode == 0 and out.stdout.strip() == "idle"

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise ControllerError(f"{name} exited ({process.returncode}) while waiting for {what}\n"
                                          + self.diagnostics())
            if ready():
                return
            time.sleep(1)
        raise ControllerError(f"timed out after {timeout:.0f} s waiting for {what}\n" + self.diagnostics())

    # -- inspect -------------------------------------------------------------------------------------
    def log(self, name: str) -> str:
        path = self.state / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stuck_jobs(self) -> list[str]:
        """Pending jobs whose reason never clears on this node (a request beyond its CPUs, memory or GRES,
        a wrong partition): waiting for them would hang the tests. Waiting for CPUs (`Resources`), for
        an earlier job (`Priority`) or for none is normal."""
        try:
            out = _run(["squeue", "-h", "-t", "PD", "-o", "%i %r"], timeout=30)
        except subprocess.TimeoutExpired:
            return []
        normal = {"Resources", "Priority", "None", "Dependency", "BeginTime"}
        return [line for line in out.stdout.splitlines() if line.split()[-1] not in normal]

    def diagnostics(self, tail: int = 4000) -> str:
        parts = []
        for command in (["sinfo", "-N", "-l"], ["squeue", "-l"], ["scontrol", "show", "node"]):
            try:
                out = _run(command, timeout=10)
                parts.append(f"$ {' '.join(command)}\n{out.stdout}{out.stderr}")
            except (OSError, subprocess.TimeoutExpired) as error:
                parts.append(f"$ {' '.join(command)}: {error}")
        for name in ("slurmctld.log", "slurmd.log", "slurmctld.out", "slurmd.out", "munged.out"):
            path = self.state / name
            if path.exists():
                parts.append(f"--- {path} (last {tail} characters)\n{path.read_text(errors='replace')[-tail:]}")
        return "\n".join(parts)

    # -- stop ----------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Cancel what is left in the queue, stop the daemons by PID (slurmd, slurmctld, munged), restore
        /etc/slurm/slurm.conf."""
        try:
            if "slurmctld" in self.processes and self.processes["slurmctld"].poll() is None:
                _run(["scancel", "--user", "root"], timeout=20)
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and _run(["squeue", "-h"], timeout=10).stdout.strip():
                    time.sleep(1)
        except (OSError, subprocess.TimeoutExpired):
            pass
        finally:
            for name in ("slurmd", "slurmctld", "munged"):
                process = self.processes.pop(name, None)
                if process is None:
                    continue
                if process.poll() is None:
                    process.terminate()
                    try:
                        process.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        process.kill()
                        process.wait(timeout=10)
            if self.wrote_conf:
                if self.backup is not None:
                    os.replace(self.backup, SLURM_CONF)
                else:
                    SLURM_CONF.unlink(missing_ok=True)
                self.wrote_conf = False


if __name__ == "__main__":
    # `python -m tests.slurm.controller` (root): the tests' controller, until Ctrl-C
    import tempfile

    ensure_packages()
    controller = Controller(Path(tempfile.mkdtemp(prefix="xkdbench-slurm-")))
    try:
        controller.start()
        print(f"node {controller.node} idle; state and logs in {controller.state}; Ctrl-C stops it", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        controller.stop()
