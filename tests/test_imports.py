"""The import rule: the core modules import, and their main paths run, with only torch, torchvision, numpy, scipy,
scikit-learn and pandas installed (a bare GPU node). Each case runs in a fresh interpreter in which the optional
packages (notebook tooling, progress bars, plotting, DICOM, JIT, COCO, ...) are hidden from every sys.meta_path finder."""
import subprocess, sys, textwrap
import pytest

BLOCKED = ('pydicom', 'nbdev', 'fastcore', 'papermill', 'tqdm', 'yaml', 'matplotlib', 'seaborn', 'numba', 'ipywidgets',
           'pycocotools', 'monai', 'execnb')

PRELUDE = '''
import sys
BLOCKED = @BLOCKED@
TRIED = set()
class Hide:
    # Wraps a meta-path finder so that the blocked packages are not found, as if not installed: `import` raises
    # ModuleNotFoundError and `importlib.util.find_spec` gives None (torch probes optional packages that way).
    def __init__(self, finder): self.finder = finder
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in BLOCKED: TRIED.add(name.split('.')[0]); return None
        fs = getattr(self.finder, 'find_spec', None)
        return fs(name, path, target) if fs is not None else None
    def __getattr__(self, attr): return getattr(self.finder, attr)
assert not {m.split('.')[0] for m in sys.modules} & set(BLOCKED)
sys.meta_path[:] = [Hide(f) for f in sys.meta_path]
'''.replace('@BLOCKED@', repr(BLOCKED))

EPILOGUE = '''
leaked = sorted({m.split('.')[0] for m in sys.modules} & set(BLOCKED))
assert not leaked, f'blocked packages imported anyway: {leaked}'
print('OK', 'tried:', ' '.join(sorted(TRIED)) or '-')
'''

# module -> a small run of its main path (the module is imported as M)
MAIN_PATHS = {
    'io': '''
        import numpy as np, pandas as pd
        from PIL import Image                     # Pillow comes with torchvision
        d = Path(TMP)
        Image.fromarray(np.full((8, 6), 200, np.uint8)).save(d / 'a.png')
        img, meta = M.read_xray(d / 'a.png')
        assert img.shape == (8, 6) and meta['format'] == 'png'
        (d / 'x.dcm').write_bytes(b'\\0' * 128 + b'DICM' + b'\\0' * 100)
        try: M.read_xray(d / 'x.dcm'); raise AssertionError('read a DICOM without pydicom')
        except M.UnreadableImage as e: assert 'pip install pydicom' in str(e), e
        r = M.build_cache(pd.DataFrame(dict(image_id=['a', 'x'], path=['a.png', 'x.dcm'])), d, d / 'c', size=8, workers=1, progress=True)
        assert (r['ok'], r['error']) == (1, 1), r
        assert M.progress_bar(3, 0, True) is None     # tqdm absent: no bar, no error
        img, t = M.open_cache(d / 'c').get('a')
        assert img.shape == (8, 8)
    ''',
    'model': '''
        import torch
        m = M.build_model('demo').eval()
        with torch.no_grad(): logits = m(torch.rand(1, 1, 64, 64))
        assert tuple(logits.shape[:2]) == (1, 2) and logits.shape[-1] == 64 // m.stride, logits.shape
        s = M.image_scores(torch.sigmoid(logits))
        assert s.shape[0] == 1 and torch.isfinite(s).all()
    ''',
    'sharpen': '''
        import torch
        y = torch.rand(2, 1, 8, 8)
        for f in (M.aals(y), M.dynamic_sharpen(y), M.sharpen('aals', y)):
            assert f.shape == y.shape and torch.isfinite(f).all()
    ''',
    'losses': '''
        import torch
        x, t = torch.zeros(1, 2, 4, 4), torch.rand(1, 2, 4, 4)
        for l in (M.pixel_bce(x, (t > 0.5).float()), M.bernoulli_kl(x, t), M.soft_focal_loss(x, t)):
            assert torch.isfinite(l).all()
    ''',
    'teacher': '''
        import torch
        student = torch.nn.Linear(3, 2)
        ema = M.EMATeacher(student, alpha=0.5)
        with torch.no_grad(): student.weight.add_(1.0)
        ema.update(student)
        assert torch.allclose(ema.module.weight, student.weight - 0.5)
    ''',
    'train': '''
        assert M.progress_bar(3, 0, True, iterable=range(3)) is None                   # the progress bar without tqdm: none
        cfg = M.TrainConfig(); assert cfg.method in M.METHODS and len(M.METHODS) >= 7
        assert M.TrainConfig.from_params({'method': 'dynamic', 'n_bootstrap': 1}).method == 'dynamic'
        import torch
        s, d = M.pair_weights(torch.tensor([[1., 0]]), torch.tensor([1]), torch.zeros(1, 2, dtype=torch.bool), False)
        assert d.tolist() == [[1., 1.]]
    ''',
    'metrics': '''
        import warnings
        import numpy as np
        assert M.image_auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75
        m = np.zeros((6, 6)); m[:2, :2] = 0.9; m[4, 4] = 0.7
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')                 # numba absent: the numpy kernels, with a warning
            assert M.component_froc([m], [[[0, 0, 3, 3]]]).score == 1.0
            assert M.pixel_froc([m], [[[0, 0, 3, 3]]]).score == 1.0
    ''',
    'bench': '''
        import runpy, io, contextlib
        sys.argv = ['cxr_fracture.bench', 'train', '--size', '64', '--batch', '2', '--backbone', 'resnet18', '--steps', '1',
                    '--warmup', '1', '--variants', 'fp32', 'foreach_ema']
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):    # as `PYTHONPATH=. python -m cxr_fracture.bench train ...` on a GPU box
            try: runpy.run_module('cxr_fracture.bench', run_name='__main__', alter_sys=True)
            except SystemExit as e: assert e.code == 0, e.code
        out = buf.getvalue()
        assert out.count('images/s') >= 2 and 'foreach_ema' in out, out
    ''',
    'data': '''
        import numpy as np
        mk = M.box_masks(np.array([[0., 0., 4., 2.]]), np.array([1]), 2, 8)
        assert tuple(mk.shape) == (2, 8, 8) and mk[1].sum() == 8 and mk[0].sum() == 0
        assert list(M.role_codes(['R', 'P', 'N', 'U'])) == [0, 1, 2, 3]
        theta = M.affine_theta(angle=10.0, flip=True)
        assert tuple(theta.shape[-2:]) == (2, 3)
    ''',
}


