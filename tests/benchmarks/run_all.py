"""Run the benchmarks (`make bench`): every tests/benchmarks/bench_*.py, one subprocess each, with this Python.

    .venv/bin/python tests/benchmarks/run_all.py [--all] [--only NAME ...] [--list] [--dry-run]

The long ones (LONG: the science comparison over seeds, the FracAtlas runs) are listed but run only with --all.
Each benchmark's output is streamed as it runs, followed by its elapsed time and exit status; a failing benchmark
does not stop the others, and the exit status is 1 if any failed. --list prints the benchmarks and whether each would
run; --dry-run prints the commands without running them.
"""
import argparse, subprocess, sys, time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
LONG = {  # name -> why it is not run by default
    'bench_science': 'hours on a CPU: the science comparison over seeds and the ablations',
    'bench_fracatlas': 'real data (../shared/data/fracatlas), long training',
}


def benchmarks() -> list:
    "The bench_*.py files beside this script, sorted by name."
    return sorted(HERE.glob('bench_*.py'))


def plan(run_long: bool = False, only=None) -> list:
    "(path, runs, reason) for each benchmark: whether it runs in this invocation and why not."
    only = {o.removesuffix('.py') for o in only} if only else None
    if only:
        unknown = only - {p.stem for p in benchmarks()}
        if unknown: raise SystemExit(f"run_all.py: no benchmark named {', '.join(sorted(unknown))} "
                                     f"(benchmarks: {', '.join(p.stem for p in benchmarks())})")
    out = []
    for p in benchmarks():
        if only is not None and p.stem not in only: out.append((p, False, 'not selected by --only'))
        elif p.stem in LONG and not run_long and only is None: out.append((p, False, f'long, needs --all: {LONG[p.stem]}'))
        else: out.append((p, True, ''))
    return out


def command(path: Path) -> list:
    return [sys.executable, str(path)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--all', action='store_true', help=f"also run the long ones ({', '.join(sorted(LONG))})")
    ap.add_argument('--only', nargs='+', metavar='NAME', help='run only these (e.g. bench_metrics); long ones included')
    ap.add_argument('--list', action='store_true', help='list the benchmarks and stop')
    ap.add_argument('--dry-run', action='store_true', help='print the commands and stop')
    args = ap.parse_args(argv)
    todo = plan(args.all, args.only)
    if args.list:
        for p, runs, why in todo: print(f"{p.stem:<20} {'run' if runs else 'skip'}" + (f'  ({why})' if why else ''))
        return 0
    results = []
    for p, runs, why in todo:
        if not runs:
            print(f'== {p.stem}: skipped ({why})', flush=True); continue
        cmd = command(p)
        print(f"== {p.stem}: {' '.join(cmd)}", flush=True)
        if args.dry_run: continue
        t0 = time.time()
        try: rc = subprocess.run(cmd, cwd=REPO).returncode   # output streams straight to this terminal
        except OSError as e: print(f'{p.stem}: could not start: {e}', file=sys.stderr); rc = 127
        dt = time.time() - t0
        results.append((p.stem, rc, dt))
        print(f"== {p.stem}: {'ok' if rc == 0 else f'FAILED (exit status {rc})'} in {dt:.1f} s\n", flush=True)
    if results:
        print('summary:')
        for name, rc, dt in results: print(f"  {name:<20} {'ok' if rc == 0 else f'FAILED ({rc})':<12} {dt:8.1f} s")
    failed = [n for n, rc, _ in results if rc != 0]
    if failed: print(f"run_all.py: {len(failed)} failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
