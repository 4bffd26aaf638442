"""What importing the package does: the analysis, report, evaluation and data-preparation modules import without
fairseq; plugin modules never import the lab; no import but registration changes the process."""

import json
import os
import subprocess
import sys

LIGHT = ["fairseq_switch.evaluation", "fairseq_switch.lab.probe_selection", "fairseq_switch.logs",
         "fairseq_switch.file_io", "fairseq_switch.data.corpus", "fairseq_switch.lab.reports"]

CHECK = f"""
import json, pkgutil, sys
import importlib
for name in {LIGHT!r}:
    importlib.import_module(name)
import fairseq_switch.lab.reports as reports
for m in pkgutil.iter_modules(reports.__path__):
    importlib.import_module("fairseq_switch.lab.reports." + m.name)
print(json.dumps({{"fairseq": sorted(m for m in sys.modules if m.split(".")[0] in ("fairseq", "fairseq_cli")),
                  "compat": "fairseq_switch.compat" in sys.modules,
                  "excepthook": sys.excepthook is sys.__excepthook__}}))
"""


def test_light_modules_import_without_fairseq():
    res = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    found = json.loads(res.stdout.splitlines()[-1])
    assert found == {"fairseq": [], "compat": False, "excepthook": True}, found


PLUGIN_ONLY = """
import json, pkgutil, sys, importlib
from pathlib import Path
import fairseq_switch
def walk(path, prefix):  # pkgutil.walk_packages would import the lab's packages to look inside them
    for m in pkgutil.iter_modules(path, prefix):
        if m.name != "fairseq_switch.lab":
            yield m.name
            if m.ispkg:
                yield from walk([str(Path(path[0]) / m.name.rsplit(".", 1)[1])], m.name + ".")
names = list(walk(fairseq_switch.__path__, "fairseq_switch."))
for name in names:
    importlib.import_module(name)
print(json.dumps({"imported": len(names), "lab": sorted(m for m in sys.modules if m.startswith("fairseq_switch.lab"))}))
"""


def test_plugin_modules_never_import_the_lab():
    res = subprocess.run([sys.executable, "-c", PLUGIN_ONLY], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    found = json.loads(res.stdout.splitlines()[-1])
    assert found["imported"] > 30 and found["lab"] == [], found


# Importing plugin modules (everything but the registration path) leaves the process as it was; register()
# is what installs the patches. The patch targets are read from the registry's source and imported first,
# without the package (importing fairseq may set filters of its own).
SIDE_EFFECTS = """
import ast, importlib, importlib.util, inspect, json, os, pkgutil, sys, warnings
import torch, torch.distributed as dist, torch.nn.functional as F
from torch.serialization import get_safe_globals

registry = os.path.join(os.path.dirname(importlib.util.find_spec("fairseq_switch").origin), "compat", "registry.py")
TARGETS = {c.args[0].value: c.args[1].value for c in ast.walk(ast.parse(open(registry).read()))
           if isinstance(c, ast.Call) and getattr(c.func, "id", "") == "Patch"}

def current(target):
    module, attribute = target.split(":")
    owner = importlib.import_module(module)
    *path, attr = attribute.split(".")
    for part in path:
        owner = getattr(owner, part)
    return inspect.getattr_static(owner, attr) if inspect.isclass(owner) else getattr(owner, attr)

def state():
    return {"targets": {n: id(current(t)) for n, t in TARGETS.items()}, "excepthook": id(sys.excepthook),
            "meta_path": [id(f) for f in sys.meta_path], "filters": repr(warnings.filters),
            "safe_globals": repr(get_safe_globals()), "process_group": dist.is_initialized()}

state()  # imports the targets' modules
before = state()
assert "fairseq_switch" not in sys.modules
names = ["fairseq_switch." + n for n in ("modules", "models", "tasks", "criterions", "data", "convert", "checkpoints")]
for pkg in list(names):
    names += [m.name for m in pkgutil.walk_packages(importlib.import_module(pkg).__path__, pkg + ".")]
for name in names + ["fairseq_switch.compat", "fairseq_switch.plugin"]:
    importlib.import_module(name)
from fairseq_switch.modules.routing import RouterConfig
from fairseq_switch.modules.switch_layer import SwitchFFN
SwitchFFN(8, 16, RouterConfig(4, dispatch="einsum"), activation_fn=F.relu)(torch.randn(6, 8))  # MOELayer
imported = state()
from fairseq_switch.compat import PATCHES
from fairseq_switch.plugin import register
register()
after = state()
print(json.dumps({"patches": len(TARGETS) == len(PATCHES),
                  "changed_by_imports": sorted(k for k in before if before[k] != imported[k]),
                  "targets_changed_by_imports": [n for n in TARGETS
                                                 if before["targets"][n] != imported["targets"][n]],
                  "not_installed_by_register": [p.name for p in PATCHES if p.assign
                                                and after["targets"][p.name] == before["targets"][p.name]],
                  "changed_by_register": sorted(k for k in before if imported[k] != after[k])}))
"""


def test_importing_plugin_modules_changes_nothing_global_until_register():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", SIDE_EFFECTS], capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    found = json.loads(res.stdout.splitlines()[-1])
    assert found["patches"], found  # every registry entry was read
    assert found["changed_by_imports"] == [] and found["targets_changed_by_imports"] == [], found
    assert found["not_installed_by_register"] == [], found
    # fairseq's functions, the excepthook, the warnings filter (fairscale's deprecations) and the
    # checkpoint types: registration installs them; never an import hook or a process group
    assert found["changed_by_register"] == ["excepthook", "filters", "safe_globals", "targets"], found
