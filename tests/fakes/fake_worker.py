"""Stand-in workers for runner tests: each misbehaves the way a real child can.

Run as ``python -m fake_worker SPEC`` with the behaviour in the spec's settings["fake"].
"""

import os
import signal
import sys
import time

from llmbench.record.cell import new_result, read_json, write_json_atomic


def main() -> None:
    spec = read_json(sys.argv[1])
    behaviour = spec["settings"]["fake"]
    result = new_result(spec["cell"], spec["settings"])
    if behaviour in ("slow_start", "hang_in_setup"):  # imports that take long (phase setup)
        write_json_atomic(spec["partial_path"], result)
        time.sleep(float(spec["settings"].get("fake_startup_s", 3600)))
    result["phase"] = "prefill"
    write_json_atomic(spec["partial_path"], result)
    print(f"fake worker: {behaviour} pid={os.getpid()}", flush=True)
    if behaviour in (
        "finish",
        "slow_start",
    ):  # a verdict, echoing what the runner's environment said
        result.update(status="unsupported", reason=os.environ.get("FAKE_ECHO") or "-")
        result["settings"]["malloc_mmap_threshold"] = os.environ.get("MALLOC_MMAP_THRESHOLD_")
        write_json_atomic(spec["partial_path"], result)
    elif behaviour == "hang":
        time.sleep(3600)
    elif behaviour == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif behaviour == "segfault":
        os.kill(os.getpid(), signal.SIGSEGV)
    elif behaviour == "exit3":
        sys.exit(3)
    elif behaviour == "ignore_sigterm":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        time.sleep(3600)


if __name__ == "__main__":
    main()
