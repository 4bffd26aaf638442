"""What importing the package does: the analysis, report, evaluation and data-preparation modules import without
fairseq; plugin modules never import the lab."""

import json
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

