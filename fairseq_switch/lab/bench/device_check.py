"""The GPU acceptance run behind scripts/device_check.sh (after its install step): the CUDA-marked tests,
the layer benchmark and two short fairseq-train runs, each in its own process under a time limit, then
one JSON file and a markdown summary with the targets next to the figures.

--dry-run runs the same steps on the CPU at toy size (CI runs it: tests/test_device_check.py).
"""

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Dict, List, Optional

ROOT = Path(__file__).resolve().parents[3]
TARGETS = {
    "layer": "Switch FFN at most 1.2x dense, 16384 tokens, 32 experts, d 1024, ff 4096, bf16",
    "train": "switch_small training step at most 1.15x t5_small's",
    "routing": "CUDA routing agrees with the CPU (experts, drops, gates, losses, gradients)",
}
LAYER_TARGET, TRAIN_TARGET = 1.2, 1.15

# (name, fairseq arch, extra options): switch_small has 32 experts; the grouped run shows what the grouped
# GEMM path changes in training.
TRAIN_RUNS = [("t5_small", "t5_small", []), ("switch_small", "switch_small", []),
              ("switch_small_grouped", "switch_small", ["--moe-dispatch", "grouped"])]
TOY_SHAPE = ["--encoder-embed-dim", "64", "--decoder-embed-dim", "64", "--encoder-ffn-embed-dim", "128",
             "--decoder-ffn-embed-dim", "128", "--encoder-attention-heads", "2", "--decoder-attention-heads", "2",
             "--encoder-layers", "2", "--decoder-layers", "2"]


def run_step(name: str, cmd: List[str], timeout: float, log: Path, env: Optional[Dict[str, str]] = None) -> Dict:
    """Run `cmd` with its output appended to `log`; returns status, exit code and seconds."""
    t0 = time.perf_counter()
    with open(log, "a") as f:
        f.write(f"\n===== {name}: {shlex.join(cmd)}\n")
        f.flush()
        try:
            rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, timeout=timeout,
                                env={**os.environ, **(env or {})}).returncode
            status = "ok" if rc == 0 else "failed"
        except subprocess.TimeoutExpired:
            rc, status = None, f"timed out after {timeout:.0f} s"
    seconds = time.perf_counter() - t0
    print(f"[device_check] {name}: {status} ({seconds:.0f} s)", flush=True)
    return {"status": status, "exit_code": rc, "seconds": round(seconds, 1)}


def environment() -> Dict[str, Any]:
    import torch

    cuda = torch.cuda.is_available()
    try:  # the device machine's copy of the tree may come without git or .git
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=ROOT).stdout.strip()
    except OSError:
        commit = ""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "device": torch.cuda.get_device_name(0) if cuda else f"cpu ({os.cpu_count()} cores)",
        "gpu_memory_gb": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if cuda else None,
        "commit": commit or None,
    }


def junit_results(path: Path) -> Dict[str, Any]:
    """pytest's junit XML: counts and each test's outcome (with the first line of a failure)."""
    if not path.exists():
        return {"tests": []}
    tests = []
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", None
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome = "failed" if tag in ("failure", "error") else "skipped"
                message = (node.get("message") or "").splitlines()[0][:300] if node.get("message") else None
        tests.append({"name": case.get("name"), "outcome": outcome, "message": message})
    counts = {k: sum(t["outcome"] == k for t in tests) for k in ("passed", "failed", "skipped")}
    return {**counts, "tests": tests}


def make_toy_data(folder: Path) -> None:
    """A binarized train split of random documents over a sentinel dictionary (as the tests make theirs)."""
    from .toy_data import write_corpus

    write_corpus(str(folder), num_docs=200)


def train_argv(data: str, arch: str, extra: List[str], dry: bool, updates: int, save_dir: str) -> List[str]:
    argv = [data, "--user-dir", str(ROOT / "fairseq_switch"), "--task", "span_corruption", "--arch", arch,
            "--criterion", "switch_cross_entropy", "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)",
            "--lr", "1e-3", "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "100", "--clip-norm", "1.0",
            "--dropout", "0", "--bf16", "--max-update", str(updates), "--seed", "1", "--log-format", "json",
            "--no-progress-bar", "--no-save", "--disable-validation", "--save-dir", save_dir, *extra]
    if dry:
        return argv + TOY_SHAPE + ["--moe-expert-count", "4" if "switch" in arch else "0", "--input-length", "32",
                                   "--max-tokens", "512", "--log-interval", "2", "--num-workers", "0", "--cpu"]
    return argv + ["--input-length", "256", "--max-tokens", "16384", "--log-interval", "10", "--num-workers", "2"]


