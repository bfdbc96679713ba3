"""The notebooks as committed: they carry their figures (so they read as tutorials on a code host and in JupyterLab
before anything runs), and their outputs are small and hold nothing of the machine that ran them.
`make notebooks` (tools/run_notebooks.py) writes them so; these checks read the files only."""
import base64, json, sys
from pathlib import Path
import pytest
from notebook_cells import NBS, figure_cells, figure_functions, tutorial_notebooks

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'tools'))
from run_notebooks import ABSOLUTE, WIDGET  # noqa: E402

ALL = sorted(NBS.rglob('*.ipynb'))
MAX_NBS_BYTES = 10 * 2**20      # all of nbs/
MAX_PNG_BYTES = 500_000         # one figure (PNG at a modest dpi; a gallery of radiographs is the largest)


def _outputs(nb):
    for i, c in enumerate(nb['cells']):
        for o in c.get('outputs', []): yield i, c, o


ARCHIVE = NBS / 'experiments' / 'results'   # the runs' records (`cxr-fracture archive`): data, with a budget of its own
MAX_ARCHIVE_BYTES = 30 * 2**20              # about 35 kB a run: some 800 runs


def test_nbs_is_small():
    size = sum(f.stat().st_size for f in NBS.rglob('*') if f.is_file() and ARCHIVE not in f.parents)
    assert size < MAX_NBS_BYTES, f'nbs/ is {size / 2**20:.1f} MB, over 10 MB: lower the dpi or the number of figures'


def test_the_runs_archive_is_small():
    files = [f for f in ARCHIVE.rglob('*') if f.is_file()]
    size = sum(f.stat().st_size for f in files)
    assert size < MAX_ARCHIVE_BYTES, f'{ARCHIVE} is {size / 2**20:.1f} MB, over 30 MB: archive with a lower --max-bytes'
    big = [f'{f} ({f.stat().st_size:,} bytes)' for f in files if f.stat().st_size > 1_000_000]
    assert not big, f'records over the archive default max_bytes (1 MB): {big}'


@pytest.mark.parametrize('path', ALL, ids=[str(p.relative_to(NBS)) for p in ALL])
def test_outputs_hold_nothing_of_the_machine(path):
    nb = json.loads(path.read_text())
    bad = []
    for i, c, o in _outputs(nb):
        if c.get('execution_count') is not None or o.get('execution_count') is not None: bad.append(f'[{i}] an execution count')
        data = o.get('data', {})
        if WIDGET in data: bad.append(f'[{i}] a widget model (ids change on every run; keep a still: make notebooks)')
        png = data.get('image/png')
        if png and len(base64.b64decode(''.join(png))) > MAX_PNG_BYTES: bad.append(f'[{i}] a PNG over {MAX_PNG_BYTES // 1000} kB')
        texts = [o.get('text', '')] + [v for k, v in data.items() if k.startswith('text/')]
        for t in texts:
            t = ''.join(t) if isinstance(t, list) else t
            bad += [f'[{i}] absolute path {m.group(0)[:80]!r}' for m in ABSOLUTE.finditer(t)]
    assert not bad, f'{path.name}: ' + '; '.join(bad[:10])


TUTORIALS = tutorial_notebooks()


@pytest.mark.parametrize('path', TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_notebooks_carry_their_figures(path):
    "Every figure cell is committed with the image it shows (`make notebooks NOTEBOOKS=nbs/NAME.ipynb` writes them)."
    nb = json.loads(path.read_text())
    missing = [i for i, _ in figure_cells(path, figure_functions())
               if not any('image/png' in o.get('data', {}) for o in nb['cells'][i].get('outputs', []))]
    assert not missing, f'{path.name}: figure cells {missing} carry no image: run `make notebooks NOTEBOOKS={path.relative_to(NBS.parent)}`'