@pytest.mark.parametrize('module', list(MAIN_PATHS))
def test_core_module_without_optional_packages(module, tmp_path):
    code = PRELUDE + textwrap.dedent(f'''
        from pathlib import Path
        TMP = {str(tmp_path)!r}
        import cxr_fracture.{module} as M
    ''') + textwrap.dedent(MAIN_PATHS[module]) + EPILOGUE
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f'cxr_fracture.{module} with {", ".join(BLOCKED)} absent:\n{r.stderr[-3000:]}'
    assert r.stdout.strip().splitlines()[-1].startswith('OK'), r.stdout


# ---------------------------------------------------------------- imports only downward
# The notebooks are read in the order of their file names (00_io, 01_mining, ..., 08_teacher, 08a_metrics, 09_train,
# ...); a module may import only modules whose notebook comes earlier, so that each notebook can be read (and run)
# knowing only the ones before it. `cli` and `experiments` sit at the end and may import anything before them;
# nothing imports them but `cli`.
import ast, json
from pathlib import Path

PKG = 'cxr_fracture'
ROOT = Path(__file__).resolve().parents[1]
TOP_ONLY = {'cli', 'experiments'}          # modules that no other module may import (cli may)


def _notebook_of_module() -> dict:
    "{module: notebook path relative to nbs/}, from each notebook's `#| default_exp` cell."
    found = {}
    for nb in sorted((ROOT / 'nbs').rglob('*.ipynb')):
        if '.ipynb_checkpoints' in nb.parts: continue
        for cell in json.loads(nb.read_text(encoding='utf-8'))['cells']:
            if cell['cell_type'] != 'code': continue
            for line in ''.join(cell['source']).splitlines():
                parts = line.strip().split()
                if parts[:2] == ['#|', 'default_exp'] and len(parts) > 2:
                    mod = parts[2]
                    assert mod not in found, f'{PKG}.{mod} is exported from two notebooks: {found[mod]} and {nb}'
                    found[mod] = nb.relative_to(ROOT / 'nbs').as_posix()
    return found


def _package_imports(path: Path, modules) -> list:
    "[(line, imported module)] for every import of another package module in `path` (top level and in functions)."
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'), str(path))):
        if isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split('.')
                if parts[0] == PKG and len(parts) > 1: out.append((node.lineno, parts[1]))
        elif isinstance(node, ast.ImportFrom):
            parts = (node.module or '').split('.') if node.module else []
            if node.level == 0 and (not parts or parts[0] != PKG): continue
            if node.level > 1: raise AssertionError(f'{path}:{node.lineno}: a relative import above the package')
            rest = parts if node.level == 1 else parts[1:]           # `from .x import` / `from cxr_fracture.x import`
            if rest: out.append((node.lineno, rest[0]))
            else: out += [(node.lineno, a.name) for a in node.names if a.name in modules]   # `from cxr_fracture import io`
    return out


def test_every_module_has_one_notebook():
    nbs = _notebook_of_module()
    mods = {p.stem for p in (ROOT / PKG).glob('*.py') if not p.name.startswith('_')}
    assert mods == set(nbs), f'modules without a notebook: {sorted(mods - set(nbs))}; notebooks without a module: {sorted(set(nbs) - mods)}'


def test_imports_only_downward():
    nbs = _notebook_of_module()
    bad = []
    for mod, nb in sorted(nbs.items(), key=lambda kv: kv[1]):
        for line, dep in _package_imports(ROOT / PKG / f'{mod}.py', nbs):
            if dep == mod: continue
            where = f'{PKG}/{mod}.py:{line} ({nb}) imports {PKG}.{dep}'
            if dep not in nbs: bad.append(f'{where}, which no notebook exports')
            elif dep in TOP_ONLY and mod != 'cli': bad.append(f'{where}: only cli may import {dep}')
            elif not nbs[dep] < nb: bad.append(f'{where} from the later notebook {nbs[dep]}')
    assert not bad, 'imports must go to earlier notebooks:\n' + '\n'.join(bad)
