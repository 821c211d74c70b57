"""The package's layers: engine < representations < paper < apps, each importing only the ones
below it (and the shared modules: errors, atomic, images, figures); ``import preimage`` builds no
model and loads no heavy library it does not need."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lib" / "preimage"
ORDER = ["engine", "representations", "paper", "apps"]


def _imports(path: Path) -> set[str]:
    """The preimage subpackages a module imports (absolute or relative), by first component."""
    tree = ast.parse(path.read_text())
    here = path.relative_to(PACKAGE).parts[:-1]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(here[:len(here) - node.level + 1]) + (node.module.split(".") if node.module else [])
                names = [base + [a.name] for a in node.names] if not node.module else [base]
            elif node.module and node.module.startswith("preimage"):
                names = [node.module.split(".")[1:]]
            else:
                continue
        elif isinstance(node, ast.Import):
            names = [a.name.split(".")[1:] for a in node.names if a.name.startswith("preimage")]
        else:
            continue
        found |= {n[0] for n in names if n}
    return found


@pytest.mark.parametrize("layer", ORDER)
def test_each_layer_imports_only_the_layers_below_it(layer):
    above = set(ORDER[ORDER.index(layer) + 1:])
    for path in (PACKAGE / layer).rglob("*.py"):
        assert not _imports(path) & above, f"{path.relative_to(PACKAGE)} imports {_imports(path) & above}"


def test_shared_modules_import_no_layer_at_module_level():
    for name in ("errors.py", "atomic.py", "images.py"):
        assert not _imports(PACKAGE / name) & set(ORDER), name


def test_the_import_check_sees_relative_and_absolute_imports(tmp_path):
    probe = PACKAGE / "engine" / "objective.py"
    assert _imports(probe) >= {"errors"}
    assert _imports(PACKAGE / "apps" / "cli.py") >= {"engine", "paper", "representations"}


def test_import_preimage_loads_no_heavy_library_and_builds_no_model():
    code = ("import sys, preimage, torch; heavy = [m for m in ('timm', 'sklearn', 'skimage', 'matplotlib', "
            "'papermill', 'ipywidgets') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
