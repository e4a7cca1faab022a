"""The parts of bench/gpu_check.sh that are Python: one subcommand per part.

Each part writes into its folder `--out` a `key.txt` (one line: the figure for the summary
table), `result.json` (everything it measured) and whatever logs it makes, and exits 0 (pass),
1 (fail) or 3 (skipped: key.txt says why). `GPU_CHECK_PART_BUDGET` (seconds, set by the shell
script from its time limit) is the part's own deadline: it skips or cuts what would not fit and
still writes its results.

    python bench/gpu_check.py reqs                      # progvid's requirements for the bundle install
    python bench/gpu_check.py env     --out DIR [--rehearsal]
    python bench/gpu_check.py tests   --out DIR [--rehearsal]
    python bench/gpu_check.py tiny    --out DIR [--rehearsal]
    python bench/gpu_check.py step    --out DIR [--rehearsal]
    python bench/gpu_check.py loader  --out DIR [--rehearsal] [--step-json FILE]
    python bench/gpu_check.py evidence --out DIR [--rehearsal]

`--rehearsal` is the CPU rehearsal: shrunken sizes, no CUDA, compile only through the `eager`
backend. See bench/gpu_check.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
CONFIGS = ROOT / "configs"
PASS, FAIL, SKIP = 0, 1, 3
T0 = time.perf_counter()

# tests that touch the CUDA path: CUDA-marked, precision, DDP / distributed, compile, resume,
# activation checkpointing, the engine's own unit tests (never this file's test: no recursion)
TEST_SELECTION = ("(cuda or precision or distributed or ddp or nccl or compile or resume or "
                  "checkpointing or trainer_unit) and not gpu_check")


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def budget_left() -> float:
    """Seconds this part may still use (GPU_CHECK_PART_BUDGET from the shell, less a margin)."""
    total = float(os.environ.get("GPU_CHECK_PART_BUDGET", "1e9"))
    return total - 8.0 - (time.perf_counter() - T0)


def work_dir(name: str) -> Path:
    """Scratch space outside $OUT (videos, run folders: nothing that should travel back)."""
    base = Path(os.environ.get("GPU_CHECK_WORK", "/tmp/progvid_gpu_check"))
    d = base / name
    d.mkdir(parents=True, exist_ok=True)
    return d


def finish(out: Path, code: int, key: str, result: dict[str, Any] | None = None) -> int:
    out.mkdir(parents=True, exist_ok=True)
    (out / "key.txt").write_text(" ".join(key.split()) + "\n")
    if result is not None:
        (out / "result.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(f"[{out.name}] {['PASS', 'FAIL', '', 'SKIP'][code]}: {key}", flush=True)
    return code


_CHILDREN: list[subprocess.Popen] = []  # process groups this part started


def start(cmd: list[str], **kw: Any) -> subprocess.Popen:
    """Popen in a new session (its own process group), remembered so that a SIGTERM to this
    part (the shell's time limit) stops it too: torchrun and its workers, DataLoader workers."""
    print("+", " ".join(cmd), flush=True)
    proc = subprocess.Popen(cmd, start_new_session=True, **kw)
    _CHILDREN.append(proc)
    return proc


def _on_sigterm(signum: int, frame: Any) -> None:
    for proc in _CHILDREN:
        if proc.poll() is None:
            kill_group(proc, grace=4)
    sys.exit(128 + signum)


def run(cmd: list[str], log: Path | None = None, timeout: float | None = None,
        env: dict[str, str] | None = None, cwd: Path | None = None) -> int:
    """Run a command, its output appended to `log` (or inherited); -9 when it ran out of time."""
    fh = open(log, "a") if log is not None else None  # noqa: SIM115
    try:
        proc = start(cmd, stdout=fh or None, stderr=subprocess.STDOUT if fh else None,
                     env=env, cwd=cwd)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            return -9
    finally:
        if fh is not None:
            fh.close()


def kill_group(proc: subprocess.Popen, grace: float = 10) -> None:
    """Stop a child started with start_new_session=True and everything in its group (torchrun
    passes the SIGTERM on to its workers, which run in sessions of their own)."""
    kill_groups([proc], grace)


def progvid_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "progvid", *args]


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


# --------------------------------------------------------------------------------------------
# reqs: what `pip install --no-index --find-links gpu_bundle` is asked for
# --------------------------------------------------------------------------------------------
def requirements() -> list[str]:
    """progvid's runtime requirements less torch and numpy (the machine's) and tensorboard (not
    bundled: see bench/gpu_bundle.txt), plus the test runner."""
    text = (ROOT / "pyproject.toml").read_text()
    try:
        import tomllib

        meta = tomllib.loads(text)["project"]
        listed = meta["dependencies"] + meta["optional-dependencies"]["dev"]
    except ImportError:  # Python 3.10: the two lists, read plainly
        import re

        listed = [x for key in ("dependencies", "dev")
                  for x in re.findall(r'"([^"]+)"', re.search(
                      rf"^{key} = \[(.*?)\]", text, re.M | re.S)[1])]
    out = []
    for req in listed:
        name = req.split(">")[0].split("<")[0].split("=")[0].split("[")[0].strip().lower()
        if name in ("torch", "numpy", "tensorboard", "ruff", "progvid"):
            continue
        out.append(req)
    return out


def cmd_reqs(args: argparse.Namespace) -> int:
    print("\n".join(requirements()))
    return 0


