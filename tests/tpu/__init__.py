

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def load_tpu_script(name: str):
    """tpu/<name>.py as a module (tpu/ is a folder of scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"tpu_{name}", ROOT / "tpu" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
