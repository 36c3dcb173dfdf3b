"""`ringback demo` as a user runs it, against the session's broker: a compressed practice
day of six practices (one per phone system, Google Voice's by e-mail through a real IMAP
server when dovecot is installed) ends with the KPI table, and the SMS the
Twilio stand-in received are exactly the ones the simulator's plan expects; the EHR's
patients and appointments went over the HL7 v2 feed, its flags over FHIR; Ctrl-C (SIGINT)
in the middle stops every process the demo started."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from ringback.dev import imap_server
from ringback.dev.demo import SUMMARY_PREFIX
from ringback.dev.simulator import plan as sim
from tests.conftest import ARTIFACTS, wait_for
from tests.dev.simulator.test_plan import day_plan

pytestmark = pytest.mark.integration

# A fast day: 10 practice hours in 30 s, 40 calls a day at the reference practice; six practices.
FAST = ["--practices", "6", "--calls", "40", "--speed", "1200", "--seed", "11"]


class DemoProcess:
    """`ringback demo` in its own session, its output collected line by line; run from an
    empty folder, its run folder (logs, secrets, practices file) kept with the artifacts."""

    def __init__(self, name: str, args: list[str], bootstrap: str) -> None:
        self.log_path = ARTIFACTS / name / "demo.out"
        self.run_dir = ARTIFACTS / name / "run"
        self.cwd = ARTIFACTS / name / "cwd"
        for folder in (self.run_dir, self.cwd):
            shutil.rmtree(folder, ignore_errors=True)
        self.cwd.mkdir(parents=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RINGBACK_", "TWILIO_", "SMTP_"))}
        env.update({"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "PYTHONUNBUFFERED": "1"})
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ringback.cli", "demo", "--data-dir", str(self.run_dir), *args],
            cwd=str(self.cwd),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        with open(self.log_path, "w") as log:
            for line in self.proc.stdout:
                self.lines.append(line.rstrip("\n"))
                log.write(line)
                log.flush()

    def output(self) -> str:
        return "\n".join(self.lines)

    def wait(self, timeout: float) -> int:
        code = self.proc.wait(timeout=timeout)
        self._reader.join(10)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def descendants(pid: int) -> set[int]:
    """Every process below `pid` (from /proc: parent links)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def finished_demo(kafka_bootstrap):
    demo = DemoProcess("test_demo", FAST, kafka_bootstrap)
    try:
        code = demo.wait(timeout=170)
    finally:
        demo.kill()
    # Everything it wrote went into its run folder, nothing into the directory it ran in.
    assert list(demo.cwd.iterdir()) == []
    assert (demo.run_dir / "practices.yaml").exists() and (demo.run_dir / "worker.log").exists()
    return code, demo.output()


def test_the_demo_day_ends_with_the_kpi_report_and_exit_0(finished_demo):
    code, out = finished_demo
    assert code == 0, out[-3000:]
    assert "Ringback KPI report - all practices" in out
    table = out[out.index("Ringback KPI report") :]
    total = next(line for line in table.splitlines() if line.startswith("TOTAL"))
    cells = total.split()
    assert int(cells[1]) > 0  # cases
    assert "%" in total and not total.split("%")[0].endswith(" 0.0")
    assert "Against manual call-log review" in out and "manual 6.2 h" in out
    assert "The reference practice (Maple Family Practice" in out


def test_the_sms_at_the_twilio_standin_are_the_plans_first_responses_and_follow_ups(finished_demo):
    code, out = finished_demo
    assert code == 0, out[-3000:]
    line = next(text for text in out.splitlines() if text.startswith(SUMMARY_PREFIX))
    summary = json.loads(line[len(SUMMARY_PREFIX) :])
    assert summary["first_responses_expected"] > 0
    assert summary["first_responses_sent"] == summary["first_responses_expected"], summary
    assert summary["sms_sent_by_step"] == summary["sms_expected_by_step"], summary
    assert summary["sms_not_planned"] == 0 and summary["sms_missing"] == 0, summary
    assert summary["sms_requests"] == summary["sms_sent"]  # no SMS was posted twice
    assert summary["player"]["unexpected"] == [], summary["player"]
    assert summary["cases_closed"] == summary["cases_expected"] > 0
    assert summary["kpi"]["cases"] == summary["cases_expected"]
    assert summary["kpi"]["new_patient_recovery"] > 0 and summary["kpi"]["first_response_median_s"] > 0
    assert summary["emails"] > 0 and summary["plan"]["practices"] == 6
    assert summary["emails_linking_a_task"] > 0  # staff e-mails link to the demo's console (#task=<id>)