def layer_ratio(bench: Dict[str, Any], experts: int, tokens: int, variant: str) -> Optional[float]:
    for row in bench.get("rows", []):
        if row["experts"] == experts and row["tokens"] == tokens and row.get(variant, {}).get("vs_dense"):
            return row[variant]["vs_dense"]
    return None


def verdict(value: Optional[float], target: float, dry: bool) -> str:
    if value is None:
        return "no figure"
    if dry:
        return "n/a (dry run)"
    return "meets" if value <= target else "misses"


def summary_markdown(res: Dict[str, Any]) -> str:
    env, dry = res["environment"], res["dry_run"]
    lines = [f"# Device check{' (dry run: CPU, toy sizes; the targets apply to the GPU run)' if dry else ''}", "",
             f"{env['device']}; Python {env['python']}, torch {env['torch']} (CUDA {env['torch_cuda']}), "
             f"commit {env['commit']}; {res['seconds']:.0f} s in all.", "",
             "| step | status | seconds |", "|---|---|---|"]
    lines += [f"| {name} | {step['status']} | {step['seconds']} |" for name, step in res["steps"].items()]
    tests = res.get("cuda_tests", {})
    lines += ["", f"## pytest -m cuda: {tests.get('passed', 0)} passed, {tests.get('failed', 0)} failed, "
                  f"{tests.get('skipped', 0)} skipped", ""]
    lines += [f"- {t['name']}: {t['outcome']}" + (f" ({t['message']})" if t["message"] and t["outcome"] == "failed"
                                                   else "") for t in tests.get("tests", []) if t["outcome"] != "passed"]
    lines += ["", "## Targets", "", "| target | figure | verdict |", "|---|---|---|"]
    for t in res["targets"]:
        fig = "-" if t["value"] is None else f"{t['value']:.2f}x"
        lines.append(f"| {t['target']} ({t['what']}) | {fig} | {t['verdict']} |")
    bench = res.get("layer_bench", {})
    if bench.get("markdown"):
        lines += ["", "## Layer benchmark (fwd+bwd)", "", bench["markdown"]]
    lines += ["", "## Training runs (fairseq-train --bf16)", "",
              "| run | updates | step ms | target tokens/s | peak memory MB | final loss | error |",
              "|---|---|---|---|---|---|---|"]
    for name, r in res.get("training", {}).items():
        def f(key: str, spec: str) -> str:
            return "-" if r.get(key) is None else format(r[key], spec)
        lines.append(f"| {name} | {r.get('updates', '-')} | {f('step_ms', '.1f')} | {f('target_tokens_per_s', '.0f')} "
                     f"| {f('peak_memory_mb', '.0f')} | {f('final_loss', '.3f')} | {r.get('error') or ''} |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--install", default=None, help="the install step's JSON (written by device_check.sh)")
    p.add_argument("--data", default=None, help="binarized span-corruption data (default: data-bin/pretrain_sample, "
                   "prepared there if missing; toy data in a dry run)")
    p.add_argument("--updates", type=int, default=None, help="updates per training run (200; 6 in a dry run)")
    p.add_argument("--runs", nargs="+", default=None, help=f"training runs, of {[r[0] for r in TRAIN_RUNS]}")
    args = p.parse_args(argv)
    dry, out = args.dry_run, Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="device_check_"))
    log = out / "device_check.log"
    py = sys.executable
    res: Dict[str, Any] = {"dry_run": dry, "environment": environment(), "steps": {}, "targets": []}
    if args.install:
        res["steps"]["install"] = json.loads(Path(args.install).read_text())

    def save() -> None:
        """Write the reports so far: a call stopped at its time limit still brings back the finished steps."""
        res["seconds"] = round(time.perf_counter() - t_start + res["steps"].get("install", {}).get("seconds", 0), 1)
        (out / "device_check.json").write_text(json.dumps(res, indent=1, default=str))
        (out / "device_check.md").write_text(summary_markdown(res))

    # 1. the CUDA-marked tests (on the CPU they all skip: that is what the dry run checks)
    xml = work / "cuda_tests.xml"
    res["steps"]["pytest -m cuda"] = run_step(
        "pytest -m cuda", [py, "-m", "pytest", "-q", "-rA", "-m", "cuda", "-p", "no:cacheprovider",
                           "tests/test_cuda.py", f"--junitxml={xml}"], 300 if dry else 240, log)
    res["cuda_tests"] = junit_results(xml)
    save()

    # 2. the layer benchmark
    bench_json, bench_md = work / "layer_bench.json", out / "layer_bench.md"
    shape = (["--d-model", "64", "--ffn-dim", "128", "--experts", "4", "--tokens", "256", "--iters", "2",
              "--warmup", "1", "--device", "cpu"] if dry else
             ["--d-model", "1024", "--ffn-dim", "4096", "--experts", "32", "128", "--tokens", "16384", "--iters", "10",
              "--warmup", "3", "--device", "cuda", "--einsum-max-gb", "40"])
    res["steps"]["layer benchmark"] = run_step(
        "layer benchmark", [py, "scripts/bench_switch_layer.py", *shape, "--dtype", "bfloat16", "--variants",
                            "index", "grouped", "einsum", "hf", "--json", str(bench_json), "--output", str(bench_md)],
        300 if dry else 200, log)
    bench = json.loads(bench_json.read_text()) if bench_json.exists() else {}
    bench["markdown"] = bench_md.read_text() if bench_md.exists() else None
    res["layer_bench"] = bench
    save()
    E, S = (4, 256) if dry else (32, 16384)
    for variant in ("index", "grouped"):
        res["targets"].append({"target": TARGETS["layer"], "what": f"{variant} dispatch / dense at ({S}, {E})",
                               "value": layer_ratio(bench, E, S, variant),
                               "verdict": verdict(layer_ratio(bench, E, S, variant), LAYER_TARGET, dry)})

    # 3. short training runs
    data = args.data
    if dry and data is None:
        data = str(work / "toy_data")
        make_toy_data(Path(data))
    data = data or str(ROOT / "data-bin" / "pretrain_sample")
    if not (Path(data) / "train.bin").exists():
        res["steps"]["prepare data"] = run_step(
            "prepare data", [py, "-m", "fairseq_switch.lab.cli", "prepare", "pretraining", "--out", data,
                             "--workers", str(min(8, os.cpu_count() or 1))], 180, log)
    updates = args.updates or (4 if dry else 200)
    wanted = args.runs or [r[0] for r in TRAIN_RUNS]
    res["training"] = {}
    for name, arch, extra in TRAIN_RUNS:
        if name not in wanted:
            continue
        run_json = work / f"train_{name}.json"
        cmd = [py, "-m", "fairseq_switch.lab.bench.train_run", "--json", str(run_json),
               "--skip-updates", "2" if dry else "50", "--",
               *train_argv(data, arch, extra, dry, updates, str(work / f"save_{name}"))]
        res["steps"][f"train {name}"] = run_step(f"train {name}", cmd, 300 if dry else 150, log)
        res["training"][name] = json.loads(run_json.read_text()) if run_json.exists() else {"error": "no result"}
        save()
    t5 = res["training"].get("t5_small", {})
    for name in ("switch_small", "switch_small_grouped"):
        sw = res["training"].get(name, {})
        ratio = sw["step_ms"] / t5["step_ms"] if sw.get("step_ms") and t5.get("step_ms") else None
        res["targets"].append({"target": TARGETS["train"], "what": f"{name} / t5_small step time", "value": ratio,
                               "verdict": verdict(ratio, TRAIN_TARGET, dry)})
    routing = [t for t in res["cuda_tests"].get("tests", []) if t["name"].startswith("test_routing_on_cuda")]
    res["targets"].append({"target": TARGETS["routing"], "what": "test_routing_on_cuda_matches_cpu", "value": None,
                           "verdict": ("n/a (dry run)" if dry else "no figure" if not routing else
                                       "meets" if all(t["outcome"] == "passed" for t in routing) else "misses")})

    save()
    print(summary_markdown(res))
    failed = [n for n, s in res["steps"].items() if not s["status"].startswith(("ok", "skipped"))]
    if failed:
        print(f"[device_check] failed steps: {', '.join(failed)} (see {log})", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
