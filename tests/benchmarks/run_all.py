"""Run the benchmarks (`make bench`): every tests/benchmarks/bench_*.py, one subprocess each, with this Python.

    .venv/bin/python tests/benchmarks/run_all.py [--all] [--only NAME ...] [--list] [--dry-run] [--render]

The long ones (LONG: the science comparison over seeds, the FracAtlas runs) are listed but run only with --all.
Each benchmark's output is streamed as it runs, followed by its elapsed time and exit status; a failing benchmark
does not stop the others, and the exit status is 1 if any failed. --list prints the benchmarks and whether each would
run; --dry-run prints the commands without running them.

The page: each benchmark reports its figures through `_report.report` (a `BENCH {json}` line, and a line in the file
named by $CXR_BENCH_RESULTS, which this script sets). This script adds the date, the machine (CPU model, cores,
torch version; the threads come with each figure) and the 1-minute load average before and after the benchmark's
process, merges them into tests/benchmarks/results.json by benchmark name (a benchmark that is not run, or fails,
keeps its previous rows), and rewrites BENCHMARKS.md at the repository root from that file. --render rewrites the page
from results.json without running anything.
"""
import argparse, json, os, platform, subprocess, sys, tempfile, time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
LONG = {  # name -> why it is not run by default
    'bench_science': 'hours on a CPU: the science comparison over seeds and the ablations',
    'bench_fracatlas': 'real data (../shared/data/fracatlas), long training',
    'bench_table1': 'about an hour on a CPU: the AALS Table 1 methods on the phantom over 3 seeds',
    'bench_calibrate': "an hour on a CPU: the supervised arm on each candidate phantom setting (issue 13's calibration)",
}
ENV = 'CXR_BENCH_RESULTS'   # the file each benchmark appends its figures to (see _report.py)
FORMAT = 1                  # of results.json


def benchmarks() -> list:
    "The bench_*.py files beside this script, sorted by name."
    return sorted(HERE.glob('bench_*.py'))


def results_path() -> Path:
    "The page's source, beside the benchmarks."
    return HERE / 'results.json'


def page_path() -> Path:
    "BENCHMARKS.md at the repository root (two levels above the benchmarks folder)."
    return HERE.parents[1] / 'BENCHMARKS.md'


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


def _version(dist):
    try:
        from importlib.metadata import version
        return version(dist)
    except Exception: return None


def _cpu_model() -> str:
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            k, _, v = line.partition(':')
            if k.strip() in ('model name', 'Hardware', 'Processor', 'cpu model') and v.strip(): return v.strip()
    except OSError: pass
    return platform.processor() or platform.machine() or 'unknown CPU'


def machine() -> dict:
    "The machine the benchmarks run on (the benchmarks run with this Python, so its torch is theirs)."
    try: usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError): usable = os.cpu_count()
    mem = None
    try:
        kb = next(int(l.split()[1]) for l in Path('/proc/meminfo').read_text().splitlines() if l.startswith('MemTotal:'))
        mem = round(kb / 2**20, 1)
    except (OSError, StopIteration, ValueError): pass
    return dict(cpu=_cpu_model(), cores=os.cpu_count(), usable_cores=usable, memory_gib=mem,
                os=f'{platform.system()} {platform.release()}', python=platform.python_version(),
                torch=_version('torch'), numpy=_version('numpy'))


def load1():
    "The 1-minute load average (None where the OS has none)."
    try: return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError): return None


def _title(path: Path) -> str:
    "The first paragraph of a benchmark's docstring, on one line."
    import ast
    try: doc = ast.get_docstring(ast.parse(path.read_text())) or ''
    except (OSError, SyntaxError): doc = ''
    return ' '.join(doc.strip().split('\n\n')[0].split())


def _read_rows(f: Path) -> list:
    rows = []
    if f.exists():
        for line in f.read_text().splitlines():
            if line.strip(): rows.append(json.loads(line))
    return rows


def run_one(path: Path) -> dict:
    "Run one benchmark (output streamed), with its figures, exit status, wall time, date, machine and load."
    fd, tmp = tempfile.mkstemp(prefix=f'{path.stem}_', suffix='.jsonl'); os.close(fd)
    before, t0 = load1(), time.time()
    date = datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')
    try:
        try: rc = subprocess.run(command(path), cwd=REPO, env={**os.environ, ENV: tmp}).returncode  # output streams through
        except OSError as e: print(f'{path.stem}: could not start: {e}', file=sys.stderr); rc = 127
        try: rows = _read_rows(Path(tmp))
        except (OSError, ValueError) as e: print(f'{path.stem}: unreadable figures: {e}', file=sys.stderr); rows = []
    finally: Path(tmp).unlink(missing_ok=True)
    return dict(name=path.stem, title=_title(path), rc=rc, rows=rows, date=date, wall_s=round(time.time() - t0, 1),
                load_before=before, load_after=load1(), machine=machine())


