"""The papermill template with the `test` preset for every method; the run and sweep commands (resume, Slurm script,
shared data); the demo (`demo()` and its printed table); the benchmarks runner."""
import importlib.util, json, math, os, subprocess, sys, time
from pathlib import Path
import pandas as pd
import pytest
import yaml

import cxr_fracture.experiments as ex
import cxr_fracture.train as tr
from cxr_fracture.experiments import (run_experiment, expand_grid, sweep, collect_runs, comparison_table, resolve_params,
                                      template_parameters, experiments_dir, RunFailed, demo, slurm_script)
from cxr_fracture.train import METHODS, TrainConfig, TEMPLATE_ONLY

CLI = str(Path(sys.executable).parent / 'cxr-fracture')
REPO = Path(__file__).resolve().parents[1]


def log_lines(d: Path) -> list:
    return (d / 'metrics_log.jsonl').read_text().splitlines()


def untimed(line: str) -> dict:
    "A log line without its wall-clock fields."
    return {k: v for k, v in json.loads(line).items() if k not in ('time_s', 'images_per_s')}


def same_epoch(a: str, b: str) -> bool:
    """Two log lines of the same epoch: equal but for wall-clock fields; losses may differ in the last float bits
    (one was trained in the papermill kernel, the other in this process); NaN equals NaN."""
    a, b = untimed(a), untimed(b)
    close = lambda x, y: (x == y or (isinstance(x, float) and isinstance(y, float)
                                      and (math.isclose(x, y, rel_tol=1e-5) or (math.isnan(x) and math.isnan(y)))))
    return a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)


RESULT_KEYS = {'auroc', 'auroc_ci', 'pixel_froc', 'component_froc', 'recall_at_fp_0.1'}


@pytest.fixture(scope='module')
def phantom_root(tmp_path_factory):
    return tmp_path_factory.mktemp('phantom') / 'ph'   # drawn by the first run, shared by the others


@pytest.fixture(scope='module')
def method_runs(tmp_path_factory, phantom_root):
    "Every method of the method issue through papermill with the `test` preset, on one shared phantom."
    root = tmp_path_factory.mktemp('runs')
    out = {}
    for m in METHODS:
        out[m] = run_experiment('test', {'method': m, 'root': str(phantom_root)}, out=root / m)
    return root, out


def test_every_method_runs_the_template(method_runs):
    root, out = method_runs
    assert set(out) == set(METHODS) >= {'supervised', 'mean_teacher', 'pi_model', 'temporal_ensemble', 'aals', 'dynamic', 'symmetric'}
    for m, metrics in out.items():
        d = root / m
        for f in ('train.ipynb', 'model.pt', 'metrics.json', 'metrics_log.jsonl', 'predictions.csv', 'training_curves.png'):
            assert (d / f).exists(), (m, f)
        if METHODS[m].distills: assert any((d / 'checkpoints').iterdir())   # supervised: the shared stage-1 run's
        assert metrics['config']['method'] == m and metrics['config']['t'] == 0.4
        assert set(metrics) >= {'config', 'results', 'timing', 'versions', 'git_commit'}
        assert metrics['versions']['torch'] and 'torch CPU capability' in metrics['versions']['cpu']   # a CPU run's numbers depend on the processor
        best, log = metrics['best'], [json.loads(l) for l in log_lines(d)]
        line = [r for r in log if (r['stage'], r['epoch']) == (best['stage'], best['epoch'])]
        assert len(line) == 1, (m, best)                              # the best model is one epoch of the log
        v = line[0]['val_mean_auroc']
        assert (best['val_auroc'] is None) if v != v else best['val_auroc'] == pytest.approx(v)   # NaN: no AUROC
        assert best['global_step'] == line[0]['global_step'] and best['selected_by']
        assert metrics['timing']['attempts'] == 1 and metrics['timing']['train_seconds'] > 0
        for cls, r in metrics['results'].items():
            assert RESULT_KEYS <= set(r), (m, cls, set(r))
        rib = metrics['results']['rib_fracture']
        assert 0 <= rib['auroc'] <= 1 and rib['auroc_ci'][0] <= rib['auroc'] <= rib['auroc_ci'][1]
        assert 0 <= rib['pixel_froc'] <= 1 and 0 <= rib['component_froc'] <= 1
        if METHODS[m].arch in ('retinanet', 'fcos'):   # a detector: COCO AP with its interval, which its saved boxes reproduce
            assert set(rib['coco_ci']) == {'AP', 'AP40', 'AP75'} and rib['coco_ci']['AP'][0] <= rib['coco']['AP'] <= rib['coco_ci']['AP'][1]
            again = ex.coco_intervals(d, recompute=True)['rib_fracture']
            assert all(abs(a - b) < 1e-3 for k in again for a, b in zip(again[k], rib['coco_ci'][k])), (m, again, rib['coco_ci'])
        else: assert 'coco' not in rib and ex.coco_intervals(d) == {}


