"""Every module of `latent` imports as the first `latent` import of an interpreter.

A circular import only shows when its cycle is entered from one particular module: the suite's
other tests import `latent` in whatever order their files happen to, and a script (or a subprocess
test) that starts from another module fails where they pass. So import each module in turn into
an interpreter whose `latent.*` modules were all dropped first."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


IMPORT_EACH_FIRST = r"""
import importlib, importlib.util, pathlib, pkgutil, sys, traceback
import latent
names = sorted(info.name for info in pkgutil.walk_packages(latent.__path__, "latent."))
# the entry points too: each is imported (not run: they keep their work under __main__)
scripts = ["train.py", "eval.py", *sorted(map(str, pathlib.Path().glob("scripts/*.py"))),
           *sorted(map(str, pathlib.Path().glob("tpu/*.py"))),
           *sorted(str(p) for p in pathlib.Path().glob("benchmarks/*.py") if p.name != "__init__.py")]
failed = []
for name in names + scripts:
    for loaded in [m for m in sys.modules if m == "latent" or m.startswith("latent.")]:
        del sys.modules[loaded]
    try:
        if name.endswith(".py"):  # as `python name` would: its own folder first on sys.path
            sys.path.insert(0, str(pathlib.Path(name).resolve().parent))
            spec = importlib.util.spec_from_file_location("entry_point", name)
            spec.loader.exec_module(importlib.util.module_from_spec(spec))
        else:
            importlib.import_module(name)
    except Exception:
        failed.append(name + ":\n" + traceback.format_exc(limit=-3))
print(len(names), "modules", len(scripts), "scripts")
print("\n".join(failed))
sys.exit(1 if failed else 0)
"""


def test_every_module_imports_first_in_a_fresh_interpreter():
    result = subprocess.run([sys.executable, "-c", IMPORT_EACH_FIRST], capture_output=True, text=True, timeout=600,
                            cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    modules, _, scripts, _ = result.stdout.split()[:4]
    assert int(modules) > 50 and int(scripts) >= 10, result.stdout  # the walks found the files