def load_results(path: Path = None) -> dict:
    path = path or results_path()
    if path.exists():
        r = json.loads(path.read_text())
        if r.get('format') != FORMAT: raise SystemExit(f'run_all.py: {path} has format {r.get("format")}, expected {FORMAT}')
        return r
    return dict(format=FORMAT, benchmarks={})


def merge(results: dict, runs: list) -> dict:
    """results.json updated by this invocation's runs, by benchmark name. A run that exited 0 with figures replaces
    its benchmark's rows; a failed run (or one with no figures) keeps the previous rows and records the failure."""
    out = dict(format=FORMAT, benchmarks={k: dict(v) for k, v in results.get('benchmarks', {}).items()})
    for r in runs:
        entry = out['benchmarks'].setdefault(r['name'], {})
        if r['title']: entry['title'] = r['title']
        if r['rc'] == 0 and r['rows']:
            run = {k: r[k] for k in ('date', 'wall_s', 'load_before', 'load_after', 'machine')}
            entry.update(run=run, rows=[{**row, **run} for row in r['rows']])
            entry.pop('last_failure', None)
        else:
            entry['last_failure'] = dict(date=r['date'], exit_status=r['rc'], wall_s=r['wall_s'],
                                         why='no figures reported' if r['rc'] == 0 else f"exit status {r['rc']}")
    return out


def _fmt(v) -> str:
    return f'{v:,}' if isinstance(v, (int, float)) else str(v)


def _machine_str(m: dict, threads=None) -> str:
    s = f"{m.get('cpu')}, {m.get('cores')} cores"
    if m.get('usable_cores') not in (None, m.get('cores')): s += f" ({m['usable_cores']} usable)"
    s += f", torch {m.get('torch')}"
    if threads is not None: s += f", {threads} thread{'s' if threads != 1 else ''}"
    return s


def _load_str(a, b) -> str:
    f = lambda x: 'n/a' if x is None else f'{x:.2f}'
    return f'{f(a)} → {f(b)}'


def _cell(s) -> str:
    return str(s).replace('|', '\\|').replace('\n', ' ')


def render_page(results: dict) -> str:
    "BENCHMARKS.md from results.json: a header, an index, and one table per benchmark (one row per figure)."
    bs = results.get('benchmarks', {})
    L = ['# Benchmarks', '',
         '<!-- Generated by tests/benchmarks/run_all.py from tests/benchmarks/results.json: do not edit by hand. -->', '',
         'The benchmarks\' speed and memory figures, which the notebooks and the README point to, are here. The page is written by '
         '`make bench` (`.venv/bin/python tests/benchmarks/run_all.py`), which runs every `tests/benchmarks/bench_*.py` '
         f"but the long ones ({', '.join(f'`{k}`' for k in sorted(LONG))}); `make bench BENCH_ARGS=--all` runs those "
         "too, and `make bench BENCH_ARGS='--only bench_model'` one benchmark. Its source is "
         '`tests/benchmarks/results.json`, merged by benchmark: a benchmark that is not run, or fails, keeps its '
         'previous rows, so each row carries the date, the machine and the load of the run that produced it.', '',
         'Each figure is a value its benchmark measured and reported (`BENCH {json}` lines); the command beside it '
         'reproduces it. The machine is often shared: the 1-minute load average before and after the benchmark says how '
         'busy it was (on N cores, a load near N or above means other processes took CPU time, and the figures are '
         'lower than an idle machine would give). The load after includes the benchmark\'s own threads, and the load '
         'before can include the benchmark that ran just before it: the 1-minute average decays over about a minute. Compare figures of one run with each other; across dates, machines '
         'and loads differences may be the machine\'s, not the code\'s.', '']
    if not bs:
        L += ['No benchmark has been run yet.', '']
        return '\n'.join(L)
    L += ['| benchmark | last run | wall time | load 1 min (before → after) | figures | status |', '|---|---|---|---|---|---|']
    for name in sorted(bs):
        e, run = bs[name], bs[name].get('run') or {}
        fail = e.get('last_failure')
        status = f"last attempt failed {fail['date']} ({fail['why']}); rows are older" if fail and run else \
                 f"failed {fail['date']} ({fail['why']}); no figures yet" if fail else 'ok'
        L.append(f"| [`{name}`](#{name}) | {run.get('date', '-')} | "
                 + (f"{run['wall_s']:,.1f} s" if 'wall_s' in run else '-') + ' | '
                 + (_load_str(run.get('load_before'), run.get('load_after')) if run else '-')
                 + f" | {len(e.get('rows', []))} | {_cell(status)} |")
    L.append('')
    for name in sorted(bs):
        e = bs[name]; run = e.get('run'); rows = e.get('rows', [])
        L += [f'## {name}', '']
        if e.get('title'): L += [_cell(e['title']), '']
        L.append(f"Rerun: `make bench BENCH_ARGS='--only {name}'`" + (' (a long one).' if name in LONG else '.'))
        if run:
            m = run['machine']
            L.append(f"Last run {run['date']}, {run['wall_s']:,.1f} s wall; machine: {_machine_str(m)}, "
                     f"{m.get('memory_gib')} GiB, {m.get('os')}, Python {m.get('python')}, numpy {m.get('numpy')}; "
                     f"1-minute load average {_load_str(run.get('load_before'), run.get('load_after'))}.")
        if e.get('last_failure'):
            f = e['last_failure']
            L.append(f"The last attempt, {f['date']}, failed ({f['why']}, after {f['wall_s']:,.1f} s)"
                     + ('; the rows below are from the run before.' if rows else '; no figures recorded.'))
        L.append('')
        if rows:
            L += ['| what is measured | figure | command | date | machine | load 1 min (before → after) |',
                  '|---|---|---|---|---|---|']
            for r in rows:
                fig = f"{_fmt(r['value'])} {r['unit']}" + (f" ({r['note']})" if r.get('note') else '')
                L.append(f"| {_cell(r['what'])} | {_cell(fig)} | `{_cell(r['command'])}` | {r['date'][:10]} | "
                         f"{_cell(_machine_str(r['machine'], r.get('threads')))} | {_load_str(r.get('load_before'), r.get('load_after'))} |")
            L.append('')
    return '\n'.join(L)