def test_collect_and_table(method_runs):
    root, _ = method_runs
    runs = collect_runs(root)
    assert set(runs.method) == set(METHODS) and set(runs.cls) == {'rib_fracture', 'clavicle_fracture'}
    tab = comparison_table(runs, order=list(METHODS))
    assert list(tab.index) == list(METHODS) and 'rib_fracture auroc' in tab.columns


def test_plain_papermill_and_overrides(tmp_path, phantom_root):
    "The template also runs with plain papermill, a preset file and -p overrides; every parameter lands in metrics.json."
    out = tmp_path / 'pm'; out.mkdir()
    preset = experiments_dir() / 'presets' / 'test.yaml'
    r = subprocess.run([str(Path(sys.executable).parent / 'papermill'), str(experiments_dir() / 'train.ipynb'),
                        str(out / 'train.ipynb'), '-f', str(preset), '-p', 'method', 'dynamic', '-p', 'a0', '6',
                        '-p', 'root', str(phantom_root), '-p', 'out', str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    m = json.loads((out / 'metrics.json').read_text())
    assert m['config']['method'] == 'dynamic' and m['config']['a0'] == 6
    assert set(m['config']) >= set(template_parameters())


def test_the_template_records_the_selection_rule(tmp_path, phantom_root):
    """metrics.json says which rule kept model.pt and with what score: a detector's validation mAP, or the last epoch.
    The test preset's four validation images hold no box: 'map' is refused there before any training."""
    with pytest.raises(ex.RunFailed, match=r"select_by='map' needs boxes on the validation split, and its 4 image\(s\)"):
        run_experiment('test', {'method': 'retinanet', 'root': str(phantom_root), 'select_by': 'map'}, out=tmp_path / 'no_box')
    boxed = {'root': str(tmp_path / 'ph'), 'phantom_positive_rate': 0.5, 'phantom_r_fraction': 0.5, 'epochs_stage1': 2}
    for method, rule, said in [('retinanet', 'map', 'val_map'), ('mean_teacher', 'last', 'last epoch')]:
        m = run_experiment('test', {'method': method, 'select_by': rule, **boxed}, out=tmp_path / rule)
        best, log = m['best'], [json.loads(l) for l in log_lines(tmp_path / rule)]
        assert m['config']['select_by'] == rule and best['selected_by'] == said, best
        line = [r for r in log if (r['stage'], r['epoch']) == (best['stage'], best['epoch'])][0]
        assert line['select_by'] == rule
        if rule == 'map':
            assert best['val_map'] == line['select_score'] == max(r['select_score'] for r in log)
        else: assert (best['stage'], best['epoch']) == (log[-1]['stage'], log[-1]['epoch']) == (2, 2)


def test_unknown_parameter_and_failed_run(tmp_path, phantom_root):
    with pytest.raises(ValueError, match='unknown parameter'): run_experiment('test', {'methd': 'aals'}, out=tmp_path / 'x')
    with pytest.raises(RunFailed, match='train.ipynb'):
        run_experiment('test', {'method': 'no_such_method', 'root': str(phantom_root)}, out=tmp_path / 'y')


class Killed(Exception):
    "Stands for the SIGKILL of a preempted job."


def test_run_command_and_resume(tmp_path, phantom_root, monkeypatch):
    """`cxr-fracture run --resume` reaches the trainer through papermill and continues a killed run from its
    checkpoints/last.pt: a run killed in its second stage-2 epoch resumes there (the shared stage-1 model and the
    log lines before the kill kept as they were), and the training time adds up over the two attempts. (The
    trainer's own tests kill runs mid-epoch and check a resumed run is exact; here it is the template's wiring.)"""
    import cxr_fracture.train as tr
    out = tmp_path / 'cli'
    args = [CLI, 'run', 'test', '-p', 'method', 'mean_teacher', '-p', 'root', str(phantom_root), '--out', str(out), '--quiet']
    r = subprocess.run(args, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    done = log_lines(out)
    assert [json.loads(l)['stage'] for l in done] == [1, 2, 2]
    s1 = next((out.parent / 'stage1').glob('*/model.pt'))
    stage1 = s1.stat().st_mtime_ns
    # the same run (the template's own config.json), started afresh and killed as its second stage-2 epoch begins
    cfg = json.loads((out / 'config.json').read_text())
    run_epoch = tr._Run.run_epoch
    def killed_in_stage2(self, epoch):
        if self.stage == 2 and epoch == 1: raise Killed()
        return run_epoch(self, epoch)
    monkeypatch.setattr(tr._Run, 'run_epoch', killed_in_stage2)
    (out / 'metrics.json').unlink()
    started = time.time(); ex.start_attempt(out, resume=False)          # as the template does before training
    with pytest.raises(Killed): tr.train(cfg)
    monkeypatch.undo()
    killed = log_lines(out)
    assert len(killed) == 2 and all(same_epoch(a, b) for a, b in zip(killed, done)) and (out / 'checkpoints' / 'last.pt').exists()
    ck_time = (out / 'checkpoints' / 'last.pt').stat().st_mtime
    r = subprocess.run(args + ['--resume'], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    again, lines = json.loads((out / 'metrics.json').read_text()), log_lines(out)
    assert again['config']['resume'] is True
    assert lines[:2] == killed and [json.loads(l)['stage'] for l in lines] == [1, 2, 2]   # nothing retrained ...
    assert s1.stat().st_mtime_ns == stage1
    assert json.loads(lines[2])['global_step'] == json.loads(done[2])['global_step']      # ... stage 2 continued
    t = again['timing']
    assert t['attempts'] == 2 and t['train_seconds'] == pytest.approx(t['train_seconds_attempt'] + ck_time - started, abs=0.5)
    best = again['best']
    assert any((json.loads(l)['stage'], json.loads(l)['epoch']) == (best['stage'], best['epoch']) for l in lines)


def test_sweep_grid_slurm_and_index(tmp_path, phantom_root):
    grid = tmp_path / 'abl.yaml'
    grid.write_text(yaml.safe_dump({'preset': 'test', 'out': str(tmp_path / 'abl'),
                                    'params': {'method': 'aals', 'root': str(phantom_root)},
                                    'grid': {'t': [0.3, 0.4], 'a0': [1, 4]}}, sort_keys=False))
    assert len(expand_grid(grid)) == 4
    rep = sweep(grid, dry_run=True)
    assert list(rep.status) == ['todo'] * 4
    r = subprocess.run([CLI, 'sweep', str(grid), '--slurm'], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    script = (tmp_path / 'abl' / 'sweep.sbatch').read_text()
    assert '#SBATCH --array=0-3' in script and f'{CLI} sweep {grid} --index "$SLURM_ARRAY_TASK_ID"' in script
    run = tmp_path / 'abl' / 't-0.3_a0-4'
    rep = sweep(grid, index=1)                     # what one array task does
    assert list(rep.status) == ['ok'] and (run / 'metrics.json').exists()
    rep = sweep(grid, dry_run=True)                # the finished run is skipped, and listed at its own --index
    assert list(rep.status) == ['todo', 'done (skipped)', 'todo', 'todo'] and list(rep['index']) == [0, 1, 2, 3]
    assert rep.loc[1, 'name'] == 't-0.3_a0-4'
    r = subprocess.run([CLI, 'sweep', str(grid), '--dry-run'], capture_output=True, text=True)
    rows = [l.split() for l in r.stdout.splitlines()[1:]]
    assert r.returncode == 0 and [w[:2] for w in rows] == [[str(i), x['name']] for i, x in enumerate(expand_grid(grid))], r.stdout
    # a task preempted after its last checkpoint (no metrics.json yet): the requeued task resumes, it does not retrain
    model, lines = (run / 'model.pt').stat().st_mtime_ns, log_lines(run)
    (run / 'metrics.json').unlink()
    rep = sweep(grid, index=1)
    assert list(rep.status) == ['ok']
    m = json.loads((run / 'metrics.json').read_text())
    assert m['config']['resume'] is True and m['timing']['attempts'] == 2
    assert (run / 'model.pt').stat().st_mtime_ns == model and log_lines(run) == lines


def test_every_sweep_launch_resumes_and_shared_data_is_prepared_first(tmp_path, monkeypatch):
    "Sequential, per-GPU and Slurm sweeps all launch runs with resume; a not-yet-drawn shared phantom is drawn (and its "
    "cache built) once, before any per-GPU worker starts."
    shared = tmp_path / 'shared_phantom'
    grid = tmp_path / 'g.yaml'
    grid.write_text(yaml.safe_dump({'preset': 'test', 'out': str(tmp_path / 'g'), 'params': {'root': str(shared)},
                                    'grid': {'method': ['aals', 'supervised', 'dynamic']}}))
    calls, launched = [], []
    monkeypatch.setattr(ex, 'run_experiment', lambda *a, **k: calls.append(k))
    rep = sweep(grid, gpus=0)
    assert list(rep.status) == ['ok'] * 3 and [k['resume'] for k in calls] == [True] * 3
    assert (shared / 'manifest.csv').exists() and (tmp_path / 'shared_phantom.lock').exists()
    import shutil; shutil.rmtree(shared)

    class FakeProc:
        returncode = 0
        def __init__(self, cmd, env):
            launched.append((cmd, env['CUDA_VISIBLE_DEVICES'], (shared / 'manifest.csv').exists(),
                             (shared / 'cache_64' / 'meta.json').exists()))
        def poll(self): return 0
    monkeypatch.setattr(ex.subprocess, 'Popen', FakeProc)
    monkeypatch.setattr(ex.time, 'sleep', lambda s: None)
    rep = sweep(grid, gpus=2)
    assert list(rep.status) == ['ok'] * 3 and len(launched) == 3
    for cmd, gpu, drawn, cached in launched:
        assert '--resume' in cmd and drawn and cached and gpu in ('0', '1')
        assert Path(cmd[0]).is_absolute() and cmd[cmd.index('run') + 1] == 'test'
    # a shared phantom that cannot be drawn fails its runs, with the reason, before any is launched
    grid.write_text(yaml.safe_dump({'preset': 'test', 'out': str(tmp_path / 'g2'), 'params': {'root': str(shared)},
                                    'grid': {'phantom_n': [30]}}))
    launched.clear()
    rep = sweep(grid, gpus=2)
    assert list(rep.status) == ['failed'] and 'holds a phantom drawn with' in rep.error[0] and not launched


def test_slurm_script_command_and_options(tmp_path, monkeypatch):
    "The array script calls this installation's command by absolute path; the sweep command sets the job's resources."
    from cxr_fracture.cli import main
    grid = tmp_path / 'g.yaml'
    grid.write_text(yaml.safe_dump({'preset': 'test', 'out': str(tmp_path / 'g'), 'grid': {'seed': [0, 1]}}))
    assert main(['sweep', str(grid), '--slurm', '--slurm-time', '2:30:00', '--slurm-mem', '16G', '--slurm-cpus', '4',
                 '--slurm-gpus', '2', '--slurm-partition', 'gpu']) == 0
    s = (tmp_path / 'g' / 'sweep.sbatch').read_text()
    for line in ('#SBATCH --array=0-1', '#SBATCH --gres=gpu:2', '#SBATCH --cpus-per-task=4', '#SBATCH --mem=16G',
                 '#SBATCH --time=2:30:00', '#SBATCH --partition=gpu'):
        assert line in s.splitlines(), line
    task = s.strip().splitlines()[-1]
    exe = task.split()[0]
    assert Path(exe).is_absolute() and os.access(exe, os.X_OK) and task.endswith(f'sweep {grid} --index "$SLURM_ARRAY_TASK_ID"')
    assert '--gres' not in slurm_script(grid, 2, gpus_per_task=0) and '--partition' not in slurm_script(grid, 2)
    monkeypatch.setattr(ex.sys, 'executable', str(tmp_path / 'nobin' / 'python'))   # no console script beside python
    fallback = slurm_script(grid, 2).strip().splitlines()[-1]
    assert 'from cxr_fracture.cli import main' in fallback and fallback.startswith(str(tmp_path / 'nobin' / 'python'))


def test_example_grids_expand_to_known_parameters():
    grids = sorted((experiments_dir() / 'grids').glob('*.yaml'))
    assert 'aals_ablation.yaml' in {g.name for g in grids}
    for g in grids:
        runs = expand_grid(g)
        assert len({r['name'] for r in runs}) == len(runs) == len({json.dumps(r['overrides'], sort_keys=True) for r in runs})
        for r in runs: resolve_params(r['preset'], r['overrides'])   # raises on an unknown parameter
    abl = [r['overrides'] for r in expand_grid(experiments_dir() / 'grids' / 'aals_ablation.yaml')]
    assert {o['method'] for o in abl} == {'aals'}
    assert all(o['a0'] == 4 or o['t'] == 0.4 for o in abl)                # one parameter at a time
    assert sum(o['a0'] == 4 and o['t'] == 0.4 for o in abl) == 1          # the shared setting once
    assert len({o['t'] for o in abl}) >= 4 and len({o['a0'] for o in abl}) >= 4


def readme_demo_block() -> list:
    text = (REPO / 'README.md').read_text()
    sec = text[text.index('## What the demo measured'):]
    return sec[sec.index('```\n') + 4:].split('```')[0].splitlines()


def test_demo_main_job(tmp_path, capsys):
    "`demo()` (the `make demo` job) with the test preset: gallery first, the table as the README prints it, one stage 1."
    out = tmp_path / 'demo'
    tab = demo(out, preset='test', methods=('supervised', 'aals'), overrides={'limit_batches': 1, 'n_bootstrap': 0})
    printed = capsys.readouterr().out
    assert list(tab.index) == ['supervised', 'aals'] and (out / 'comparison.csv').exists() and (out / 'comparison.md').exists()
    gallery = out / 'phantom_gallery.png'
    assert gallery.stat().st_size > 1000
    assert gallery.stat().st_mtime_ns < (out / 'supervised' / 'metrics_log.jsonl').stat().st_mtime_ns   # drawn before training
    # progress: a line per epoch (stdout is not a terminal), with the time left; the reused stage 1 is not reported again
    assert 'demo: supervised: stage 1 epoch 1/1, ' in printed and 'demo: aals: stage 2 epoch 2/2, ' in printed, printed
    assert 'demo: aals: stage 1' not in printed and printed.count(' left\n') == 3
    # the printed table has the README's layout: the same caption and header lines, rows as wide as the header
    readme = readme_demo_block()
    heads = [l for l in readme if l.startswith('method')]
    captions = [l for l in readme if l.endswith('localization-complete images)')]
    got = printed[printed.index('rib_fracture (test split'):].splitlines()
    assert [l for l in got if l.startswith('method')] == heads[:1] * 2 and heads[0] == heads[1]
    assert [l for l in got if l.endswith('localization-complete images)')] == captions
    rows = [l for l in got if l.split()[:1] in (['supervised'], ['aals'])]
    assert len(rows) == 4 and all(len(l) == len(heads[0]) for l in rows)
    assert all(len(l) == len(heads[0]) for l in readme if l.split()[:1] in (['supervised'], ['aals']))
    # both arms start from one stage-1 model, trained once in OUT/stage1 (the supervised arm *is* it)
    m = json.loads((out / 'aals' / 'metrics.json').read_text())
    s1 = [d for d in (out / 'stage1').iterdir() if d.is_dir()]
    assert len(s1) == 1 and m['stage1_model'] == str(s1[0] / 'model.pt') and m['best']['stage'] == 2
    sup = json.loads((out / 'supervised' / 'metrics.json').read_text())
    assert sup['stage1_model'] == m['stage1_model'] and sup['best']['stage'] == 1
    assert [json.loads(l)['stage'] for l in log_lines(out / 'aals')][-1] == 2


def test_demo_gallery_survives_a_failed_run(tmp_path, monkeypatch):
    def fail(*a, **k): raise RunFailed('boom')
    monkeypatch.setattr(ex, 'run_experiment', fail)
    with pytest.raises(RunFailed): demo(tmp_path / 'd', preset='test', methods=('supervised', 'aals'))
    assert (tmp_path / 'd' / 'phantom_gallery.png').stat().st_size > 1000


def _run_all():
    spec = importlib.util.spec_from_file_location('run_all', REPO / 'tests' / 'benchmarks' / 'run_all.py')
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod


def test_benchmark_runner(tmp_path, monkeypatch, capfd):
    "`make bench`: every bench_*.py but the long ones (unless --all), each in its own process, past failures."
    mod = _run_all()
    assert mod.main(['--list']) == 0
    listed = dict(l.split()[:2] for l in capfd.readouterr().out.splitlines())
    real = {p.stem for p in (REPO / 'tests' / 'benchmarks').glob('bench_*.py')}
    assert set(listed) == real and listed['bench_science'] == listed['bench_fracatlas'] == 'skip'
    long = set(mod.main.__globals__['LONG'])
    assert {'bench_science', 'bench_fracatlas', 'bench_table1', 'bench_calibrate'} <= long
    assert {k for k, v in listed.items() if v == 'run'} == real - long and all(listed[k] == 'skip' for k in long & real)
    assert 'bench_science' in mod.main.__globals__['LONG'] and (REPO / 'Makefile').read_text().count('tests/benchmarks/run_all.py') == 1
    # a fake benchmarks folder: one fails, the next still runs, the exit status says so
    for name, code in (('bench_a', 'print("A ran")'), ('bench_b', 'raise SystemExit(3)'), ('bench_c', 'print("C ran")'),
                       ('bench_science', 'print("long ran")')):
        (tmp_path / f'{name}.py').write_text(code + '\n')
    monkeypatch.setattr(mod, 'HERE', tmp_path)
    assert mod.main(['--dry-run']) == 0
    assert 'A ran' not in capfd.readouterr().out
    assert mod.main([]) == 1
    o = capfd.readouterr().out
    assert 'A ran' in o and 'C ran' in o and 'long ran' not in o
    assert 'bench_b: FAILED (exit status 3)' in o and 'bench_science: skipped' in o and o.index('bench_b: FAILED') < o.index('C ran')
    assert mod.main(['--all']) == 1 and 'long ran' in capfd.readouterr().out
    assert mod.main(['--only', 'bench_science', 'bench_a']) == 0
    o = capfd.readouterr().out
    assert 'long ran' in o and 'A ran' in o and 'C ran' not in o


def test_presets_are_known_parameters():
    known = set(template_parameters())
    for p in (experiments_dir() / 'presets').glob('*.yaml'):
        assert set(yaml.safe_load(p.read_text())) <= known, p
    assert {p.stem for p in (experiments_dir() / 'presets').glob('*.yaml')} >= {'test', 'demo', 'fracatlas', 'aals_paper', 'ds_paper', 'oxnet_paper'}
    for p in (experiments_dir() / 'presets').glob('*.yaml'):   # every preset is a valid configuration
        TrainConfig.from_params({**resolve_params(p.stem), 'out': '/tmp/x'})


def test_template_parameters_are_the_train_config():
    "The template's parameters are TrainConfig's fields, same names, same defaults, same order, plus TEMPLATE_ONLY."
    import dataclasses
    tp = template_parameters()
    fields = [f.name for f in dataclasses.fields(TrainConfig)]
    assert list(tp) == fields + list(TEMPLATE_ONLY)
    for f in dataclasses.fields(TrainConfig):
        assert tp[f.name]['default'] == f.default, (f.name, tp[f.name]['default'], f.default)
        assert tp[f.name]['comment'], f.name
    assert TrainConfig.from_params({k: v['default'] for k, v in tp.items()}) == TrainConfig()


def test_every_field_can_be_set_with_p():
    "`-p NAME VALUE` reaches every TrainConfig field through resolve_params and TrainConfig.from_params."
    import dataclasses
    for f in dataclasses.fields(TrainConfig):
        v = {'method': 'dynamic', 'model': 'resnet18', 'scheduler': 'cosine', 'loss_form': 'mean', 'sup_loss': 'wbce',
             'consistency': 'mse', 'p_negative': 'none', 'self_teacher_bn': 'train', 'split_scheme': 'holdout',
             'classes': 'rib_fracture', 'data': 'x.csv', 'chexnet_net': 'densenet121', 'cam_norm': 'minmax',
             'sfl_norm': 'anchors', 'gpa_pairs': 'all', 'gpa_distance': 'sum', 'alpha': 0.99, 'anchor_size': 12.0,
             'grad_clip': 5.0, 'lr_stage2': 1e-5, 'plateau_monitor': 'map', 'select_by': 'last'}.get(f.name)
        if v is None:
            d = f.default
            v = (not d) if isinstance(d, bool) else (d + 1 if isinstance(d, int) else (d / 2 if isinstance(d, float) else
                 ({'magnitude': 2.0} if f.name == 'phantom_options' else ('/tmp/somewhere' if d is None or isinstance(d, str) else d))))
            if f.name in ('amp', 'channels_last', 'progress'): v = True
            if f.name in ('stride',): v = 8
            if f.name in ('limit_batches', 'limit_val', 'phantom_seed'): v = 3
            if f.name == 'pos_fraction': v = 0.25
            if f.name == 'p_fraction': v = 0.25
            if f.name == 'backbone': v = 'resnet34'
            if f.name == 'device': v = 'cpu'
        cfg = TrainConfig.from_params({'out': '/tmp/x', **resolve_params('test', {f.name: ex.parse_value(str(v)) if not isinstance(v, (dict, list)) else v})})
        want = ['rib_fracture'] if f.name == 'classes' else v
        got = getattr(cfg, f.name)
        if f.name in ex.PATH_PARAMS and isinstance(got, str): got, want = Path(got).name, Path(str(want)).name
        assert got == want, (f.name, got, want)


def test_comparison_table_with_a_class_no_run_scored():
    "A class with no test positives in any run (all None) is shown as nan, not an error (seen on tiny phantoms)."
    rows = []
    for m, s in (('supervised', 0), ('aals', 0), ('supervised', 1), ('aals', 1)):
        rows.append(dict(run=f'r/{m}{s}', method=m, fold=0, seed=s, cls='rib_fracture', auroc=0.6 + 0.1 * s,
                         pixel_froc=0.5, component_froc=0.2, recall_at_fp_0_1=0.1))
        rows.append(dict(run=f'r/{m}{s}', method=m, fold=0, seed=s, cls='clavicle_fracture', auroc=None,
                         pixel_froc=None, component_froc=None, recall_at_fp_0_1=None))
    tab = comparison_table(pd.DataFrame(rows), order=['supervised', 'aals'])
    assert list(tab.index) == ['supervised', 'aals']
    assert tab.loc['aals', 'rib_fracture auroc'] == '0.650 ± 0.071'
    assert tab.loc['aals', 'clavicle_fracture auroc'] == 'nan'


def test_calibration_script_runs(tmp_path):
    "bench_calibrate.py (issue 13's calibration of the phantom) at toy size: it trains, scores the validation split, writes its table."
    import pandas as pd
    r = subprocess.run([sys.executable, str(REPO / 'tests' / 'benchmarks' / 'bench_calibrate.py'), '--out', str(tmp_path), '--smoke',
                        '--only', 'm4_n1200_r20'], cwd=REPO / 'tests' / 'benchmarks', capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    tab = pd.read_csv(tmp_path / 'calibration.csv')
    assert list(tab.candidate) == ['m4_n1200_r20'] and {'rib_fracture_auroc', 'rib_fracture_median_peak'} <= set(tab.columns)
    r2 = subprocess.run([sys.executable, str(REPO / 'tests' / 'benchmarks' / 'bench_calibrate.py'), '--out', str(tmp_path), '--smoke',
                         '--only', 'm4_n1200_r20'], cwd=REPO / 'tests' / 'benchmarks', capture_output=True, text=True, timeout=600)
    assert r2.returncode == 0 and 'not run again' in r2.stdout


def test_a_run_folder_held_by_another_process_is_left_alone(tmp_path, monkeypatch):
    "Two processes on one run folder would interleave checkpoints and metrics: the second is refused at once, names the "
    "holder and touches nothing; a sweep records the run as busy and goes on; the lock dies with its holder."
    import signal, textwrap
    grid = tmp_path / 'g.yaml'
    grid.write_text(yaml.safe_dump({'preset': 'test', 'out': str(tmp_path / 'g'), 'grid': {'seed': [0, 1]}}))
    held = tmp_path / 'g' / 'seed-1'
    holder = subprocess.Popen([sys.executable, '-c', textwrap.dedent(f'''
        import sys, time
        from cxr_fracture.train import run_lock
        with run_lock({str(held)!r}):
            print('held', flush=True); time.sleep(600)''')], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == 'held'
        before = sorted(p.name for p in held.iterdir())
        # the command a person types twice: refused, one line naming the folder and the holder's pid, status 3
        r = subprocess.run([CLI, 'run', 'test', '--out', str(held), '--quiet'], capture_output=True, text=True)
        assert r.returncode == tr.RUN_BUSY_EXIT == 3 and 'Traceback' not in r.stderr, r.stderr
        assert str(held) in r.stderr and f'pid {holder.pid}' in r.stderr, r.stderr
        assert sorted(p.name for p in held.iterdir()) == before          # nothing written into the held run
        # the trainer's own command (no papermill) holds the same lock
        r = subprocess.run([CLI, 'train', '--method', 'supervised', '--out', str(held), '-c', 'phantom_n=40'],
                           capture_output=True, text=True)
        assert r.returncode == 3 and 'Traceback' not in r.stderr and f'pid {holder.pid}' in r.stderr, r.stderr
        assert sorted(p.name for p in held.iterdir()) == before
        # a sequential sweep: the held run is skipped as busy, the other one runs (here: a stand-in that records it)
        ran = []
        monkeypatch.setattr(ex, 'run_experiment', lambda preset, ov, out, resume: ran.append(out) or
                            tr.run_lock(out).__enter__())             # the real lock check, without training
        rep = sweep(grid, gpus=0)
        assert list(rep.status) == ['ok', ex.BUSY] and f'pid {holder.pid}' in rep.error[1]
        assert ran == [str(tmp_path / 'g' / 'seed-0'), str(held)]
        # the per-GPU workers read the busy exit status of `cxr-fracture run`
        class FakeProc:
            def __init__(self, cmd, env): self.returncode = 3 if cmd[cmd.index('--out') + 1] == str(held) else 0
            def poll(self): return self.returncode
        monkeypatch.setattr(ex.subprocess, 'Popen', FakeProc)
        monkeypatch.setattr(ex.time, 'sleep', lambda s: None)
        rep = sweep(grid, gpus=2)
        assert sorted(rep.status) == sorted(['ok', ex.BUSY])
        assert 'held by another process' in rep.loc[rep.status == ex.BUSY, 'error'].item()
    finally:
        holder.send_signal(signal.SIGKILL); holder.wait()
    with tr.run_lock(held): pass                                      # a killed holder leaves no stale lock


def test_sweep_cli_exit_status_when_a_run_is_busy(tmp_path, monkeypatch):
    "`cxr-fracture sweep` exits 3 (unfinished) when it skipped a busy run and none failed, 1 when one failed."
    from cxr_fracture.cli import main
    grid = tmp_path / 'g.yaml'
    grid.write_text(yaml.safe_dump({'preset': 'test', 'out': str(tmp_path / 'g'), 'grid': {'seed': [0, 1]}}))
    def fake(preset, ov, out, resume):
        if out.endswith('seed-1'): raise tr.RunBusy(f'run folder {out} is in use')
    monkeypatch.setattr(ex, 'run_experiment', fake)
    assert main(['sweep', str(grid), '--gpus', '0']) == 3
    def fake2(preset, ov, out, resume):
        if out.endswith('seed-0'): raise ex.RunFailed('boom')
        fake(preset, ov, out, resume)
    monkeypatch.setattr(ex, 'run_experiment', fake2)
    assert main(['sweep', str(grid), '--gpus', '0']) == 1


def test_a_sweep_archives_each_run_as_it_ends(tmp_path, monkeypatch, capsys):
    "A grid's `archive:` copies each finished run's records (not its model) as it ends, a run finished earlier too; a "
    "run trained again with other results is a conflict, reported and left as it was; `cxr-fracture archive` does the same."
    from cxr_fracture.cli import main
    grid, arc = tmp_path / 'g.yaml', tmp_path / 'results'
    grid.write_text(yaml.safe_dump({'preset': 'test', 'out': str(tmp_path / 'g'), 'archive': str(arc), 'grid': {'seed': [0, 1, 2]}}))
    seen = []
    def fake(preset, ov, out, resume, auroc=0.7):
        if out.endswith('seed-2'): raise ex.RunFailed('boom')
        seen.append(sorted(p.parent.name for p in arc.rglob('metrics.json')))   # what the archive held when this run started
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / 'metrics.json').write_text(json.dumps({'config': {'seed': ov['seed']}, 'results': {'rib': {'auroc': auroc}}}))
        (Path(out) / 'model.pt').write_bytes(b'0' * 10)
    monkeypatch.setattr(ex, 'run_experiment', fake)
    rep = sweep(grid, gpus=0)
    assert list(rep.status) == ['ok', 'ok', 'failed'] and list(rep.archive[:2]) == ['new', 'new'] and rep.archive.isna()[2]
    assert seen == [[], ['seed-0']]                       # seed 0 was archived before seed 1 started
    assert {p.relative_to(arc).as_posix() for p in arc.rglob('*') if p.is_file()} == {'seed-0/metrics.json', 'seed-1/metrics.json'}
    # seed 0 trained again elsewhere with other results: the sweep skips it (done) and reports the conflict
    (tmp_path / 'g' / 'seed-0' / 'metrics.json').write_text(json.dumps({'results': {'rib': {'auroc': 0.1}}}))
    rep = sweep(grid, gpus=0)
    assert rep.status[0] == 'done (skipped)' and rep.archive[0].startswith('conflict') and 'metrics.json differ' in rep.archive[0]
    assert json.loads((arc / 'seed-0' / 'metrics.json').read_text())['results']['rib']['auroc'] == 0.7
    capsys.readouterr()
    assert main(['archive', str(tmp_path / 'g'), str(arc)]) == 1                 # the conflict: exit 1, named
    out, err = capsys.readouterr()
    assert 'conflict' in out and 'seed-0' in err and 'metrics.json differ' in err
    assert main(['archive', str(tmp_path / 'g'), str(arc), '--overwrite']) == 0
    assert json.loads((arc / 'seed-0' / 'metrics.json').read_text())['results']['rib']['auroc'] == 0.1
    assert main(['archive', str(tmp_path / 'nothing'), str(arc)]) == 1
    assert 'no such folder' in capsys.readouterr().err
