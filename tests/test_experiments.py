"""The papermill template with the `test` preset for every method, the run/sweep/demo commands."""
import json, subprocess, sys
from pathlib import Path
import pytest
import yaml

from cxr_fracture.experiments import (run_experiment, expand_grid, sweep, collect_runs, comparison_table,
                                      template_parameters, experiments_dir, RunFailed)
from cxr_fracture.train import METHODS

CLI = str(Path(sys.executable).parent / 'cxr-fracture')
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
        out[m] = run_experiment('test', {'method': m, 'data_root': str(phantom_root)}, out=root / m)
    return root, out


def test_every_method_runs_the_template(method_runs):
    root, out = method_runs
    assert set(out) == {'supervised', 'mean_teacher', 'pi_model', 'temporal_ensemble', 'aals', 'dynamic', 'symmetric'}
    for m, metrics in out.items():
        d = root / m
        for f in ('train.ipynb', 'model.pt', 'metrics.json', 'metrics_log.jsonl', 'predictions.csv', 'training_curves.png'):
            assert (d / f).exists(), (m, f)
        assert any((d / 'checkpoints').iterdir())
        assert metrics['config']['method'] == m and metrics['config']['t'] == 0.4
        assert set(metrics) >= {'config', 'results', 'timing', 'versions', 'git_commit'}
        assert metrics['versions']['torch']
        for cls, r in metrics['results'].items():
            assert RESULT_KEYS <= set(r), (m, cls, set(r))
        rib = metrics['results']['rib_fracture']
        assert 0 <= rib['auroc'] <= 1 and rib['auroc_ci'][0] <= rib['auroc'] <= rib['auroc_ci'][1]
        assert 0 <= rib['pixel_froc'] <= 1 and 0 <= rib['component_froc'] <= 1


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
                        '-p', 'data_root', str(phantom_root), '-p', 'out_dir', str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    m = json.loads((out / 'metrics.json').read_text())
    assert m['config']['method'] == 'dynamic' and m['config']['a0'] == 6
    assert set(m['config']) >= set(template_parameters())


def test_unknown_parameter_and_failed_run(tmp_path, phantom_root):
    with pytest.raises(ValueError, match='unknown parameter'): run_experiment('test', {'methd': 'aals'}, out=tmp_path / 'x')
    with pytest.raises(RunFailed, match='train.ipynb'):
        run_experiment('test', {'method': 'no_such_method', 'data_root': str(phantom_root)}, out=tmp_path / 'y')


def test_run_command_and_resume(tmp_path, phantom_root):
    out = tmp_path / 'cli'
    args = [CLI, 'run', 'test', '-p', 'method', 'mean_teacher', '-p', 'data_root', str(phantom_root), '--out', str(out), '--quiet']
    r = subprocess.run(args, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    first = json.loads((out / 'metrics.json').read_text())
    r = subprocess.run(args + ['--resume'], capture_output=True, text=True)   # finished run: resume changes nothing
    assert r.returncode == 0, r.stderr[-2000:]
    again = json.loads((out / 'metrics.json').read_text())
    assert again['results'] == first['results'] and again['config']['resume'] is True


def test_sweep_grid_slurm_and_index(tmp_path, phantom_root):
    grid = tmp_path / 'abl.yaml'
    grid.write_text(yaml.safe_dump({'preset': 'test', 'out': str(tmp_path / 'abl'),
                                    'params': {'method': 'aals', 'data_root': str(phantom_root)},
                                    'grid': {'t': [0.3, 0.4], 'a0': [1, 4]}}, sort_keys=False))
    assert len(expand_grid(grid)) == 4
    rep = sweep(grid, dry_run=True)
    assert list(rep.status) == ['todo'] * 4
    r = subprocess.run([CLI, 'sweep', str(grid), '--slurm'], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    script = (tmp_path / 'abl' / 'sweep.sbatch').read_text()
    assert '#SBATCH --array=0-3' in script and '--index "$SLURM_ARRAY_TASK_ID"' in script
    rep = sweep(grid, index=1)                     # what one array task does
    assert list(rep.status) == ['ok'] and (tmp_path / 'abl' / 't-0.3_a0-4' / 'metrics.json').exists()
    rep = sweep(grid, dry_run=True)                # resumable: the finished run is skipped
    assert sorted(rep.status) == ['done (skipped)', 'todo', 'todo', 'todo']


def test_presets_are_known_parameters():
    known = set(template_parameters())
    for p in (experiments_dir() / 'presets').glob('*.yaml'):
        assert set(yaml.safe_load(p.read_text())) <= known, p
    assert {p.stem for p in (experiments_dir() / 'presets').glob('*.yaml')} >= {'test', 'demo', 'fracatlas', 'paper'}
