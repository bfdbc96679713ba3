import subprocess, sys
from pathlib import Path
from cxr_fracture.cli import main, COMMANDS

CLI = str(Path(sys.executable).parent / 'cxr-fracture')


def test_top_level_help_lists_every_command(capsys):
    assert main(['--help']) == 0
    out = capsys.readouterr().out
    for c in COMMANDS: assert c in out


def test_unknown_command_is_an_error(capsys):
    assert main(['frobnicate']) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_each_command_has_help():
    for c in COMMANDS:
        r = subprocess.run([CLI, c, '--help'], capture_output=True, text=True)
        assert r.returncode == 0, (c, r.stderr)
        assert r.stdout.lower().startswith('usage: cxr-fracture ' + c), (c, r.stdout[:200])


# ---------------------------------------------------------------- bad input: one line on stderr, exit 2, no traceback
def test_build_manifest_missing_root_is_a_clean_error(tmp_path):
    for source, extra in [('fracatlas', []), ('dicom-folder', ['--salt', 's'])]:
        r = subprocess.run([CLI, 'build-manifest', source, str(tmp_path / 'nonexistent'), '--out', str(tmp_path / 'm.csv'), '--quiet', *extra],
                           capture_output=True, text=True)
        assert r.returncode == 2, (source, r.stdout, r.stderr)
        assert 'Traceback' not in r.stderr and r.stdout == '', (source, r.stderr)
        assert r.stderr.startswith(f'cxr-fracture build-manifest {source}: ') and 'nonexistent' in r.stderr and 'no such folder' in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / 'm.csv').exists()


def test_build_manifest_bad_values_are_clean_errors(tmp_path, capsys):
    (tmp_path / 'file.dcm').write_bytes(b'x')
    assert main(['build-manifest', 'dicom-folder', str(tmp_path / 'file.dcm'), '--out', str(tmp_path / 'm.csv'), '--salt', 's', '--quiet']) == 2
    err = capsys.readouterr().err
    assert err.startswith('cxr-fracture build-manifest dicom-folder: ') and 'not a folder' in err
    (tmp_path / 'fa').mkdir()   # a folder that is not FracAtlas
    assert main(['build-manifest', 'fracatlas', str(tmp_path / 'fa'), '--out', str(tmp_path / 'm.csv'), '--quiet']) == 2
    err = capsys.readouterr().err
    assert err.startswith('cxr-fracture build-manifest fracatlas: ') and 'dataset.csv' in err and 'FracAtlas folder' in err
    assert main(['build-manifest', 'fracatlas', str(tmp_path / 'fa'), '--out', str(tmp_path / 'm.csv'), '--boxed-fraction', '2']) == 2
    assert 'boxed_fraction must be in [0, 1]' in capsys.readouterr().err


def test_phantom_n_below_one_is_rejected(tmp_path):
    for n in ('0', '-3'):
        r = subprocess.run([CLI, 'phantom', '--n', n, '--out', str(tmp_path / 'ph'), '--quiet'], capture_output=True, text=True)
        assert r.returncode == 2 and 'Traceback' not in r.stderr, r.stderr
        assert r.stderr.startswith('cxr-fracture phantom: --n must be at least 1') and f'not {n}' in r.stderr, r.stderr


def test_a_module_that_does_not_import_is_a_loud_error():
    "A subcommand's module that fails to import is an error naming it, with the traceback, never a hidden subcommand."
    code = "import sys; sys.modules['pandas'] = None\nfrom cxr_fracture.cli import main\nmain(['mine-labels', '--help'])"
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert r.returncode == 1 and 'Traceback' in r.stderr and r.stdout == '', (r.returncode, r.stdout, r.stderr)
    assert 'cannot import cxr_fracture.mining, which runs mine-labels: ModuleNotFoundError' in r.stderr, r.stderr
    assert 'pandas' in r.stderr, r.stderr


def test_a_reader_that_leaves_stops_the_command_quietly():
    # `cxr-fracture sweep GRID --dry-run | head`: the pipe's reader leaves before the command writes
    p = subprocess.Popen([CLI, '--help'], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()
    err = p.stderr.read().decode()
    p.wait(timeout=120)
    assert 'Traceback' not in err and 'BrokenPipe' not in err, err
    assert p.returncode == 141, (p.returncode, err)


def test_a_broken_pipe_that_is_not_stdout_keeps_its_traceback(monkeypatch):
    import cxr_fracture.cli as cli
    def boom(argv): raise BrokenPipeError('a socket, not stdout')
    monkeypatch.setattr(cli, '_run', boom)
    import pytest
    with pytest.raises(BrokenPipeError, match='a socket'): cli.main([])


def test_compare_two_runs_and_its_bad_input(tmp_path):
    "`compare` prints each class's paired AUROC difference; runs on other images are one line on stderr, exit 2."
    import numpy as np, pandas as pd
    from cxr_fracture.metrics import delong_test
    y = np.array([0, 0, 1, 0, 1, 1, 0, 0, 1, 0] * 3, float); rng = np.random.default_rng(1)
    s = {k: y + rng.normal(0, sd, len(y)) for k, sd in (('a', 0.4), ('b', 1.2))}
    for k in s:
        (tmp_path / k).mkdir()
        pd.DataFrame({'image_id': [f'i{i}' for i in range(len(y))], 'rib': y, 'rib_score': s[k]}).to_csv(tmp_path / k / 'predictions.csv', index=False)
    r = subprocess.run([CLI, 'compare', str(tmp_path / 'a'), str(tmp_path / 'b')], capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr == '', r.stderr
    t = delong_test(s['a'], s['b'], y)
    row = r.stdout.splitlines()[-1].split()
    assert row[:3] == ['rib', '12', '18'] and [float(v) for v in row[3:6]] == [round(t.auc_a, 3), round(t.auc_b, 3), round(t.diff, 3)], r.stdout
    (tmp_path / 'c').mkdir()
    pd.read_csv(tmp_path / 'b' / 'predictions.csv').iloc[:-1].to_csv(tmp_path / 'c' / 'predictions.csv', index=False)
    r = subprocess.run([CLI, 'compare', str(tmp_path / 'a'), str(tmp_path / 'c')], capture_output=True, text=True)
    assert r.returncode == 2 and r.stdout == '' and 'Traceback' not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.startswith('cxr-fracture compare: error: ') and 'scored different test images' in r.stderr, r.stderr