# --------------------------------------------------------------------------------------------
# env: versions, GPU, what imports, /dev/shm, flash attention on progvid's attention
# --------------------------------------------------------------------------------------------
DEPS = [("av", "av"), ("pydantic", "pydantic"), ("yaml", "pyyaml"), ("safetensors", "safetensors"),
        ("tqdm", "tqdm"), ("matplotlib", "matplotlib"), ("numpy", "numpy"),
        ("transformers", "transformers"), ("pytest", "pytest"), ("tensorboard", "tensorboard")]
OPTIONAL = {"tensorboard"}  # progvid logs without it


def cmd_env(args: argparse.Namespace) -> int:
    import importlib
    import importlib.metadata as md
    import platform

    info: dict[str, Any] = {"python": platform.python_version(), "executable": sys.executable,
                            "platform": platform.platform(), "cpus": os.cpu_count(),
                            "cpus_usable": len(os.sched_getaffinity(0))}
    missing, versions = [], {}
    for mod, dist in DEPS:
        try:
            importlib.import_module(mod)
            try:
                versions[dist] = md.version(dist)
            except md.PackageNotFoundError:
                versions[dist] = "?"
        except Exception as exc:  # noqa: BLE001 - any import failure is a finding
            versions[dist] = f"MISSING ({type(exc).__name__}: {exc})"[:200]
            missing.append(dist)
    info["packages"] = versions
    import progvid

    info["progvid_file"] = progvid.__file__
    try:
        info["progvid_installed"] = md.version("progvid")
    except md.PackageNotFoundError:
        info["progvid_installed"] = None
    try:
        shm = shutil.disk_usage("/dev/shm")
        info["dev_shm_gib"] = shm.total / 2**30
    except OSError:
        info["dev_shm_gib"] = None
    import torch

    info["torch"] = torch.__version__
    info["torch_cuda_build"] = torch.version.cuda
    cuda = torch.cuda.is_available()
    info["cuda_available"] = cuda
    flash = "n/a"
    if cuda:
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, gpu_count=torch.cuda.device_count(),
                    gpu_memory_gib=p.total_memory / 2**30, capability=f"{p.major}.{p.minor}",
                    bf16_supported=torch.cuda.is_bf16_supported(),
                    cudnn=torch.backends.cudnn.version())
        try:
            info["nccl"] = ".".join(map(str, torch.cuda.nccl.version()))
        except Exception as exc:  # noqa: BLE001
            info["nccl"] = f"error: {exc}"
        flash = flash_check()
        info["flash_sdpa"] = flash
    smi = shutil.which("nvidia-smi")
    if smi:
        r = subprocess.run([smi], capture_output=True, text=True, timeout=30)
        (args.out / "nvidia-smi.txt").write_text(r.stdout + r.stderr)
    required_missing = [d for d in missing if d not in OPTIONAL]
    info["missing"] = missing
    problems = []
    if required_missing:
        problems.append(f"missing {', '.join(required_missing)}")
    if not cuda and not args.rehearsal:
        problems.append("no CUDA device")
    if cuda and not flash.startswith("ok"):
        problems.append(f"flash SDPA: {flash}")
    here = Path(progvid.__file__).resolve().is_relative_to(ROOT / "src")
    where = (("from this tree" if here else f"from {Path(progvid.__file__).parent}")
             + (f", installed dist {info['progvid_installed']}" if info["progvid_installed"]
                else ", not installed"))
    if not here:
        problems.append(f"progvid imported from {progvid.__file__}, not this tree")
    gpu = (f"{info['gpu']} x{info['gpu_count']}, CUDA {info['torch_cuda_build']}, "
           f"nccl {info.get('nccl')}, flash SDPA {flash}" if cuda else "no CUDA (CPU rehearsal)")
    shm = f"{info['dev_shm_gib']:.0f} GiB" if info["dev_shm_gib"] is not None else "?"
    key = (f"{gpu} | torch {torch.__version__}, py {info['python']}, {info['cpus_usable']} CPUs, "
           f"/dev/shm {shm} | progvid {where}"
           + (f" | not importable: {', '.join(missing)}" if missing else " | all deps import"))
    if problems:
        key = "; ".join(problems) + " | " + key
    return finish(args.out, FAIL if problems else PASS, key, info)


def flash_check() -> str:
    """progvid's attention, bf16, forward + backward, with only the flash SDPA kernel allowed."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from progvid.models.vit import Attention

    try:
        attn = Attention(768, 12).cuda()
        x = torch.randn(4, 160, 768, device="cuda", requires_grad=True)
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION), torch.autocast("cuda", dtype=torch.bfloat16):
            y = attn(x)
        y.float().sum().backward()
        torch.cuda.synchronize()
        return "ok (ViT-B attention, bf16, fwd+bwd)"
    except Exception as exc:  # noqa: BLE001
        return f"FAILED ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})"


# --------------------------------------------------------------------------------------------
# tests: the CUDA-marked tests and those that touch precision, DDP, compile, resume
# --------------------------------------------------------------------------------------------
def pytest_summary(text: str) -> dict[str, int]:
    """Counts from pytest's last summary line ("3 passed, 1 skipped", "14/371 tests collected")."""
    import re

    m = re.findall(r"(\d+)(?:/(\d+))? tests? collected", text)
    if m:
        return {"selected": int(m[-1][0]), "collected": int(m[-1][1] or m[-1][0])}

    tail = [ln for ln in text.splitlines() if re.search(r"\d+ (passed|failed|skipped|error|"
                                                        r"deselected|selected)", ln)]
    counts: dict[str, int] = {}
    if tail:
        for n, what in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected|selected|"
                                  r"xfailed|xpassed|tests? collected)", tail[-1]):
            counts[what.rstrip("s") if what.startswith("error") else what] = int(n)
    return counts


