"""What the three bench scripts share: where the repo and the shared data are, the case files and
report templates, how a path is shown in a committed report, running a logged command, and the
facts about this machine."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

BENCH = Path(__file__).resolve().parents[1]
REPO = BENCH.parent
CASES_DIR = BENCH / "cases"
TEMPLATES_DIR = BENCH / "templates"
# The folder that holds the shared sample sets (fruits-360-small, chest_xray-small)
SHARED_DATA_ENV = "FRUITNET_SHARED_DATA"


def load_cases(name: str) -> dict[str, Any]:
    """bench/cases/<name>.yaml."""
    return yaml.safe_load((CASES_DIR / f"{name}.yaml").read_text())


def template(name: str, **values: Any) -> str:
    """bench/templates/<name>.md with its {placeholders} filled, without the final newline."""
    text = (TEMPLATES_DIR / f"{name}.md").read_text().removesuffix("\n")
    return text.format(**values)


def find_dataset(name: str, given: str | os.PathLike | None, splits: Sequence[str] = ()) -> Path:
    """The `name` folder: `given`, else $FRUITNET_SHARED_DATA/<name>, else
    <repo>/../shared/data/<name>; the first that exists with every one of `splits` in it."""
    candidates = [Path(given)] if given else []
    if os.environ.get(SHARED_DATA_ENV):
        candidates.append(Path(os.environ[SHARED_DATA_ENV]) / name)
    candidates.append(REPO.parent / "shared" / "data" / name)
    for c in candidates:
        if c.is_dir() and all((c / s).is_dir() for s in splits):
            return c
    need = f" (a folder with {' and '.join(f'{s}/' for s in splits)})" if splits else ""
    tried = "\n  ".join(str(c) for c in candidates)
    sys.exit(
        f"{Path(sys.argv[0]).name}: {name} not found{need}. Tried:\n  {tried}\n"
        f"Pass --data or set {SHARED_DATA_ENV} to the folder that holds it."
    )


Places = Mapping[str | os.PathLike, str]  # a folder -> the placeholder a report shows for it


def shown_value(value: str, places: Places | None = None, name: str = "path") -> str:
    """`value` as a committed report shows it: under one of `places` (path -> placeholder) that
    placeholder and the rest, else an absolute path relative to the repo when inside it, else
    `<name>`. A report never holds a folder of the machine that wrote it."""
    if not os.path.isabs(value):
        return value
    for path, placeholder in sorted((places or {}).items(), key=lambda p: -len(os.fspath(p[0]))):
        path = os.fspath(path)
        if value == path or value.startswith(path.rstrip(os.sep) + os.sep):
            return placeholder + value[len(path) :]
    normal = Path(os.path.normpath(value))
    if normal.is_relative_to(REPO):
        return normal.relative_to(REPO).as_posix() or "."
    return f"<{name}>"


def shown_args(args: Sequence[str], places: Places | None = None) -> list[str]:
    """A command's arguments with every absolute path shown by `shown_value`: an absolute
    ``--out`` (as one argument or two) becomes `<out>` unless it is under the repo, an absolute
    ``data.root`` `<data.root>`."""
    out, option = [], "path"
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep:
            out.append(f"{key}={shown_value(value, places, key.lstrip('-+~'))}")
        else:
            out.append(shown_value(arg, places, option))
        option = arg.lstrip("-") if arg.startswith("-") and not sep else "path"
    return out


def run_logged(
    cmd: list[str], log_file: Path, env: Mapping[str, str] | None = None
) -> tuple[int, float]:
    """Runs `cmd` from the repo root, stdout and stderr into `log_file`; (exit code, seconds)."""
    start = time.perf_counter()
    with open(log_file, "w") as fh:
        proc = subprocess.run(cmd, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, env=env)
    return proc.returncode, time.perf_counter() - start


def isa_flags() -> str:
    """AVX-512, AVX-512 BF16 and AMX as /proc/cpuinfo lists them."""
    from fruitnet.runtime import cpu_flags

    flags = cpu_flags()
    parts = [
        ("AVX-512", "avx512f" in flags),
        ("AVX-512 BF16", "avx512_bf16" in flags),
        ("AVX-512 VNNI", "avx512_vnni" in flags),
        ("AMX", bool({"amx_bf16", "amx_tile"} & flags)),
    ]
    return ", ".join(f"{name} {'yes' if on else 'no'}" for name, on in parts)


def machine_text() -> str:
    """``machine()`` as a report's words: CPU, cores and whether bf16 autocast pays."""
    here = machine()
    bf16 = ", AVX-512 BF16" if here["bf16"] else ""
    return f"{here['cpu']}, {here['cores']} cores{bf16}"


def machine() -> dict[str, Any]:
    """This machine as the reports describe it."""
    import platform

    import torch

    from fruitnet.runtime import cpu_has_fast_bf16, cpu_name

    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "bf16": cpu_has_fast_bf16(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
