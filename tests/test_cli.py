import subprocess
import sys

from engine.cli import main


def test_help_lists_the_program(capsys):
    assert main([]) == 0
    assert "hsbulk" in capsys.readouterr().out


def test_python_dash_m_engine_runs():
    done = subprocess.run([sys.executable, "-m", "engine", "--version"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0
    assert done.stdout.startswith("hsbulk ")