def cmd_tests(args: argparse.Namespace) -> int:
    out: Path = args.out
    log = out / "pytest.log"
    base = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "tests",
            "-k", TEST_SELECTION]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])}
    result: dict[str, Any] = {"selection": TEST_SELECTION}
    timeout = max(budget_left(), 10)
    if args.rehearsal:
        # the whole selection takes a minute on 2 cores: list it, run only the CUDA-marked ones
        listing = out / "selection.txt"
        rc = run(base + ["--collect-only"], listing, timeout=timeout, env=env, cwd=ROOT)
        text = listing.read_text()
        listed = pytest_summary(text)
        cuda_ids = [ln.strip() for ln in text.splitlines() if "::" in ln and "cuda" in ln.lower()]
        rc2 = run(base[:-3] + cuda_ids + ["-rs", f"--junitxml={out / 'junit.xml'}"], log,
                  timeout=max(budget_left(), 5), env=env, cwd=ROOT) if cuda_ids else 0
        ran = pytest_summary(log.read_text()) if cuda_ids else {}
        result.update(collected=listed, cuda_tests=cuda_ids, ran=ran, rc=[rc, rc2])
        n = listed.get("selected", 0)
        ok = rc == 0 and rc2 == 0 and n > 0 and not ran.get("failed")
        key = (f"rehearsal: the selection holds {n} of {listed.get('collected')} tests (listed in "
               f"tests/selection.txt; all run on the GPU); the {len(cuda_ids)} CUDA-marked: "
               f"{fmt_counts(ran)}")
        return finish(out, PASS if ok else FAIL, key, result)
    rc = run(base + ["-rs", f"--junitxml={out / 'junit.xml'}"], log, timeout=timeout, env=env,
             cwd=ROOT)
    counts = pytest_summary(log.read_text())
    result.update(counts=counts, rc=rc)
    if rc == -9:
        return finish(out, FAIL, f"timed out after {timeout:.0f} s; so far {fmt_counts(counts)}",
                      result)
    ok = rc == 0 and counts.get("passed", 0) > 0
    skipped = [ln for ln in log.read_text().splitlines() if ln.startswith("SKIPPED")]
    key = fmt_counts(counts) + (f" | skipped: {'; '.join(s[8:90] for s in skipped)}"
                                if skipped else "")
    return finish(out, PASS if ok else FAIL, key, result)


def fmt_counts(c: dict[str, int]) -> str:
    keys = ("passed", "failed", "error", "skipped", "deselected")
    return ", ".join(f"{c[k]} {k}" for k in keys if c.get(k)) or "no result line"


# --------------------------------------------------------------------------------------------
# tiny: pre-training, fine-tuning, eval on cuda, bf16/fp16 x compile off/on, under torchrun
# --------------------------------------------------------------------------------------------
def tiny_worker(args: argparse.Namespace) -> int:
    """Runs under `torchrun --nproc_per_node 1`: joins the process group itself (nccl on CUDA,
    gloo on CPU), then runs the spec's progvid commands in this one process. progvid skips the
    process group for a world of one; here the group stays up (all-reduces and gathers go
    through nccl) and the trainer wraps the model in DDP as it does with more processes."""
    import signal

    import torch
    import torch.distributed as dist

    import progvid.engine.distributed as pdist
    import progvid.tasks.base as pruns
    from progvid.cli import main as cli

    spec = json.loads(Path(args.spec).read_text())
    cuda = spec["device"] == "cuda"
    # stopped (the part ran out of time, or torchrun died: the death signal below): finish the
    # command under way (a run saves and stops at its next step) and start no other
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    pdist._die_with_parent()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if "WORLD_SIZE" in os.environ and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    backend = dist.get_backend() if dist.is_initialized() else None
    pdist.DistInfo.enabled = property(lambda self: dist.is_initialized())  # type: ignore[assignment]
    pruns.shutdown = lambda: None  # keep the group between the commands
    results = []
    for name, argv in spec["commands"]:
        if stop["now"]:
            print(f"[tiny-worker] {name}: not started (stopped)", flush=True)
            break
        t = time.perf_counter()
        try:
            rc = cli(["--debug", *argv])
        except SystemExit as exc:
            rc = int(exc.code or 0)
        except BaseException:  # noqa: BLE001 - recorded; the next command still runs
            traceback.print_exc()
            rc = 1
        if rc == 143:  # the run stopped on a SIGTERM (the trainer's handler had it)
            stop["now"] = True
        results.append({"name": name, "rc": rc, "seconds": time.perf_counter() - t})
        print(f"[tiny-worker] {name}: rc {rc} in {results[-1]['seconds']:.1f} s", flush=True)
        Path(spec["result"]).write_text(json.dumps({"backend": backend, "runs": results}))
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


