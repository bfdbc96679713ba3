"""README.md is written by hand (no Quarto here): it must agree with nbs/index.ipynb."""
import json, re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _index_text():
    nb = json.loads((REPO / 'nbs' / 'index.ipynb').read_text())
    return '\n'.join(''.join(c['source']) for c in nb['cells'])


def test_readme_and_index_agree_on_the_commands_and_notebooks():
    readme, index = (REPO / 'README.md').read_text(), _index_text()
    for cmd in ('make demo', 'make test'):
        assert cmd in readme and cmd in index, cmd
    nbs = sorted(p.stem for p in (REPO / 'nbs').glob('[0-9]*.ipynb'))
    assert nbs, 'no notebooks'
    for name in nbs:
        assert f'`{name}`' in readme, f'README does not list {name}'
        assert f'`{name}`' in index, f'index.ipynb does not list {name}'
    for tpl in ('experiments/train.ipynb', 'experiments/report.ipynb'):
        assert tpl in readme and tpl in index


def test_readme_names_only_existing_commands():
    from cxr_fracture.cli import COMMANDS
    readme = (REPO / 'README.md').read_text()
    used = set(re.findall(r'cxr-fracture ([a-z][a-z-]+)', readme))
    assert used - {'fracture'} <= set(COMMANDS), used - set(COMMANDS)


def _section(text, title):
    m = re.search(rf'^## {re.escape(title)}\n(.*?)(?=^## |\Z)', text, re.S | re.M)
    return m and m.group(1).strip()


def test_readme_and_index_open_with_the_same_words():
    "The text above the first section: the title, the one-line description (wrapped differently) and the introduction."
    readme, index = (REPO / 'README.md').read_text(), _index_text()
    words = lambda t: ' '.join(t.split('\n## ', 1)[0].replace('\n> ', ' ').split())
    assert words(readme) == words(index)


def test_readme_and_index_report_the_same_measurements():
    readme, index = (REPO / 'README.md').read_text(), _index_text()
    for title in ('The two commands', 'Data, honestly', 'What the demo measured', 'The science on the phantom',
                  'The AALS Table 1 on the phantom', "The papers' claims on the calibrated phantom", 'Real data: FracAtlas',
                  'Measured figures', 'Your own data'):
        assert _section(readme, title), f'README has no section {title!r}'
        # links are relative to each file: README.md sits at the root, index.ipynb in nbs/
        same = _section(index, title).replace('](../', '](')
        assert _section(readme, title) == same, f'README and index.ipynb differ in {title!r}'


def test_the_tour_loop_runs(tmp_path, monkeypatch):
    "The README's train-look-slide block, run as written (in a temporary folder): every figure and the explorer are made."
    block = re.search(r"Then the whole loop in a notebook.*?```python\n(.*?)```", (REPO / 'README.md').read_text(), re.S).group(1)
    assert block in _index_text(), 'the tour block differs between README.md and index.ipynb'
    monkeypatch.chdir(tmp_path)
    ns = {}
    exec(compile(block, 'README tour', 'exec'), ns)
    assert (tmp_path / 'tour' / 'aals' / 'model.pt').is_file()
    assert len(list((tmp_path / 'tour' / 'predict' / 'overlays').glob('*.png'))) == 40
    assert len(ns['p']) == 40 and (ns['p']['error'] == '').all()
