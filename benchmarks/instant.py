"""Wall time of the commands a user waits for without training: `--help`, `methods --json`, a refused typo
(`run --method lorra`) and `run SUITE --dry-run` of built-in suites, each in a fresh process (imports
included, as a user meets them). With several --src folders (e.g. an older checkout's src/), the sources are
alternated run by run, so that both see the same load (/work/shared/MEASUREMENT.md); each line gives the median
and the min-max of the repeats.

    python benchmarks/instant.py                                   # the commands, 3 repeats
    python benchmarks/instant.py --suite quickstart --suite pu2023 --repeats 3
    python benchmarks/instant.py --src /tmp/old/src --src src --suite pu2023-offline

This is a script that prints numbers, not a test.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMANDS = [["--help"], ["methods", "--json"], ["run", "--method", "lorra"]]


def timed(src: str, args: list[str], store: Path) -> float:
    environment = {**os.environ, "PYTHONPATH": src}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "peftbench.cli", *args, "--store", str(store)]
                          if args[0] == "run" else [sys.executable, "-m", "peftbench.cli", *args],
                          env=environment, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode not in (0, 2):
        raise SystemExit(f"peftbench {' '.join(args)} failed ({done.returncode}): {done.stderr[-500:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", action="append", help="a peftbench src/ folder (repeatable; default: this one)")
    parser.add_argument("--suite", action="append", default=[], help="time `run SUITE --dry-run` (repeatable)")
    parser.add_argument("--no-commands", action="store_true", help="time only the dry runs")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    sources = args.src or [str(Path(__file__).resolve().parent.parent / "src")]
    jobs = ([] if args.no_commands else COMMANDS) + [["run", suite, "--dry-run"] for suite in args.suite]
    print(f"load before: {os.getloadavg()[0]:.1f} (1-min average), {os.cpu_count()} CPUs", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        store = Path(folder) / "results.db"  # none: a dry run reads the store only to mark runs stored
        for job in jobs:
            times: dict[str, list[float]] = {src: [] for src in sources}
            for _ in range(args.repeats):
                for src in sources:
                    times[src].append(timed(src, job, store))
            for src in sources:
                spread = f"{min(times[src]):.1f}-{max(times[src]):.1f}"
                print(f"peftbench {' '.join(job):40} {src:30} median {statistics.median(times[src]):7.1f} s"
                      f"  ({spread} s, {args.repeats} runs)", flush=True)
    print(f"load after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