def write_page(results: dict, results_file: Path = None, page: Path = None) -> Path:
    "Write results.json and BENCHMARKS.md (each through a temporary file, so a crash leaves the old one)."
    results_file, page = results_file or results_path(), page or page_path()
    for p in benchmarks():  # the titles as the benchmarks' docstrings say today
        if p.stem in results.get('benchmarks', {}) and _title(p): results['benchmarks'][p.stem]['title'] = _title(p)
    for p, text in ((results_file, json.dumps(results, indent=1, ensure_ascii=False) + '\n'), (page, render_page(results))):
        tmp = p.with_name(p.name + '.tmp'); tmp.write_text(text); tmp.replace(p)
    return page


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--all', action='store_true', help=f"also run the long ones ({', '.join(sorted(LONG))})")
    ap.add_argument('--only', nargs='+', metavar='NAME', help='run only these (e.g. bench_metrics); long ones included')
    ap.add_argument('--list', action='store_true', help='list the benchmarks and stop')
    ap.add_argument('--dry-run', action='store_true', help='print the commands and stop')
    ap.add_argument('--render', action='store_true', help='rewrite BENCHMARKS.md from results.json and stop')
    args = ap.parse_args(argv)
    if args.render:
        print(f'wrote {write_page(load_results())}'); return 0
    todo = plan(args.all, args.only)
    if args.list:
        for p, runs, why in todo: print(f"{p.stem:<20} {'run' if runs else 'skip'}" + (f'  ({why})' if why else ''))
        return 0
    runs = []
    for p, run, why in todo:
        if not run:
            print(f'== {p.stem}: skipped ({why})', flush=True); continue
        cmd = command(p)
        print(f"== {p.stem}: {' '.join(cmd)}", flush=True)
        if args.dry_run: continue
        r = run_one(p); runs.append(r)
        status = 'ok' if r['rc'] == 0 else f"FAILED (exit status {r['rc']})"
        print(f"== {p.stem}: {status} in {r['wall_s']:.1f} s"
              f" ({len(r['rows'])} figures; load average {_load_str(r['load_before'], r['load_after'])})\n", flush=True)
    if runs:
        print('summary:')
        for r in runs: print(f"  {r['name']:<20} {'ok' if r['rc'] == 0 else 'FAILED (%d)' % r['rc']:<12} {r['wall_s']:8.1f} s")
    # the page: only when this run measured something, or the page already exists (then failures are noted on it)
    if any(r['rc'] == 0 and r['rows'] for r in runs) or (runs and results_path().exists()):
        print(f'wrote {write_page(merge(load_results(), runs))} (from {results_path()})')
    failed = [r['name'] for r in runs if r['rc'] != 0]
    if failed: print(f"run_all.py: {len(failed)} failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
