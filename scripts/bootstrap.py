"""Build the plugin's own virtualenv from its source (stdlib only; run by scripts/session-manager).

    python3 scripts/bootstrap.py PLUGIN_ROOT VENV VERSION

Ways, the first that applies:
1. the python running this can already import every dependency (e.g. one where session-manager
   was installed before): a venv that sees that python's packages (a `.pth` line), and our
   package (pure Python) copied from the source folder with its console script. Nothing is
   downloaded and nothing built: it works offline;
2. `uv` on PATH: `uv venv` + `uv pip install PLUGIN_ROOT`;
3. `python3 -m venv` + `pip install PLUGIN_ROOT` (dependencies from the package index pip is set up for).
The venv is built in place (its scripts name their interpreter by path); `VENV/.plugin-version`,
written last, marks it complete and built for VERSION (the launcher rebuilds when the plugin's version changes). One
progress line goes to stderr; a failure is one line there and in `bootstrap.failed`, which the
next hook shows. A lock keeps two builds (SessionStart's and the server's) from racing.
"""

from __future__ import annotations

import fcntl
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

DEPENDENCIES = ("pydantic", "mcp", "jinja2", "git", "filelock", "orjson")
MARK = ".plugin-version"


class Failed(Exception):
    pass


def run(args: list[str], what: str) -> None:
    proc = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [line for line in (proc.stderr or proc.stdout).splitlines() if line.strip()]
        raise Failed(f"{what} failed: {lines[-1].strip() if lines else f'exit {proc.returncode}'}")


def has_dependencies() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in DEPENDENCIES)


def build(source: Path, target: Path) -> str:
    python = sys.executable
    if has_dependencies():
        run([python, "-m", "venv", "--without-pip", str(target)], "creating the virtualenv")
        inner = target / "bin" / "python"
        site = subprocess.run([str(inner), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              capture_output=True, text=True, check=True).stdout.strip()
        paths = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
        Path(site, "_session_manager_base.pth").write_text("".join(f"{p}\n" for p in paths))
        # our package is pure Python: copied from the source folder, with its console script
        shutil.copytree(source / "server" / "session_manager", Path(site, "session_manager"),
                        ignore=shutil.ignore_patterns("__pycache__"))
        script = target / "bin" / "session-manager"
        script.write_text(f"#!{inner}\nimport sys\nfrom session_manager.entry import main\nsys.exit(main())\n")
        script.chmod(0o755)
        return "reusing the dependencies of " + python
    uv = shutil.which("uv")
    if uv:
        run([uv, "venv", "--quiet", "--python", python, str(target)], "uv venv")
        run([uv, "pip", "install", "--quiet", "--python", str(target / "bin" / "python"), str(source)],
            "uv pip install")
        return "uv"
    run([python, "-m", "venv", str(target)], "python3 -m venv")
    run([str(target / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(source)],
        "pip install")
    return "pip"


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: bootstrap.py PLUGIN_ROOT VENV VERSION", file=sys.stderr)
        return 2
    source, venv, version = Path(argv[0]).resolve(), Path(argv[1]), argv[2]
    data = venv.parent
    failed = data / "bootstrap.failed"
    try:
        if sys.version_info < (3, 11):
            raise Failed(f"python {sys.version.split()[0]} is too old; session-manager needs 3.11 or newer")
        data.mkdir(parents=True, exist_ok=True)
        with open(data / "bootstrap.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # a second build waits here, then finds the first one's result
            if (venv / MARK).is_file() and (venv / MARK).read_text().strip() == version \
                    and (venv / "bin" / "session-manager").exists():
                return 0
            print(f"session-manager: setting up {version} in {venv} (first use of this version)...",
                  file=sys.stderr, flush=True)
            started = time.monotonic()
            shutil.rmtree(venv, ignore_errors=True)  # another version's, or a build cut short
            how = build(source, venv)  # in place: a venv's scripts name their interpreter by path
            (venv / MARK).write_text(version + "\n")  # last: only a complete build is ever run
            failed.unlink(missing_ok=True)
            print(f"session-manager: ready ({how}, {time.monotonic() - started:.0f} s)", file=sys.stderr, flush=True)
            return 0
    except (Failed, OSError, subprocess.SubprocessError) as exc:
        message = " ".join(str(exc).split())[:300]
        print(f"session-manager: could not set itself up: {message}", file=sys.stderr, flush=True)
        try:
            failed.write_text(message + "\n")
        except OSError:
            pass
        return 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