def test_the_google_voice_practice_plays_by_email_when_dovecot_is_installed_and_says_so(finished_demo):
    code, out = finished_demo
    assert code == 0, out[-3000:]
    summary = json.loads(next(t for t in out.splitlines() if t.startswith(SUMMARY_PREFIX))[len(SUMMARY_PREFIX) :])
    gvoice, statuses = summary["gvoice"], summary["player"]["statuses"]
    assert gvoice["practices"] == ["cedar-womens"]
    if imap_server.available():  # CI installs dovecot: the e-mails went through IMAP and `gvoice watch`
        assert gvoice["path"] == "email" and "dovecot is installed" in gvoice["why"]
        assert statuses["call e-mail"] > 0 and statuses["call no-notification"] > 0  # answered: no mail
        assert "Google Voice at cedar-womens: its notification e-mails" in out
    else:
        assert gvoice["path"] == "audit_log" and "not installed" in gvoice["why"]
        assert statuses["call audit-row"] > 0 and statuses["import audit-log"] > 0
        assert "Google Voice at cedar-womens: the Admin console's audit-log export" in out


def test_the_ehr_goes_over_the_hl7_feed_and_only_the_flags_over_fhir(finished_demo):
    code, out = finished_demo
    assert code == 0, out[-3000:]
    line = next(text for text in out.splitlines() if text.startswith(SUMMARY_PREFIX))
    summary = json.loads(line[len(SUMMARY_PREFIX) :])
    # The same plan as the demo's: every Patient an ADT^A28, every Appointment an SIU (S13 when
    # moved), each answered AA by `ringback ehr hl7`; the flags through the FHIR connector.
    plan = day_plan(seed=11, n=6, speed=1200.0, calls=40)  # FAST; the EHR is the same on either Google Voice path
    resources = [r for e in plan.preload + [e for e in plan.events if e.kind == sim.EHR] for r in e.resources]
    kinds = Counter(r["resourceType"] for r in resources)
    moved = sum(1 for e in plan.events if e.kind == sim.EHR and e.resources[0]["resourceType"] == "Appointment")
    assert summary["ehr"] == {
        "hl7 ADT^A28": kinds["Patient"],
        "hl7 SIU^S12": kinds["Appointment"] - moved,
        "hl7 SIU^S13": moved,
        "fhir Flag": kinds["Flag"],
        "fhir flag records": kinds["Flag"],
    }
    assert moved > 0 and kinds["Flag"] > 0
    morning = next(text for text in out.splitlines() if text.startswith("· the EHR in the morning"))
    assert "HL7 v2 messages over MLLP" in morning and "each answered AA" in morning and "FHIR connector" in morning
    assert summary["ok"] is True, summary


def test_ctrl_c_stops_every_process_the_demo_started(kafka_bootstrap):
    demo = DemoProcess("test_demo_sigint", ["--practices", "6", "--speed", "1200", "--calls", "30"], kafka_bootstrap)
    try:
        wait_for(
            lambda: "practice day" in demo.output() or "%  " in demo.output() or demo.proc.poll() is not None,
            120,
            interval=0.2,
            message="the demo's day to start",
        )
        assert demo.proc.poll() is None, demo.output()
        started = descendants(demo.proc.pid)
        assert len(started) >= 6, started  # gateway, worker, sinks, console, CDR poller, gvoice watcher
        time.sleep(1.0)  # mid-day
        os.kill(demo.proc.pid, signal.SIGINT)
        code = demo.wait(timeout=60)
        assert code == 130, demo.output()[-2000:]
        assert "interrupted" in demo.output()
        wait_for(lambda: not any(alive(p) for p in started), 10, message="every child process to be gone")
    finally:
        demo.kill()


def test_children_stop_when_the_demo_is_killed(kafka_bootstrap):
    # SIGKILL gives the demo no chance to clean up: the kernel's parent-death signal
    # (ringback/dev/child_process.py) stops what it started.
    demo = DemoProcess("test_demo_sigkill", ["--practices", "6", "--speed", "1200", "--calls", "30"], kafka_bootstrap)
    try:
        wait_for(
            lambda: "practice day" in demo.output() or "%  " in demo.output() or demo.proc.poll() is not None,
            120,
            interval=0.2,
            message="the demo's day to start",
        )
        assert demo.proc.poll() is None, demo.output()
        started = descendants(demo.proc.pid)
        assert len(started) >= 5, started
        os.kill(demo.proc.pid, signal.SIGKILL)
        demo.wait(timeout=30)
        wait_for(lambda: not any(alive(p) for p in started), 30, message="every child process to be gone")
    finally:
        demo.kill()
