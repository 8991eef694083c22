"""Fault tolerance: scripted faults in a real simulation, and what survived them.

One Flower simulation of the tiny LoRA classifier on synthetic DermaMNIST,
four sites, ``min-sites = 1``, with every fault of :data:`SCENARIOS` scripted
through the ``faults`` run-config key (``fedmed.faults``): site 1 sends NaN
in round 1; site 3's data file is a torn copy (truncated npz) for the whole
run; the server, Ray and every actor are killed (SIGKILL of the process
group) once round 1 is recorded, and the run is restarted with ``--resume``;
site 2 then sends a wrong-shape update and site 0 raises in round 2; site 1
stalls past ``round-timeout-s`` in round 3.

Each scenario's outcome is read back from the run directory (``metrics.jsonl``
and ``checkpoints/``), never assumed: rejected replies and their reasons,
timed-out sites (neither accepted nor rejected), the round the run resumed at.
"Nothing lost" means every round whose train record says ``ok`` has its
checkpoint, accepted + rejected + timed-out replies add up to the sites asked,
the rounds ran 1..R exactly once, and the checkpoints and records written
before the kill are byte-identical afterwards.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from fedmed.bench.results import REPO_ROOT
from fedmed.commands import simulate_command
from fedmed.data.synth_dermamnist import synthesize
from fedmed.runs import NO_REPLY

SITES = 4
KILL_AFTER_ROUND = 1
RESUMED = "server_killed_and_resumed"
CORRUPT = "corrupt_data_file"


@dataclass(frozen=True)
class Scenario:
    """One scripted fault and the outcome it must end in.

    ``fault`` is the ``fedmed.faults`` kind scripted for ``site`` in ``round``
    (``None`` for faults made outside the ClientApp); ``marker`` is text the
    server's rejection reason must hold, so a rejection for another cause does
    not pass for this one.
    """

    name: str
    site: int
    round: int
    fault: str | None
    expected: str
    marker: str = ""


SCENARIOS = (
    Scenario("nan_update", 1, 1, "nan", "rejected", "NaN"),
    Scenario(CORRUPT, 3, 1, None, "rejected", "truncated or corrupt"),
    Scenario(RESUMED, -1, KILL_AFTER_ROUND + 1, None, "resumed"),
    Scenario("wrong_shape_update", 2, 2, "shape", "rejected", "shape"),
    Scenario("client_raises", 0, 2, "raise", "rejected", "InjectedFault"),
    Scenario("client_times_out", 1, 3, "sleep", "timed_out"),
)


def fault_plan(scenarios: Sequence[Scenario]) -> str:
    """The ``faults`` run-config value scripting the ClientApp faults."""
    return ",".join(f"{s.fault}@{s.site}:{s.round}" for s in scenarios if s.fault)


def _records(run: Path) -> list[dict]:
    metrics = run / "metrics.jsonl"
    text = metrics.read_text() if metrics.exists() else ""
    return [json.loads(x) for x in text.splitlines() if x.strip()]


def corrupt_site_file(data: Path, site: int) -> Path:
    """Truncate the site's npz to half its size (a torn copy)."""
    target = next((data / f"site_{site}").glob("*.npz"))
    payload = target.read_bytes()
    target.write_bytes(payload[: len(payload) // 2])
    return target


def corrupt_when(started: Callable[[], bool], data: Path, site: int) -> None:
    """Tear the site's npz (in a background thread) once ``started()`` holds.

    ``fedmed simulate`` refuses a data folder with an unreadable file before
    anything runs; what this scenario measures is a site whose data breaks
    while the federation runs (a torn copy), which the others must survive.
    """

    def tear() -> None:
        deadline = time.time() + 600
        while not started() and time.time() < deadline:
            time.sleep(0.05)
        corrupt_site_file(data, site)

    threading.Thread(target=tear, daemon=True).start()


def lost_checkpoints(run: Path) -> list[int]:
    """Rounds whose train record is ``ok`` but whose checkpoint is missing."""
    ok = [
        r["round"]
        for r in _records(run)
        if r["phase"] == "train" and r["status"] == "ok"
    ]
    folder = run / "checkpoints"
    return [k for k in ok if not (folder / f"round_{k}.safetensors").is_file()]


def _outcome(train: dict, site: int, marker: str = "") -> tuple[str, str]:
    """How ``site``'s reply ended, and the rejection reason.

    A site that failed before sending any metrics is labelled ``node-<id>`` by
    the strategy; it is matched by its reason's ``marker``.
    """
    for item in train.get("rejected", []):
        unnamed = item["site"].startswith("node-") and marker
        if item["site"] == str(site) or (unnamed and marker in item["reason"]):
            if item["reason"] == NO_REPLY:  # asked, never answered
                return "timed_out", ""
            return "rejected", item["reason"]
    if str(site) in train.get("sites", {}):
        return "accepted", ""
    return "timed_out", ""


def _accounted(train: dict) -> bool:
    """Every site's reply of this round is accounted for, exactly once.

    Accepted + rejected + silent (timed-out) sites add up to the sites asked,
    and only a site scripted to stall this round may be silent. Sites the
    strategy could not name are identified by their scenario's marker.
    """
    rnd = train["round"]
    mine = [s for s in SCENARIOS if s.marker and (s.round == rnd or s.name == CORRUPT)]
    markers = {s.site: s.marker for s in mine}
    silent = {
        k
        for k in range(SITES)
        if _outcome(train, k, markers.get(k, ""))[0] == "timed_out"
    }
    stalled = {s.site for s in SCENARIOS if s.fault == "sleep" and s.round == rnd}
    refused = [r for r in train.get("rejected", []) if r["reason"] != NO_REPLY]
    answered = train.get("accepted", 0) + len(refused)
    return answered + len(silent) == SITES and silent <= stalled


@dataclass
class FaultyRun:
    """What one faulty run left behind, for the scenario rows."""

    folder: Path
    rounds: int
    exit_code: int
    resumed_at: int | None = None
    before_kill: tuple[dict[str, str], list[dict]] | None = None
    kept_before_kill: bool = True


def _ending(scenario: Scenario, run: FaultyRun, record: dict) -> tuple[str, str, str]:
    """``(expected, outcome, reason)`` of one scenario; ``record`` is its round's
    train record (empty when the round never ran)."""
    if scenario.name == RESUMED:
        outcome = f"resumed at round {run.resumed_at}" if run.resumed_at else "failed"
        reason = f"SIGKILL of server, Ray and actors after round {KILL_AFTER_ROUND}"
        return f"resumed at round {scenario.round}", outcome, reason
    if not record:
        return scenario.expected, "run_failed", ""
    outcome, reason = _outcome(record, scenario.site, scenario.marker)
    if scenario.marker not in reason:
        outcome = f"{outcome} (reason lacks {scenario.marker!r})"
    return scenario.expected, outcome, reason


def scenario_row(scenario: Scenario, run: FaultyRun) -> dict:
    """One scenario's outcome, read back from the run folder, and whether it
    survived: ended as expected, the run finished, rounds 1..R each recorded
    once, every reply accounted for, nothing written before a kill changed,
    no ok round without its checkpoint."""
    trains = [r for r in _records(run.folder) if r["phase"] == "train"]
    record = next((r for r in trains if r["round"] == scenario.round), {})
    expected, outcome, reason = _ending(scenario, run, record)
    lost = lost_checkpoints(run.folder)
    rounds_once = [r["round"] for r in trains] == list(range(1, run.rounds + 1))
    accounted = bool(record) and _accounted(record)
    return {
        "scenario": scenario.name,
        "site": scenario.site,
        "round": scenario.round,
        "expected": expected,
        "outcome": outcome,
        "reason": reason.strip()[-120:],
        "round_status": record.get("status", "missing"),
        "accepted_updates": record.get("accepted", 0),
        "replies_accounted": accounted,
        "run_exit_code": run.exit_code,
        "rounds_completed": len({r["round"] for r in trains}),
        "checkpoints_lost": len(lost),
        "records_before_kill_kept": run.kept_before_kill,
        "survived": outcome == expected
        and run.exit_code == 0
        and rounds_once
        and record.get("status") == "ok"
        and accounted
        and run.kept_before_kill
        and not lost,
    }


def _digest(run: Path) -> dict[str, str]:
    files = sorted((run / "checkpoints").glob("round_*.safetensors"))
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def _train_recorded(run: Path, server_round: int) -> bool:
    return any(
        r["phase"] == "train" and r["round"] >= server_round for r in _records(run)
    )


def kill_after_round(cmd: list[str], run: Path, server_round: int, limit_s: float):
    """Start ``cmd``; SIGKILL its whole process group once ``server_round`` is
    recorded (its train record, written after its checkpoint)."""
    proc = subprocess.Popen(
        cmd,
        cwd=REPO_ROOT,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + limit_s
    while not _train_recorded(run, server_round):
        if proc.poll() is not None or time.time() > deadline:
            break
        time.sleep(0.2)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _restart_after_kill(cmd: list[str], run: FaultyRun) -> list[str]:
    """Kill the run after :data:`KILL_AFTER_ROUND`; note what must survive;
    return the command that resumes it."""
    kill_after_round(cmd, run.folder, KILL_AFTER_ROUND, limit_s=600)
    state = json.loads((run.folder / "checkpoints" / "state.json").read_text())
    run.resumed_at = int(state["last_round"]) + 1
    run.before_kill = (_digest(run.folder), _records_until(run))
    return [*cmd, "--resume"]


def _records_until(run: FaultyRun) -> list[dict]:
    """Records of the rounds the resumed run must not touch."""
    last = (run.resumed_at or 1) - 1
    return [r for r in _records(run.folder) if r["round"] <= last]


def run_faulty(
    work_dir: Path, scenarios: Sequence[Scenario], timeout_s: float
) -> FaultyRun:
    """Run the federation with ``scenarios`` scripted (killed and resumed if
    :data:`RESUMED` is among them); what it left behind."""
    data, folder = work_dir / "faults-data", work_dir / "faults-run"
    synthesize(data, SITES, samples_per_site=100, seed=4, heldout_samples=200)
    names = {s.name for s in scenarios}
    pristine = {p: p.read_bytes() for p in data.glob("site_*/*.npz")}
    if CORRUPT in names:
        site = next(s.site for s in SCENARIOS if s.name == CORRUPT)
        # a fresh run has passed its checks once it writes config.json
        corrupt_when((folder / "config.json").exists, data, site)
    sets = [
        f"faults={fault_plan(scenarios)}",
        "min-sites=1",
        f"round-timeout-s={timeout_s}",
        f"fault-sleep-s={timeout_s + 10}",
    ]
    run = FaultyRun(folder, max(s.round for s in scenarios), exit_code=0)
    tiny = REPO_ROOT / "configs" / "classify_tiny.toml"
    cmd = simulate_command(
        "classify", folder, data, SITES, run.rounds, run_config=tiny, sets=sets
    )
    if RESUMED in names:
        cmd = _restart_after_kill(cmd, run)
        for path, payload in pristine.items():  # the resumed run starts checked
            path.write_bytes(payload)
        if CORRUPT in names:
            # a resumed run has passed its checks once it appends to metrics
            metrics = folder / "metrics.jsonl"
            size = metrics.stat().st_size
            corrupt_when(lambda: metrics.stat().st_size > size, data, site)
    done = subprocess.run(
        cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900
    )
    run.exit_code = done.returncode
    if run.before_kill is not None:
        digests, kept = run.before_kill
        after = _digest(folder)
        unchanged = all(after.get(name) == sha for name, sha in digests.items())
        run.kept_before_kill = unchanged and _records_until(run) == kept
    return run


def run_faults(quick: bool, work_dir: Path) -> tuple[list[dict], dict]:
    """Every scenario's row; the detail keeps the plan and the run folder."""
    timeout_s = 60.0 if quick else 120.0
    run = run_faulty(work_dir, SCENARIOS, timeout_s)
    rows = [scenario_row(s, run) for s in SCENARIOS]
    return rows, {
        "plan": fault_plan(SCENARIOS),
        "sites": SITES,
        "round_timeout_s": timeout_s,
        "corrupt_site": next(s.site for s in SCENARIOS if s.name == CORRUPT),
        "kill_after_round": KILL_AFTER_ROUND,
        "run": str(run.folder),
    }
