"""The benchmarks' machine-readable output, which `run_all.py` collects into BENCHMARKS.md.

A benchmark calls `report(name, value, unit, what, threads=...)` once per figure. Each call prints one line
`BENCH {json}` (keys: name, what, value, unit, command, threads, note) and, when the script runs under run_all.py,
appends the same JSON to the file named by $CXR_BENCH_RESULTS. The page's date, machine and load average are added by
run_all.py, which measures them around the benchmark's process. The figure is the value the benchmark measured: never
pass a number that this process did not produce.
"""
import json, math, numbers, os, shlex, sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ENV = 'CXR_BENCH_RESULTS'


def _rel(p) -> str:
    "`p` relative to the repository root when it lies inside it (the venv's python is not resolved: keep .venv/bin/python)."
    p = Path(p).absolute()
    for base in (REPO, REPO.resolve()):
        try: return str(p.relative_to(base))
        except ValueError: pass
    return str(p)


def command(argv=None) -> str:
    "The command line that reproduces this process's figures, from the repository root."
    exe = _rel(sys.executable)
    exe = exe if not Path(exe).is_absolute() else Path(exe).name
    args = sys.argv[1:] if argv is None else [str(a) for a in argv]
    return ' '.join(shlex.quote(x) for x in [exe, _rel(sys.argv[0]), *args])


def report(name: str, value, unit: str, what: str, threads=None, note: str = None, argv=None) -> dict:
    "Print (and, under run_all.py, record) one figure; `argv`: the arguments `main(argv)` was given, if not sys.argv."
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f'benchmark figure {name!r}: {value!r} is not a finite number')
    value = int(value) if isinstance(value, numbers.Integral) else float(value)
    row = dict(name=name, what=what, value=value, unit=unit, command=command(argv),
               threads=None if threads is None else int(threads))
    if note: row['note'] = note
    line = json.dumps(row)
    print('BENCH ' + line, flush=True)
    if os.environ.get(ENV):
        with open(os.environ[ENV], 'a') as f: f.write(line + '\n')
    return row
