"""BENCHMARKS.md: `make bench` (tests/benchmarks/run_all.py) writes one page from the benchmarks' reported figures,
merged by benchmark into tests/benchmarks/results.json, so a partial run never deletes figures."""
import importlib.util, json, shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / 'tests' / 'benchmarks'


def _run_all():
    spec = importlib.util.spec_from_file_location('run_all_page', BENCH / 'run_all.py')
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod


def _fake_repo(tmp_path, monkeypatch, benches: dict):
    "tmp/tests/benchmarks holding _report.py and the given fake bench scripts; run_all pointed at it."
    here = tmp_path / 'tests' / 'benchmarks'; here.mkdir(parents=True)
    shutil.copy(BENCH / '_report.py', here / '_report.py')
    for name, code in benches.items(): (here / f'{name}.py').write_text(code)
    mod = _run_all()
    monkeypatch.setattr(mod, 'HERE', here)
    return mod, here


def _bench(doc, *figures, fail=False):
    lines = [f'"""{doc}"""', 'import sys', 'from _report import report']
    lines += [f'report({n!r}, {v!r}, {u!r}, {w!r}, threads=1)' for n, v, u, w in figures]
    if fail: lines.append('sys.exit(2)')
    return '\n'.join(lines) + '\n'


def _table_rows(page, name):
    "The figure rows of one benchmark's table, as lists of cells."
    sec = page.split(f'\n## {name}\n', 1)[1].split('\n## ', 1)[0]
    rows = [l for l in sec.splitlines() if l.startswith('| ') and not l.startswith('| what is measured')]
    return [[c.strip() for c in l.strip('|').split(' | ')] for l in rows]


def test_run_all_writes_the_page_and_merges(tmp_path, monkeypatch, capfd):
    mod, here = _fake_repo(tmp_path, monkeypatch, {
        'bench_a': _bench('Speed of A.', ('a_speed', 12.5, 'images/s', 'drawing A, one core')),
        'bench_b': _bench('Memory of B.', ('b_mem', 276, 'MiB', 'peak memory of B'), ('b_time', 1.25, 's', 'B in all')),
    })
    page = tmp_path / 'BENCHMARKS.md'
    assert mod.page_path() == page and mod.results_path() == here / 'results.json'
    assert mod.main([]) == 0
    out = capfd.readouterr().out
    assert 'BENCH {' in out and 'wrote' in out
    text = page.read_text()
    assert 'make bench' in text and 'BENCH_ARGS=--all' in text and 'results.json' in text
    assert '12.5 images/s' in text and '276 MiB' in text and '1.25 s' in text
    a, b = _table_rows(text, 'bench_a'), _table_rows(text, 'bench_b')
    assert len(a) == 1 and len(b) == 2
    for what, fig, cmd, date, machine, load in a + b:   # every row: command, date, machine, load
        assert cmd.startswith('`') and 'tests/benchmarks/bench_' in cmd, cmd
        assert len(date) == 10 and date[4] == date[7] == '-', date
        assert 'cores' in machine and 'torch' in machine and '1 thread' in machine, machine
        assert '→' in load
    res = json.loads((here / 'results.json').read_text())
    first_a = res['benchmarks']['bench_a']['rows']
    assert {'name', 'what', 'value', 'unit', 'command', 'date', 'machine', 'load_before', 'load_after', 'threads'} <= set(first_a[0])

    # a partial run (--only) replaces that benchmark's rows and keeps the others'
    (here / 'bench_b.py').write_text(_bench('Memory of B.', ('b_mem', 300, 'MiB', 'peak memory of B')))
    assert mod.main(['--only', 'bench_b']) == 0
    text = page.read_text()
    assert '12.5 images/s' in text and '300 MiB' in text and '276 MiB' not in text and '1.25 s' not in text
    assert json.loads((here / 'results.json').read_text())['benchmarks']['bench_a']['rows'] == first_a

    # a failing benchmark keeps its previous rows (even those it printed before failing are not taken) and says so
    (here / 'bench_a.py').write_text(_bench('Speed of A.', ('a_speed', 99.9, 'images/s', 'drawing A, one core'), fail=True))
    assert mod.main(['--only', 'bench_a']) == 1
    text = page.read_text()
    assert '12.5 images/s' in text and '99.9' not in text and 'failed' in text
    capfd.readouterr()

    # --list and --dry-run write nothing; --render rewrites the page from results.json alone
    page.unlink()
    assert mod.main(['--list']) == 0 and mod.main(['--dry-run']) == 0 and not page.exists()
    assert mod.main(['--render']) == 0 and '300 MiB' in page.read_text()


