"""The harness itself can fail: a sanitizer report in the log of a process a
test started, a crash, or a report in a tool's output fails the test (see
helpers.cleanup_processes and docs/testing.md). Stand-in processes print what
ASan and UBSan print, so these run the same on every build."""
import signal
import time

import pytest

import helpers
from helpers import check_sanitizer_output, cleanup_processes, start_process

PY = "/usr/bin/python3"
UBSAN = "src/x.c:1:2: runtime error: signed integer overflow"
LSAN = "==1==ERROR: LeakSanitizer: detected memory leaks"


def stand_in(report_at, *, ready="up", on_term_exit=0):
    """A process that says `ready`, prints `report_at`'s report at "start" or
    on SIGTERM ("exit"), and exits with `on_term_exit` on SIGTERM."""
    code = f"""
import signal, sys, time
def term(*_):
    if {report_at == "exit"!r}:
        print({LSAN!r}, flush=True)
    sys.exit({on_term_exit})
signal.signal(signal.SIGTERM, term)
if {report_at == "start"!r}:
    print({UBSAN!r}, flush=True)
print({ready!r}, flush=True)
while True:
    time.sleep(0.05)
"""
    return start_process([PY, "-c", code], ready)


def test_a_report_while_running_fails_naming_the_process():
    proc = stand_in("start")
    with pytest.raises(AssertionError, match=rf"sanitizer report from [\s\S]*pid {proc.pid}\)[\s\S]*runtime error"):
        cleanup_processes()


def test_a_leak_report_at_exit_is_seen_because_sigterm_comes_first():
    proc = stand_in("exit")
    with pytest.raises(AssertionError, match=rf"pid {proc.pid}[\s\S]*LeakSanitizer"):
        cleanup_processes()


def test_a_process_killed_on_purpose_is_still_scanned():
    proc = stand_in("start")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with pytest.raises(AssertionError, match="runtime error"):
        cleanup_processes()


def test_a_process_killed_on_purpose_with_a_clean_log_passes():
    proc = stand_in(None)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    cleanup_processes()


def test_a_crash_fails_even_without_a_report():
    proc = stand_in(None)
    proc.send_signal(signal.SIGSEGV)
    proc.wait()
    with pytest.raises(AssertionError, match="died of signal 11"):
        cleanup_processes()


def test_a_module_fixture_process_is_scanned_after_each_test():
    proc = start_process([PY, "-c", f"import time; print('up', flush=True); time.sleep(0.3); "
                                    f"print({UBSAN!r}, flush=True); time.sleep(60)"], "up", persistent=True)
    try:
        deadline = time.monotonic() + 10
        while "runtime error" not in helpers.read_log(proc) and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(AssertionError, match="runtime error"):
            cleanup_processes()  # end of a test: the persistent one still runs, and is scanned
        assert proc.poll() is None
    finally:
        helpers._persistent.remove(proc)
        proc.kill()
        proc.wait()


def test_tool_output_is_checked():
    check_sanitizer_output(b"all good\n", "tool")
    with pytest.raises(AssertionError, match="sanitizer report from retectl"):
        check_sanitizer_output(LSAN.encode(), "retectl")
