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