def tiny_commands(combo: str, device: str, data: Path, runs: Path, precision: str, compile_: bool,
                  resume_at: int | None, rehearsal: bool) -> list[tuple[str, list[str]]]:
    common = ["--set", f"train.device={device}", "--set", f"train.precision={precision}",
              "--set", f"train.compile={str(compile_).lower()}", "--set", f"data.root={data}",
              "--set", "train.log_every=1"]
    if rehearsal:  # smaller model, no worker processes, no TensorBoard: seconds on 2 cores
        common += ["--set", "model.embed_dim=32", "--set", "model.depth=2", "--set",
                   "model.num_heads=2", "--set", "data.workers=0", "--set",
                   "train.tensorboard=false"]
    pre = ["pretrain", str(CONFIGS / "pretrain/tiny_tpl.yaml"), *common,
           "--set", f"budget.epochs={1 if rehearsal else 2}"]
    if rehearsal:
        pre += ["--set", "model.decoder_dim=32", "--set", "model.decoder_depth=1",
                "--set", "model.decoder_heads=2"]
    run_pre, run_ft = runs / f"{combo}-pretrain", runs / f"{combo}-finetune"
    cmds = [("pretrain", pre + ["--out", str(run_pre)])]
    if resume_at is not None:
        split = str(runs / f"{combo}-split")
        cmds += [("pretrain-stopped", pre + ["--out", split, "--set", f"train.max_steps={resume_at}"]),
                 ("pretrain-resumed", pre + ["--out", split, "--resume", "auto"]),
                 # the same run without taking the next batch early (on CUDA: without the
                 # side-stream copy): must train on the same batches to the same weights
                 ("pretrain-noprefetch", pre + ["--out", str(runs / f"{combo}-noprefetch"),
                                                "--set", "train.prefetch=false"])]
    cmds += [("finetune+eval", ["finetune", str(CONFIGS / "finetune/tiny_vit.yaml"), *common,
                                "--set", f"model.init={run_pre}", "--set", "epochs=1",
                                "--out", str(run_ft)]),
             ("eval 2x3", ["eval", str(run_ft), "--views", "2x3"])]
    return cmds


