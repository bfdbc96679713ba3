"""Which notebook cells make figures: read from the package's source, so a new figure function is covered without a list.

A *figure function* is a public function of `cxr_fracture` that makes a figure and says so in its docstring ("Figure",
"Fig.", "widget"): it calls `subplots` or `new_figure` (`cxr_fracture.figures`; or matplotlib's `Figure`, `figure`), or a function or
class that does. A
*figure cell* is a code cell of a tutorial notebook that calls one, or `subplots`/`new_figure` themselves, and that a
reader sees run (not `#| export`, `#| hide` or `#| eval: false`); it must show what it makes. Used by
`tests/test_browser.py` (in a real browser) and `tests/test_notebook_outputs.py` (the committed outputs)."""
import ast, json, re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PKG, NBS = REPO / 'cxr_fracture', REPO / 'nbs'
MAKERS = {'subplots', 'new_figure', 'Figure', 'figure'}   # cxr_fracture.figures' two (how the package makes figures), matplotlib's


def _called(node) -> set:
    "Names called (plain or as an attribute) anywhere under `node`."
    out = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Call):
            f = n.func
            if isinstance(f, ast.Name): out.add(f.id)
            elif isinstance(f, ast.Attribute): out.add(f.attr)
    return out


def figure_functions() -> set:
    "Public names in cxr_fracture that make a figure (directly or through another function or class)."
    defs, docs = {}, {}
    for py in PKG.glob('*.py'):
        if py.name in ('figures.py', '_modidx.py'): continue
        for node in ast.parse(py.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                defs[node.name], docs[node.name] = _called(node), ast.get_docstring(node) or ''
    makers, grew = set(MAKERS), True
    while grew:
        new = {name for name, calls in defs.items() if calls & makers} - makers
        makers |= new; grew = bool(new)
    says = re.compile(r'\bfig(ure)?\b|widget', re.I)   # a function that saves a figure on the way (the demo's gallery) is not one
    return {n for n in makers - MAKERS if not n.startswith('_') and says.search(docs[n])}


def _code(cell) -> str: return ''.join(cell['source']) if cell['cell_type'] == 'code' else ''


def _flags(src: str) -> list: return [l for l in src.splitlines() if l.startswith('#|')]


def is_run(src: str) -> bool:
    "A code cell that nbdev_test and a reader run (not the package's source, not `#| eval: false`, not a hidden check)."
    return not any(re.match(r'#\|\s*(export|exporti|hide|eval:\s*false|slow|gpu)\b', l) for l in _flags(src))


def never_run_in_tests(src: str) -> bool:
    "A cell nbdev_test skips: `#| eval: false` (must never run in tests), `#| slow`, `#| gpu` (settings.ini tst_flags)."
    return any(re.match(r'#\|\s*(eval:\s*false|slow|gpu)\b', l) for l in _flags(src))


def figure_cells(nb_path, names=None) -> list:
    "(index, source) of the code cells of a notebook that call a figure function."
    names = (figure_functions() if names is None else names) | MAKERS
    pat = re.compile(r'\b(' + '|'.join(sorted(map(re.escape, names))) + r')\s*\(')
    cells = json.loads(Path(nb_path).read_text())['cells']
    return [(i, _code(c)) for i, c in enumerate(cells) if _code(c) and is_run(_code(c)) and pat.search(_code(c))]


def tutorial_notebooks() -> list:
    "The notebooks of nbs/ (not the papermill templates) that have figure cells."
    names = figure_functions()
    return [p for p in sorted(NBS.glob('*.ipynb')) if figure_cells(p, names)]
