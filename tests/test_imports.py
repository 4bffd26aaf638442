"""The analysis, report, evaluation and data-preparation modules import without fairseq and without patches."""

import json
import subprocess
import sys

LIGHT = ["fairseq_switch.evaluation", "fairseq_switch.probe_selection", "fairseq_switch.logs", "fairseq_switch.file_io",
         "fairseq_switch.data.corpus", "fairseq_switch.reports"]

CHECK = f"""
import json, pkgutil, sys
import importlib
for name in {LIGHT!r}:
    importlib.import_module(name)
import fairseq_switch.reports as reports
for m in pkgutil.iter_modules(reports.__path__):
    importlib.import_module("fairseq_switch.reports." + m.name)
print(json.dumps({{"fairseq": sorted(m for m in sys.modules if m.split(".")[0] in ("fairseq", "fairseq_cli")),
                  "compat": "fairseq_switch.compat" in sys.modules,
                  "excepthook": sys.excepthook is sys.__excepthook__}}))
"""


def test_light_modules_import_without_fairseq():
    res = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    found = json.loads(res.stdout.splitlines()[-1])
    assert found == {"fairseq": [], "compat": False, "excepthook": True}, found
