"""The run layer and the methods sit below both training and evaluation: evaluating never imports the trainer."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_evaluation_the_run_layer_and_the_methods_never_import_the_trainer():
    code = (
        "import sys, pkgutil, importlib, latent.eval, latent.run, latent.data, latent.methods\n"
        "for pkg in (latent.eval, latent.run, latent.methods):\n"
        "    for info in pkgutil.walk_packages(pkg.__path__, prefix=pkg.__name__ + '.'):\n"
        "        importlib.import_module(info.name)\n"
        "import latent.data.splits, latent.export\n"
        "print(sorted(m for m in sys.modules if m.startswith('latent.train')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300, check=True)
    assert out.stdout.strip() == "[]", out.stdout