def resume_point(cfg_overrides: list[str], data_size: int) -> tuple[int, int, int]:
    """(step to stop at, its stage, that stage's steps): the middle of the longest stage."""
    from progvid.config import load_config
    from progvid.progressive.plan import build_plan

    cfg = load_config(CONFIGS / "pretrain/tiny_tpl.yaml", cfg_overrides)
    planned = build_plan(cfg, data_size, 1)
    start, best = 0, (0, 0, 0)
    for i, p in enumerate(planned):
        if p.steps >= 2 and p.steps >= best[2]:
            best = (start + p.steps // 2, i, p.steps)
        start += p.steps
    return best


def final_weights(run_dir: Path) -> dict[str, Any]:
    from progvid.engine.checkpoint import list_checkpoints, load_weights

    cks = list_checkpoints(run_dir)
    return load_weights(cks[-1]) if cks else {}


def compare_runs(full: Path, split: Path) -> dict[str, Any]:
    """Two runs that should train alike (uninterrupted vs stopped and resumed; prefetch on vs
    off): their logged losses step by step and their final weights."""

    a = {r["step"]: r["loss"] for r in read_metrics(full)}
    b = {r["step"]: r["loss"] for r in read_metrics(split)}
    out: dict[str, Any] = {"steps_full": len(a), "steps_split": len(b)}
    if not a or sorted(a) != sorted(b):
        out["error"] = f"logged steps differ: {sorted(a)[:30]} vs {sorted(b)[:30]}"
        return out
    diffs = [abs(a[s] - b[s]) / max(abs(a[s]), 1e-12) for s in a]
    out["max_rel_loss_diff"] = max(diffs)
    wa, wb = final_weights(full), final_weights(split)
    if set(wa) != set(wb) or not wa:
        out["error"] = "final checkpoints hold different tensors"
        return out
    out["max_abs_weight_diff"] = max(float((wa[k].float() - wb[k].float()).abs().max())
                                     for k in wa)
    return out


def cmd_tiny(args: argparse.Namespace) -> int:
    out: Path = args.out
    rehearsal = args.rehearsal
    # GPU_CHECK_TINY_DEVICE=cpu: the full matrix (compile included) on CPU, to debug this script
    device = "cpu" if rehearsal else os.environ.get("GPU_CHECK_TINY_DEVICE", "cuda")
    if device == "cuda" and not cuda_available():
        return finish(out, FAIL, "no CUDA device")
    work = work_dir("tiny")
    shutil.rmtree(work / "runs", ignore_errors=True)
    data = work / "data"
    n_train = 16 if rehearsal else 32
    if not (data / "train.csv").is_file():
        rc = run(progvid_cmd("synth", str(data), "--train", str(n_train), "--val",
                             str(n_train // 2), "--size", "32", "--frames", "16"),
                 out / "synth.log", timeout=max(budget_left(), 5))
        if rc != 0:
            return finish(out, FAIL, f"progvid synth failed (rc {rc}); see tiny/synth.log")
    combos = [("bf16", False), ("fp16", False), ("bf16", True), ("fp16", True)]
    stop, stage, stage_steps = resume_point(
        [f"budget.epochs={1 if rehearsal else 2}", f"data.root={data}"], n_train)
    result: dict[str, Any] = {"device": device, "resume_at": stop, "resume_stage": stage,
                              "resume_stage_steps": stage_steps, "combos": {}}
    procs: dict[str, tuple[subprocess.Popen, Any, Path]] = {}
    skipped: dict[str, str] = {}
    for precision, comp in combos:
        name = f"{precision}-{'compile' if comp else 'eager'}"
        if rehearsal and comp:
            skipped[name] = "rehearsal: inductor compiles for minutes on 2 CPU cores"
            continue
        if rehearsal and precision == "fp16":
            skipped[name] = "rehearsal: one combo (fp16 on CPU: tests/test_engine.py)"
            continue
        spec = {"device": device, "result": str(out / f"{name}.json"),
                "commands": tiny_commands(name, device, data, work / "runs", precision, comp,
                                          None if comp else stop, rehearsal)}
        spec_path = work / f"{name}.spec.json"
        spec_path.write_text(json.dumps(spec))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
               "1", str(Path(__file__)), "tiny-worker", "--spec", str(spec_path)]
        log = open(out / f"{name}.log", "w")  # noqa: SIM115 - closed below
        env = {**os.environ, "CUBLAS_WORKSPACE_CONFIG": ":4096:8"}  # deterministic cuBLAS
        proc = start(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        procs[name] = (proc, log, Path(spec["result"]))
        if rehearsal:  # 2 cores: one at a time; on the GPU machine all four at once
            wait_all({name: procs[name]}, result)
    wait_all(procs, result)

    problems: list[str] = []
    figures: list[str] = []
    resumes: list[str] = []
    bad: set[str] = set()
    for precision, comp in combos:
        name = f"{precision}-{'compile' if comp else 'eager'}"
        if name in skipped:
            result["combos"][name] = {"skipped": skipped[name]}
            continue
        r = result["combos"].setdefault(name, {})
        try:
            r.update(json.loads((out / f"{name}.json").read_text()))
        except (OSError, ValueError):
            r.setdefault("error", "no result (the worker died before its first command ended)")
        n_problems = len(problems)
        failed = [x["name"] for x in r.get("runs", []) if x["rc"] != 0]
        if r.get("timed_out"):
            problems.append(f"{name} timed out")
        if failed or "error" in r:
            problems.append(f"{name}: {', '.join(failed) or r.get('error')} failed")
        runs = work / "runs"
        # training records (validation records carry val_* instead)
        train = {run: [m for m in read_metrics(runs / f"{name}-{run}") if "loss" in m]
                 for run in ("pretrain", "finetune")}
        losses = [m["loss"] for recs in train.values() for m in recs]
        r["final_losses"] = {run: (recs or [{}])[-1].get("loss") for run, recs in train.items()}
        r["all_finite"] = bool(losses) and all(math.isfinite(x) for x in losses)
        if losses and not r["all_finite"]:
            problems.append(f"{name}: non-finite loss")
        ev = runs / f"{name}-finetune" / "eval.json"
        if ev.is_file():
            e = json.loads(ev.read_text())
            r["eval"] = {k: e.get(k) for k in ("top1", "top5", "views", "num_videos")}
        if not comp:
            for what, other in (("resume", "split"), ("prefetch", "noprefetch")):
                rc = compare_runs(runs / f"{name}-pretrain", runs / f"{name}-{other}")
                r[what] = rc
                d = rc.get("max_rel_loss_diff")
                if "error" in rc or d is None or d > 1e-3:
                    problems.append(f"{name}: {what} differs ({rc.get('error') or f'{d:.2e}'})")
                label = "resume" if what == "resume" else "prefetch on/off"
                resumes.append(f"{name} {label} {'exact' if d == 0 else f'rel {d:.1e}'}"
                               if d is not None else f"{name} {label} n/a")
        fl = r["final_losses"]
        figures.append(f"{name} final loss pre {fmt(fl['pretrain'])} ft {fmt(fl['finetune'])}")
        if len(problems) > n_problems:
            bad.add(name)
    backends = {r.get("backend") for r in result["combos"].values() if isinstance(r, dict)} - {None}
    ran = [n for n, r in result["combos"].items() if "skipped" not in r]
    key = (f"{len(ran) - len(bad)}/{len(ran)} combos ok "
           f"on {device} (backend {'/'.join(sorted(backends)) or '?'} + DDP, resume at step "
           f"{stop} mid-stage {stage + 1}) | " + "; ".join(figures + resumes))
    if skipped:
        key += " | skipped: " + "; ".join(f"{k} ({v})" for k, v in skipped.items())
    if problems:
        key = "; ".join(problems) + " | " + key
    return finish(out, FAIL if problems else PASS, key, result)


def fmt(x: Any) -> str:
    return f"{x:.4f}" if isinstance(x, float) else "n/a"


KILL_GRACE = 35  # torchrun gives its workers 30 s after a SIGTERM before it kills them


def wait_all(procs: dict[str, tuple[subprocess.Popen, Any, Path]], result: dict[str, Any]) -> None:
    """Wait for every combo until the part's budget, less the time to stop the rest and still
    write the summary; then stop all the late ones at once (one grace period, not one each)."""
    deadline = time.monotonic() + max(budget_left() - KILL_GRACE - 15, 1)
    for name, (proc, _, _) in procs.items():
        if proc.returncode is None:
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                result["combos"].setdefault(name, {})["timed_out"] = True
    late = [proc for proc, _, _ in procs.values() if proc.poll() is None]
    kill_groups(late, KILL_GRACE)
    for _, log, _ in procs.values():
        log.close()


def kill_groups(procs: list[subprocess.Popen], grace: float) -> None:
    """`kill_group` for several children together: SIGTERM to all, one shared grace period,
    then SIGKILL to what is left."""
    import signal

    for sig in (signal.SIGTERM, signal.SIGKILL):
        for proc in procs:
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
        end = time.monotonic() + (grace if sig == signal.SIGTERM else 5)
        for proc in procs:
            try:
                proc.wait(timeout=max(end - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                pass
        procs = [p for p in procs if p.poll() is None]
        if not procs:
            return


# --------------------------------------------------------------------------------------------
# step: ViT-B 16x224 bf16 pre-training step, ours vs transformers (bench/pretrain_throughput.py)
# --------------------------------------------------------------------------------------------
def cmd_step(args: argparse.Namespace) -> int:
    out: Path = args.out
    rehearsal = args.rehearsal
    if not rehearsal and not cuda_available():
        return finish(out, FAIL, "no CUDA device")
    js = out / "step.json"
    js.unlink(missing_ok=True)
    if rehearsal:
        sizes = ["--device", "cpu", "--size", "tiny", "--img-size", "32", "--batch", "2",
                 "--rounds", "1", "--steps", "2", "--threads", "1", "--matmul-n", "128",
                 "--variants", "eager,ckpt,compile", "--compile-backend", "eager",
                 "--model-overrides", "embed_dim=32,depth=2,num_heads=2,decoder_embed_dim=32,"
                 "decoder_num_heads=2,decoder_depth=1"]
    else:
        sizes = ["--device", "cuda", "--size", "base", "--img-size", "224", "--batch", "32",
                 "--rounds", "3", "--steps", "10", "--variants", "eager,ckpt,compile,compile+ckpt"]
    budget = budget_left()
    frames = "2,4,8,16"  # TPL's default stages: their demand on the loader, and the plan's time floor
    cmd = [sys.executable, str(BENCH / "pretrain_throughput.py"), "--matrix", *sizes,
           "--stage-frames", frames, "--budget-s", f"{max(budget - 20, 10):.0f}",
           "--json", str(js)]
    rc = run(cmd, out / "pretrain_throughput.log", timeout=max(budget, 5))
    if not js.is_file():
        return finish(out, FAIL, f"pretrain_throughput.py wrote nothing (rc {rc}); see its log")
    res = json.loads(js.read_text())
    v = res.get("variants", {})
    parts, problems = [], []
    if rc == -9:
        problems.append("cut at the time limit")
    elif rc != 0:
        problems.append(f"pretrain_throughput.py rc {rc}")
    a = res["args"]
    head = f"{a['size']} {a['frames']}x{a['img_size']} b{a['batch']} bf16"
    for name, r in v.items():
        if "ours" in r and "hf" in r:
            tgt = "met" if r["ratio_ours"] >= 1.3 else "missed"
            mem = r.get("mem_ours")
            parts.append(f"{name}: ours {r['ours']:.1f} clips/s, MFU {100 * r['mfu_ours']:.0f}%, "
                         f"{r['ratio_ours']:.2f}x hf (1.3x {tgt})"
                         + (f", peak {mem['peak'] / 2**30:.1f} GiB" if mem else ""))
        elif "ours" in r:
            parts.append(f"{name}: ours {r['ours']:.1f} clips/s (hf failed)")
        else:
            parts.append(f"{name}: {r.get('skipped') or 'failed'}")
        if r.get("error") or r.get("errors"):
            problems.append(f"{name} errors")
    if "eager" not in v or "ours" not in v.get("eager", {}):
        problems.append("no eager figure")
    stages = res.get("stages", {})
    st = ", ".join(f"{f}f {r['clips_per_s']:.0f}" for f, r in stages.items()
                   if isinstance(r, dict) and "clips_per_s" in r)
    mm = res["matmul_bf16"]
    mm_txt = f"{mm / 1e12:.0f} TFLOP/s" if mm > 1e12 else f"{mm / 1e9:.1f} GFLOP/s"
    fl = res.get("tpl_floor")
    floor_txt = (f" | TPL fixed-batch model time {fl['floor']:.3f}x the baseline's at "
                 f"{fl['flops_ratio']:.3f}x its FLOPs (target +0.05: "
                 f"{'met' if fl['floor'] <= fl['flops_ratio'] + 0.05 else 'missed'})" if fl else "")
    key = (f"{head}, bf16 matmul {mm_txt} | " + " | ".join(parts)
           + f" | stage demand clips/s: {st or 'n/a'}" + floor_txt)
    if problems:
        key = "; ".join(problems) + " | " + key
    hard = "no eager figure" in problems or any(p.startswith("pretrain_throughput") for p in problems)
    return finish(out, FAIL if hard else PASS, key, {"step_json": str(js), "problems": problems})


# --------------------------------------------------------------------------------------------
# loader: clips/s at 4, 8, 14 workers x 2, 4, 8, 16 frames on 320p h264, against the demand
# --------------------------------------------------------------------------------------------
def loader_settings(rehearsal: bool) -> dict[str, Any]:
    if rehearsal:
        return dict(videos=4, width=128, height=72, seconds=3.0, fps=30, gop=30, preset="veryfast",
                    crf=23, workers=[1, 2], frames=[2, 8], stride=4, size=32, batch=4,
                    measure_s=0.3, tpl_config="pretrain/tiny_tpl", tpl_batch=4,
                    tpl_repeat=4, tpl_epochs=1)
    return dict(videos=16, width=568, height=320, seconds=6.0, fps=30, gop=60, preset="medium",
                crf=23, workers=[4, 8, 14], frames=[2, 4, 8, 16], stride=4, size=224, batch=8,
                measure_s=2.0, tpl_config="pretrain/tpl_base_k400", tpl_batch=32,
                tpl_repeat=8, tpl_epochs=8)


def measure_loader(videos: list[Path], frames: int, workers: int, s: dict[str, Any],
                   device: str) -> dict[str, float]:
    """Steady-state clips/s of progvid's training loader as a pre-training stage builds it
    (`train_loader`: uint8 clips, several batches per hand-over, the plan's automatic clips per
    decode for this length, pinned memory and a non-blocking copy to the GPU on CUDA): one batch
    per worker of warm-up, then at least `measure_s` seconds."""
    import torch

    from progvid.config import DataConfig
    from progvid.data.datasets import Sample
    from progvid.data.loader import train_loader

    samples = [Sample(videos[i % len(videos)]) for i in range(20_000)]
    d = DataConfig(input_size=s["size"], sampling_rate=s["stride"], crop="multiscale", flip=True,
                   workers=workers)
    per_decode = max(1, round(max(s["frames"]) / frames))  # plan.clips_per_decode: auto
    while s["batch"] % per_decode:
        per_decode -= 1
    loader = train_loader(d, samples, frames=frames, batch_size=s["batch"], seed=0, rank=0,
                          world=1, device=device, clips_per_decode=per_decode)
    loader.sampler.set_epoch(0)
    it = iter(loader)
    t_start = time.perf_counter()
    for _ in range(max(workers, 1)):
        next(it)["video"].to(device, non_blocking=True)
    t0 = time.perf_counter()
    clips = batches = 0
    while True:
        v = next(it)["video"].to(device, non_blocking=True)
        clips += v.shape[0]
        batches += 1
        if time.perf_counter() - t0 >= s["measure_s"] and batches >= workers:
            break
    if device == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    del it, loader
    return {"clips_per_s": clips / dt, "clips": clips, "seconds": dt,
            "warmup_s": t0 - t_start}


def tpl_run(videos: list[Path], workers: int, s: dict[str, Any], device: str, out: Path,
            timeout: float) -> dict[str, Any]:
    """A real (short) TPL pre-training with the default plan 2/4/8/16 on these videos:
    `progvid pretrain` as a user runs it; data_wait_fraction per stage from metrics.jsonl."""
    import yaml

    from progvid.config import load_config, to_plain

    work = work_dir("loader")
    lst = work / "pretrain_list.txt"
    lst.write_text("".join(f"{v.name}\n" for v in videos for _ in range(s["tpl_repeat"])))
    raw = to_plain(load_config(s["tpl_config"]))  # a recipe, its `base:` resolved
    raw["data"].update(root=str(videos[0].parent), train=str(lst), val=None, classes=None,
                       workers=workers, sampling_rate=s["stride"], sampler="stride")
    if device == "cpu":  # rehearsal: smaller model
        raw["model"].update(embed_dim=32, depth=2, num_heads=2, decoder_dim=32, decoder_heads=2,
                            decoder_depth=1)
    raw["train"].update(device=device, precision="bf16", batch_size=s["tpl_batch"], log_every=2,
                        ckpt_every=10**6, keep_last=1, tensorboard=False)
    raw["budget"] = {"epochs": s["tpl_epochs"]}
    cfg = work / "tpl_run.yaml"
    cfg.write_text(yaml.safe_dump(raw, sort_keys=False))
    (out / "tpl_run.yaml").write_text(cfg.read_text())
    run_dir = work / "tpl_run"
    shutil.rmtree(run_dir, ignore_errors=True)
    rc = run(progvid_cmd("pretrain", str(cfg), "--out", str(run_dir)), out / "tpl_run.log",
             timeout=timeout)
    recs = read_metrics(run_dir)
    stages: dict[int, dict[str, Any]] = {}
    for st in sorted({r["stage"] for r in recs}):
        rows = [r for r in recs if r["stage"] == st]
        steady = rows[1:] or rows  # the first window holds the stage's worker start-up
        stages[st] = {"frames": rows[0]["frames"], "windows": len(rows),
                      "data_wait_median": statistics.median(r["data_wait_fraction"] for r in steady),
                      "data_wait_max": max(r["data_wait_fraction"] for r in steady),
                      "data_wait_first_window": rows[0]["data_wait_fraction"],
                      "clips_per_s_median": statistics.median(r["clips_per_s"] for r in steady)}
    if run_dir.exists():
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)  # a ViT-B + AdamW: 1.3 GB
    return {"rc": rc, "workers": workers, "stages": stages}


def cmd_loader(args: argparse.Namespace) -> int:
    out: Path = args.out
    rehearsal = args.rehearsal
    device = "cpu" if rehearsal else "cuda"
    if not rehearsal and not cuda_available():
        return finish(out, FAIL, "no CUDA device")
    sys.path.insert(0, str(BENCH))
    import loader_throughput as lt

    s = loader_settings(rehearsal)
    jobs = min(len(os.sched_getaffinity(0)), s["videos"])
    videos = lt.make_videos(work_dir("videos") / f"{s['width']}x{s['height']}", s["videos"],
                            width=s["width"], height=s["height"], seconds=s["seconds"],
                            fps=s["fps"], gop=s["gop"], preset=s["preset"], crf=s["crf"],
                            jobs=jobs)
    result: dict[str, Any] = {"settings": s, "device": device, "supply": {}, "demand": {},
                              "estimate": {}}
    # the step's demand per stage (clips/s), from the step part
    demand: dict[int, float] = {}
    if args.step_json and Path(args.step_json).is_file():
        st = json.loads(Path(args.step_json).read_text()).get("stages", {})
        demand = {int(f): r["clips_per_s"] for f, r in st.items()
                  if isinstance(r, dict) and "clips_per_s" in r}
    result["demand"] = demand
    tpl_reserve = 25.0 if rehearsal else 60.0
    problems = []
    for f in sorted(s["frames"], reverse=True):  # the longest clips first: the costliest decode
        for w in s["workers"]:
            if budget_left() < tpl_reserve + (6 if rehearsal else 10):
                result["supply"][f"{f}/{w}"] = {"skipped": "time budget"}
                continue
            try:
                r = measure_loader(videos, f, w, s, device)
            except Exception as exc:  # noqa: BLE001 - e.g. a worker killed for lack of /dev/shm
                r = {"error": f"{type(exc).__name__}: {exc}"[:500]}
                problems.append(f"{f}f/{w}w: {r['error'][:120]}")
            result["supply"][f"{f}/{w}"] = r
            print(f"  loader {f} frames, {w} workers: {r}", flush=True)
            (out / "result.json").write_text(json.dumps(result, indent=1, default=str))
    # estimated data-wait of a run at each stage: 1 - supply / demand when the loader is slower
    for f in s["frames"]:
        for w in s["workers"]:
            r = result["supply"].get(f"{f}/{w}", {})
            if "clips_per_s" in r and f in demand:
                result["estimate"][f"{f}/{w}"] = max(0.0, 1.0 - r["clips_per_s"] / demand[f])
    rec = None
    unmeasured = sorted({f for f in s["frames"] for w in s["workers"]
                         if "skipped" in result["supply"].get(f"{f}/{w}", {})})
    if demand:
        for w in s["workers"]:
            est = [result["estimate"].get(f"{f}/{w}") for f in s["frames"]]
            if all(e is not None and e < 0.05 for e in est):
                rec = w
                break
    result["recommended_workers"] = rec
    run_w = rec or max(s["workers"])
    tpl = None
    if budget_left() > 15:
        tpl = tpl_run(videos, run_w, s, device, out, timeout=budget_left())
        result["tpl_run"] = tpl
        if tpl["rc"] != 0:
            problems.append(f"TPL run rc {tpl['rc']}")
    else:
        problems.append("no time left for the TPL run")
    sup = "; ".join(
        f"{f}f " + "/".join(f"{result['supply'].get(f'{f}/{w}', {}).get('clips_per_s', float('nan')):.0f}"
                             for w in s["workers"])
        + (f" vs {demand[f]:.0f}" if f in demand else "")
        for f in s["frames"])
    key = f"clips/s at {'/'.join(map(str, s['workers']))} workers vs step demand: {sup}"
    key += (f" | smallest worker count with est. data-wait <5% at every stage: {rec}" if rec
            else f" | not measured for lack of time at {'/'.join(map(str, unmeasured))} frames: "
                 "no worker count can be recommended" if demand and unmeasured
            else " | no worker count keeps est. data-wait <5% at every stage" if demand
            else " | no step demand (step part)")
    if tpl and tpl["stages"]:
        waits = ", ".join(f"{v['frames']}f {100 * v['data_wait_median']:.0f}%"
                          for v in tpl["stages"].values())
        worst = max(v["data_wait_median"] for v in tpl["stages"].values())
        key += (f" | real TPL run, {run_w} workers: data-wait {waits} (target <5%: "
                f"{'met' if worst < 0.05 else 'missed'})")
    if problems:
        key = "; ".join(problems) + " | " + key
    hard = not any("clips_per_s" in r for r in result["supply"].values())
    return finish(out, FAIL if hard or (tpl is not None and tpl["rc"] != 0) else PASS, key, result)


# --------------------------------------------------------------------------------------------
# evidence: bench/tpl_claims.py --preset gpu (issue 12 item 5: TPL vs VideoMAE at GPU scale,
# with the random-init and scratch references of item 1's protocol), for the time left
# --------------------------------------------------------------------------------------------
def cmd_evidence(args: argparse.Namespace) -> int:
    out: Path = args.out
    script = BENCH / "tpl_claims.py"
    if not script.is_file():
        return finish(out, SKIP, "bench/tpl_claims.py absent")
    if args.rehearsal:
        return finish(out, SKIP, "rehearsal: the GPU preset is for a GPU (tpl_claims.py --preset "
                                 "rehearsal runs its logic on CPU in the tests)")
    budget = budget_left()
    if budget < 60:
        return finish(out, SKIP, f"only {budget:.0f} s left of the check's time")
    footage = sorted((ROOT / "gpu_bundle" / "footage").glob("*.mp4"))  # make gpu-bundle copies them
    work = work_dir("evidence")
    # runs stop at --minutes; stopping them (30 s at most) and the report fit in the rest
    cmd = [sys.executable, str(script), "--preset", "gpu", "--work", str(work), "--report-dir", str(out),
           "--minutes", f"{max((budget - 45) / 60, 0.25):.2f}", *(f"--footage={v}" for v in footage)]
    rc = run(cmd, out / "evidence.log", timeout=budget)
    report = out / "tpl_claims.md"
    text = report.read_text() if report.is_file() else ""
    over = f"pans over {len(footage)} footage videos" if footage else "dead-leaves pans"
    rows = [ln for ln in text.splitlines() if ln.startswith("| ") and " | 15 | " in ln]  # the N_e 15 rows
    key = " ; ".join(" ".join(r.split()) for r in rows)[:400] or "no finished run at N_e 15"
    if "deadline" in text:
        key = "stopped at the deadline | " + key
    if rc == -9:
        return finish(out, FAIL, f"timed out after {budget:.0f} s | {over} | {key}")
    return finish(out, PASS if rc == 0 else FAIL, f"rc {rc} | {over} | {key}")


# --------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("reqs").set_defaults(func=cmd_reqs)
    for name, func in (("env", cmd_env), ("tests", cmd_tests), ("tiny", cmd_tiny),
                       ("step", cmd_step), ("loader", cmd_loader), ("evidence", cmd_evidence)):
        p = sub.add_parser(name)
        p.add_argument("--out", type=Path, required=True)
        p.add_argument("--rehearsal", action="store_true")
        if name == "loader":
            p.add_argument("--step-json")
        p.set_defaults(func=func)
    p = sub.add_parser("tiny-worker")
    p.add_argument("--spec", required=True)
    p.set_defaults(func=tiny_worker)
    args = ap.parse_args(argv)
    if hasattr(args, "out"):  # a part (not the tiny worker, which torchrun stops itself)
        import signal

        signal.signal(signal.SIGTERM, _on_sigterm)
        args.out.mkdir(parents=True, exist_ok=True)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