def test_no_figures_no_page(tmp_path, monkeypatch):
    "Benchmarks that report nothing (or fail) on a first run write no page: no figure without a command."
    mod, here = _fake_repo(tmp_path, monkeypatch, {'bench_x': 'print("x ran")\n', 'bench_y': 'raise SystemExit(3)\n'})
    assert mod.main([]) == 1
    assert not (tmp_path / 'BENCHMARKS.md').exists() and not (here / 'results.json').exists()


def test_render_and_merge_directly():
    mod = _run_all()
    m = dict(cpu='Test CPU', cores=2, usable_cores=2, memory_gib=8.0, os='Linux', python='3.11', torch='2.x', numpy='2.x')
    run = lambda name, rc, rows: dict(name=name, title=f'{name} title', rc=rc, rows=rows, date='2030-01-02 03:04 UTC',
                                      wall_s=1.0, load_before=0.5, load_after=1.5, machine=m)
    row = lambda n, v: dict(name=n, what=f'{n} measured', value=v, unit='images/s', command=f'python {n}.py', threads=2)
    r = mod.merge({}, [run('bench_p', 0, [row('p', 1.5)]), run('bench_q', 0, [row('q', 2.5)])])
    r = mod.merge(r, [run('bench_q', 5, [row('q', 7.5)]), run('bench_r', 1, [])])
    assert [x['value'] for x in r['benchmarks']['bench_q']['rows']] == [2.5]
    assert r['benchmarks']['bench_q']['last_failure']['exit_status'] == 5 and 'rows' not in r['benchmarks']['bench_r']
    page = mod.render_page(r)
    assert page.startswith('# Benchmarks') and '2.5 images/s' in page and '7.5' not in page
    (what, fig, cmd, date, machine, load), = _table_rows(page, 'bench_p')
    assert (what, fig, cmd, date, load) == ('p measured', '1.5 images/s', '`python p.py`', '2030-01-02', '0.50 → 1.50')
    assert machine == 'Test CPU, 2 cores, torch 2.x, 2 threads'
    assert 'no figures yet' in page   # bench_r
    assert mod.render_page(mod.merge({}, [])).count('No benchmark has been run yet') == 1


def test_report_refuses_what_was_not_measured(monkeypatch, capsys, tmp_path):
    spec = importlib.util.spec_from_file_location('_report_t', BENCH / '_report.py')
    rep = importlib.util.module_from_spec(spec); spec.loader.exec_module(rep)
    import pytest
    for bad in (float('nan'), float('inf'), None, 'fast', True):
        with pytest.raises(ValueError): rep.report('x', bad, 's', 'x')
    f = tmp_path / 'rows.jsonl'
    monkeypatch.setenv(rep.ENV, str(f))
    rep.report('x', 3, 's', 'a thing', threads=1, argv=['--n', '5'])
    line = capsys.readouterr().out.strip()
    assert line.startswith('BENCH ') and json.loads(line[6:]) == json.loads(f.read_text())
    assert json.loads(f.read_text())['command'].endswith('--n 5')


def test_the_benchmarks_report_their_figures():
    "Every bench script reports through _report (so run_all can put its figures on the page)."
    for p in sorted(BENCH.glob('bench_*.py')):
        assert 'from _report import report' in p.read_text() and 'report(' in p.read_text(), p.name
