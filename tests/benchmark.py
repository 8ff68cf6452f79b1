"""Time every implemented script against its budget in docs/implementation.md.

    python tests/benchmark.py                 # time every implemented script
    python tests/benchmark.py microgpt        # only the scripts named
    python tests/benchmark.py --write-readme  # also refresh the runtime table in README.md

Each script runs as a user runs it (`python path/to/script.py`, no arguments) from an empty
temporary directory; the wall time includes interpreter start-up. Runs are sequential so
they do not compete for the two cores of the CI machine. Exits with status 1 if any script
fails or goes over its budget. Timing lives here, not in the tests, which only guard each
full run with a generous timeout.
"""
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from support import ROOT, implemented_specs  # noqa: E402

README = ROOT / "README.md"
START, END = "<!-- BENCHMARK:START -->", "<!-- BENCHMARK:END -->"


def machine_description():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            found = re.search(r"^model name\s*:\s*(.+)$", f.read(), re.M)
            cpu = found.group(1).strip() if found else cpu
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores, {platform.system()}, "
            f"Python {platform.python_version()}")


def time_script(spec):
    with tempfile.TemporaryDirectory() as workdir:
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, str(ROOT / spec.path)], cwd=workdir,
                              capture_output=True, text=True)
        elapsed = time.perf_counter() - start
    return elapsed, proc


def readme_table(rows, machine):
    lines = [f"Measured by `python tests/benchmark.py` on {machine}.", "",
             "| script | what it teaches | wall time | budget | status |", "|---|---|---|---|---|"]
    for spec, elapsed, ok in rows:
        status = "ok" if ok and elapsed <= spec.budget_seconds else "OVER BUDGET" if ok else "FAILED"
        lines.append(f"| `{spec.path}` | {spec.title} | {elapsed:.1f} s | "
                     f"{spec.budget_seconds:g} s | {status} |")
    return "\n".join(lines)


def main(argv):
    write_readme = "--write-readme" in argv
    wanted = {a for a in argv if not a.startswith("--")}
    specs = [s for s in implemented_specs() if not wanted or s.name in wanted]
    machine = machine_description()
    print(f"machine: {machine}\n")
    print(f"{'script':<36} {'wall time':>10} {'budget':>8}  status")
    rows, all_ok = [], True
    for spec in specs:
        elapsed, proc = time_script(spec)
        ok = proc.returncode == 0
        within = ok and elapsed <= spec.budget_seconds
        all_ok = all_ok and within
        status = "ok" if within else "OVER BUDGET" if ok else f"FAILED (exit {proc.returncode})"
        print(f"{spec.path:<36} {elapsed:>9.1f}s {spec.budget_seconds:>7g}s  {status}")
        if not ok:
            print(proc.stderr[-2000:])
        rows.append((spec, elapsed, ok))
    if write_readme:
        if wanted:
            sys.exit("--write-readme needs a run of every script (name none)")
        text = README.read_text(encoding="utf-8")
        if START not in text or END not in text:
            sys.exit(f"README.md has no {START} ... {END} block to refresh")
        head, rest = text.split(START, 1)
        _, tail = rest.split(END, 1)
        README.write_text(f"{head}{START}\n{readme_table(rows, machine)}\n{END}{tail}",
                          encoding="utf-8")
        print("\nREADME.md runtime table refreshed.")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
