"""The installed ``bruno-memstore`` script, run as a real process."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import time
from pathlib import Path

SCRIPT = Path(sys.executable).with_name("bruno-memstore")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "BRUNO_MEMSTORE_URL"}
    env["COLUMNS"] = "120"
    return env


def _run(
    *args: str, cwd: Path, timeout: float = 60, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args],
        cwd=cwd,
        env=_env(),
        input=stdin,
        stdin=subprocess.DEVNULL if stdin is None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_demo_script_on_a_fresh_directory(tmp_path: Path) -> None:
    started = time.perf_counter()
    result = _run("demo", cwd=tmp_path)
    elapsed = time.perf_counter() - started
    assert result.returncode == 0, result.stderr
    for section in (
        "bruno-memstore demo",
        "What the assistant saw for the last turn (oldest first)",
        "Ranked search over messages and memory entries",
        "Memory entries",
        "get_statistics('maya')",
        "Reopened sqlite:///",
        "The temporary SQLite file was removed",
    ):
        assert section in result.stdout
    # bruno-core's INFO log lines are kept off the output; nothing else goes to stderr.
    assert "processing_message" not in result.stdout + result.stderr
    assert result.stderr == ""
    assert list(tmp_path.iterdir()) == []  # nothing left behind
    assert elapsed < 20, f"demo took {elapsed:.1f} s"


def test_forget_user_without_a_terminal_aborts(tmp_path: Path) -> None:
    db = tmp_path / "kept.db"
    assert _run("demo", "--db", str(db), cwd=tmp_path).returncode == 0
    url = f"sqlite:///{db}"
    refused = _run("forget-user", "maya", "-u", url, cwd=tmp_path)
    assert refused.returncode == 1
    assert "without one, pass --yes" in refused.stderr
    stats = _run("stats", "--user", "maya", "-u", url, "--json", cwd=tmp_path)
    assert '"total_messages": 17' in stats.stdout


def test_forget_user_with_piped_input_needs_yes(tmp_path: Path) -> None:
    db = tmp_path / "kept.db"
    assert _run("demo", "--db", str(db), cwd=tmp_path).returncode == 0
    url = f"sqlite:///{db}"
    refused = _run("forget-user", "maya", "-u", url, cwd=tmp_path, stdin="y\n")
    assert refused.returncode == 1
    assert "--yes" in refused.stderr
    stats = _run("stats", "--user", "maya", "-u", url, "--json", cwd=tmp_path)
    assert '"total_messages": 17' in stats.stdout
    erased = _run("forget-user", "maya", "-u", url, "--yes", cwd=tmp_path, stdin="n\n")
    assert erased.returncode == 0, erased.stderr
    assert "Erased user 'maya'" in erased.stdout
    stats = _run("stats", "--user", "maya", "-u", url, "--json", cwd=tmp_path)
    assert '"total_messages": 0' in stats.stdout


def _on_a_terminal(*args: str, cwd: Path, answer: bytes) -> subprocess.CompletedProcess[str]:
    """Run the script with a pseudo-terminal as its standard input, typing ``answer``."""
    primary, secondary = pty.openpty()
    try:
        proc = subprocess.Popen(
            [str(SCRIPT), *args],
            cwd=cwd,
            env=_env(),
            stdin=secondary,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        os.write(primary, answer)
        out, err = proc.communicate(timeout=60)
    finally:
        os.close(secondary)
        os.close(primary)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_forget_user_asks_on_a_terminal(tmp_path: Path) -> None:
    db = tmp_path / "kept.db"
    assert _run("demo", "--db", str(db), cwd=tmp_path).returncode == 0
    url = f"sqlite:///{db}"
    declined = _on_a_terminal("forget-user", "maya", "-u", url, cwd=tmp_path, answer=b"n\n")
    assert declined.returncode == 1
    assert "Erase everything stored for user 'maya'" in declined.stderr
    assert "Aborted" in declined.stderr
    erased = _on_a_terminal("forget-user", "maya", "-u", url, cwd=tmp_path, answer=b"y\n")
    assert erased.returncode == 0, erased.stderr
    assert "Erased user 'maya'" in erased.stdout


def test_unknown_scheme_exits_cleanly(tmp_path: Path) -> None:
    result = _run("search", "kyoto", "--user", "maya", "-u", "mongo://localhost/x", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("error: ")
    assert "unknown scheme 'mongo'" in result.stderr and "known schemes:" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_cli_extra_names_the_pip_command(tmp_path: Path) -> None:
    # typer hidden from the import system, as on an install without the `cli` extra.
    code = (
        "import sys; sys.modules['typer'] = None\n"
        "from bruno_memstore.cli import load_app, main\n"
        "from bruno_memstore.errors import MissingDependencyError\n"
        "try:\n"
        "    load_app()\n"
        "except MissingDependencyError as exc:\n"
        "    assert exc.extra == 'cli' and exc.package == 'typer', exc\n"
        "main(['--help'])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert "pip install 'bruno-memstore[cli]'" in result.stderr
    assert "Traceback" not in result.stderr


def test_module_entry_point(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bruno_memstore.cli", "--version"],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0 and result.stdout.strip() == "bruno-memstore 0.1.0"
