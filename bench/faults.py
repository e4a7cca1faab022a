"""Fault injection: runs that are killed, poisoned or fed bad files, counted by what survived.

Every scenario runs real `progvid` subprocesses on a tiny synthetic dataset and checks the
promise it tests (nothing lost, nothing corrupted, one line naming the file or field, the right
exit code). The summary counts, per kind of fault, the tries and the tries that kept their
promise; results/faults.json has every try.

    .venv/bin/python bench/faults.py --out bench/faults.md [--kills 6]
"""
# ruff: noqa: E402

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP: progvid/__init__.py

import argparse
import hashlib
import json
import pickle
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
TINY = ["--set", "data.workers=0", "--set", "train.tensorboard=false", "--set", "model.embed_dim=32",
        "--set", "model.depth=2", "--set", "model.num_heads=2", "--set", "model.decoder_dim=32",
        "--set", "model.decoder_depth=1", "--set", "model.decoder_heads=2", "--set", "data.input_size=32",
        "--set", "train.batch_size=4", "--set", "data.num_frames=4", "--set", "data.sampling_rate=2",
        "--set", "budget.ref_frames=4", "--set", "plan.stages=[{frames: 2, share: 0.5}, {frames: 4, share: 0.5}]"]


def progvid(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "progvid", *args], env=ENV, capture_output=True,
                          text=True, timeout=timeout)


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "progvid", *args], env=ENV, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def one_line(r: subprocess.CompletedProcess | tuple[int, str], code: int = 2) -> bool:
    rc, err = (r.returncode, r.stderr) if hasattr(r, "returncode") else r
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("progvid: ")]
    return rc == code and len(lines) == 1 and "Traceback" not in err


def wait_for_records(run: Path, n: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    """Until the run has logged `n` metrics records (it is training), or its process ended."""
    metrics = run / "metrics.jsonl"
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if metrics.is_file() and metrics.read_text().count("\n") >= n:
            return
        time.sleep(0.05)


def weights_digest(run: Path) -> str:
    from progvid.engine.checkpoint import list_checkpoints

    newest = list_checkpoints(run)[-1]
    return hashlib.sha256((newest / "model.safetensors").read_bytes()).hexdigest()


class Bench:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.tries: list[dict] = []

    def record(self, kind: str, what: str, ok: bool, detail: str = "") -> None:
        self.tries.append({"kind": kind, "what": what, "ok": bool(ok), "detail": detail[-400:]})
        print(f"[{'ok' if ok else 'LOST'}] {kind}: {what} {detail[-200:] if not ok else ''}", flush=True)

    def guard(self, kind: str, what: str, fn: Callable[[], tuple[bool, str]]) -> None:
        try:
            ok, detail = fn()
        except Exception as exc:  # noqa: BLE001 - a scenario that crashed counts as lost
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        self.record(kind, what, ok, detail)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="runs/bench_faults")
    p.add_argument("--kills", type=int, default=6, help="random kill -9 tries (training, writes)")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    from progvid.data.synthetic import write_dataset

    data = work / "data"
    write_dataset(data, train=24, val=12, size=32, frames=16, classes=4, seed=0, workers=1)
    b = Bench(work)
    cfg_path = work / "c.yaml"
    cfg_path.write_text(f"base: tiny_tpl\ndata:\n  root: {data}\n")
    ft_path = work / "ft.yaml"
    ft_path.write_text(f"base: tiny_vit\ndata:\n  root: {data}\n  workers: 0\n")
    common = [str(cfg_path), *TINY]
    t0 = time.time()

    # --- the reference: an uninterrupted run
    ref = work / "ref"
    r = progvid("pretrain", *common, "--set", "budget.epochs=6", "--set", "train.ckpt_every=3",
                "--out", str(ref))
    assert r.returncode == 0, r.stderr
    ref_digest = weights_digest(ref)

    # --- kill -9 at random moments (training and checkpoint writes), then --resume auto
    rng = random.Random(0)
    for i in range(args.kills):
        run = work / f"kill{i}"

        def killed(run: Path = run) -> tuple[bool, str]:
            proc = start("pretrain", *common, "--set", "budget.epochs=6", "--set", "train.ckpt_every=1",
                         "--out", str(run))
            time.sleep(rng.uniform(4.0, 12.0))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            r = progvid("pretrain", *common, "--set", "budget.epochs=6", "--set", "train.ckpt_every=1",
                        "--out", str(run), "--resume", "auto")
            leftovers = list((run / "checkpoints").glob(".tmp_*"))
            same = r.returncode == 0 and weights_digest(run) == ref_digest
            return same and not leftovers, r.stderr
        b.guard("kill -9 mid-run", f"try {i}", killed)

    # --- SIGTERM: checkpoint at a step boundary, exit 143, resume equals the reference
    def sigterm() -> tuple[bool, str]:
        run = work / "term"
        proc = start("pretrain", *common, "--set", "budget.epochs=6", "--set", "train.log_every=1",
                     "--out", str(run))
        wait_for_records(run, 3, proc)  # in the middle of training, whatever the machine's speed
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate()
        r = progvid("pretrain", *common, "--set", "budget.epochs=6", "--out", str(run), "--resume", "auto")
        return proc.returncode == 143 and r.returncode == 0 and weights_digest(run) == ref_digest, err
    b.guard("SIGTERM", "save and resume", sigterm)

    # --- the --nproc launcher killed: no orphan keeps training
    def launcher() -> tuple[bool, str]:
        run = work / "launcher"
        proc = subprocess.Popen([sys.executable, "-m", "progvid", "pretrain", *common, "--set",
                                 "budget.epochs=40", "--set", "train.batch_size=2", "--nproc", "2",
                                 "--out", str(run)], env=ENV, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        wait_for_records(run, 3, proc)
        kids = subprocess.run(["ps", "-o", "pid=", "--ppid", str(proc.pid)], capture_output=True,
                              text=True).stdout.split()
        proc.kill()
        proc.wait()
        deadline = time.time() + 90
        while time.time() < deadline and any(Path(f"/proc/{k}").exists() for k in kids):
            time.sleep(0.5)
        alive = [k for k in kids if Path(f"/proc/{k}/stat").exists()
                 and Path(f"/proc/{k}/stat").read_text().split(")")[-1].split()[0] != "Z"]
        return bool(kids) and not alive, f"ranks {kids}, alive {alive}"
    b.guard("launcher killed", "ranks stop", launcher)

    # --- non-finite: lr 1e6, then --resume auto three times: no non-finite state is ever kept
    def nonfinite() -> tuple[bool, str]:
        from progvid.engine.checkpoint import finite_weights, list_checkpoints

        run = work / "nan"
        codes = []
        for attempt in range(4):
            extra = ["--resume", "auto"] if attempt else []
            r = progvid("pretrain", *common, "--set", "optim.base_lr=1e6", "--set", "train.ckpt_every=2",
                        "--set", "train.max_nonfinite=2", "--set", "budget.epochs=6", "--out", str(run), *extra)
            codes.append(r.returncode)
            kept = list_checkpoints(run)
            if not kept or not all(finite_weights(k) for k in kept):
                return False, f"attempt {attempt}: a non-finite checkpoint was kept ({r.stderr})"
        return True, f"exit codes {codes}"
    b.guard("non-finite", "lr 1e6 and 3 resumes", nonfinite)

    # --- concurrent runs into one folder
    def concurrent() -> tuple[bool, str]:
        run = work / "busy"
        first = start("pretrain", *common, "--set", "budget.epochs=40", "--out", str(run))
        time.sleep(8)
        second = progvid("pretrain", *common, "--out", str(run), "--resume", "auto")
        first.kill()
        first.wait()
        return one_line(second) and "in use by pid" in second.stderr, second.stderr
    b.guard("concurrent runs", "second run refused", concurrent)

    # --- disk full during a checkpoint write (a small tmpfs; skipped without permission)
    def disk_full() -> tuple[bool, str]:
        mnt = work / "tiny_disk"
        mnt.mkdir()
        m = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mnt)],
                           capture_output=True, text=True)
        if m.returncode != 0:
            return True, "skipped: cannot mount a small tmpfs here (" + m.stderr.strip() + ")"
        try:
            r = progvid("pretrain", *common, "--set", "budget.epochs=6", "--set", "train.ckpt_every=1",
                        "--out", str(mnt / "run"))
            from progvid.engine.checkpoint import finite_weights, list_checkpoints

            kept = list_checkpoints(mnt / "run")
            intact = all(finite_weights(k) for k in kept)
            return r.returncode in (1, 2) and intact and "No space left" in r.stderr, r.stderr
        finally:
            subprocess.run(["umount", str(mnt)], capture_output=True)
    b.guard("disk full", "checkpoint writes fail cleanly", disk_full)

    # --- bad files under 1 and 2 processes
    bad_list = work / "bad.csv"
    lines = (data / "train.csv").read_text().splitlines()
    bad_list.write_text("\n".join([f"{data}/{lines[0].split()[0]} 0", f"{work}/missing.mp4 1"] * 6) + "\n")
    corrupt = work / "corrupt.mp4"
    corrupt.write_bytes(b"\x00" * 4096)
    for nproc in (1, 2):
        for workers in (0, 1):
            def bad_files(nproc: int = nproc, workers: int = workers) -> tuple[bool, str]:
                sets = [*common, "--set", f"data.train={bad_list}", "--set", f"data.workers={workers}",
                        "--set", "train.batch_size=2", "--out", str(work / f"bad{nproc}{workers}")]
                r = progvid("pretrain", *sets, *(["--nproc", "2"] if nproc == 2 else []))
                return one_line(r) and "missing.mp4: file not found" in r.stderr, r.stderr
            b.guard("bad files", f"{nproc} process(es), {workers} worker(s)", bad_files)

    # --- malicious and damaged checkpoints into every command that reads one
    good = ref
    ft_run = work / "ft"
    r = progvid("finetune", str(ft_path), "--set", f"model.init={good}", "--set", "epochs=0.5",
                "--set", "model.embed_dim=32", "--set", "model.depth=2", "--set", "model.num_heads=2",
                "--set", "data.num_frames=4", "--set", "data.sampling_rate=2", "--out", str(ft_run))
    assert r.returncode == 0, r.stderr
    video = str(data / "videos" / "val_00000.mp4")

    class Boom:
        def __reduce__(self):  # noqa: D105 - what a malicious pickle does
            return (os.system, (f"touch {work}/PWNED",))

    def damaged_copies(src: Path) -> dict[str, Path]:
        from safetensors.torch import load_file, save_file

        from progvid.engine.checkpoint import list_checkpoints

        newest = list_checkpoints(src)[-1]
        out = {}

        def copy(name: str) -> Path:
            dst = work / "damaged" / src.name / name
            shutil.copytree(newest, dst)
            return dst

        d = copy("truncated")
        (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:500])
        out["truncated weights"] = d
        d = copy("pickle_state")
        (d / "state.pt").write_bytes(pickle.dumps(Boom()))
        out["malicious state.pt"] = d
        d = copy("wrong_shape")
        w = load_file(str(d / "model.safetensors"))
        k = next(iter(w))
        w[k] = torch.zeros(3, 3)
        save_file(w, str(d / "model.safetensors"))
        out["wrong-shape tensor"] = d
        d = copy("nan")
        w = load_file(str(d / "model.safetensors"))
        w[k] = torch.full_like(w[k], float("nan"))
        save_file(w, str(d / "model.safetensors"))
        out["NaN weights"] = d
        d = copy("int64")
        w = load_file(str(d / "model.safetensors"))
        w[k] = w[k].long()
        save_file(w, str(d / "model.safetensors"))
        out["int64 weights"] = d
        d = copy("huge_meta")
        meta = json.loads((d / "meta.json").read_text())
        meta["model"].update(embed_dim=8192, depth=200, num_heads=64)
        (d / "meta.json").write_text(json.dumps(meta))
        out["meta.json asking for a huge model"] = d
        d = copy("bad_meta")
        (d / "meta.json").write_text("{not json")
        out["invalid meta.json"] = d
        return out

    hf_dir = work / "hf_malicious"
    hf_dir.mkdir()
    (hf_dir / "config.json").write_text(json.dumps({"model_type": "videomae", "architectures": ["VideoMAEForPreTraining"]}))
    (hf_dir / "pytorch_model.bin").write_bytes(pickle.dumps(Boom()))
    pth = work / "malicious.pth"
    pth.write_bytes(pickle.dumps(Boom()))
    commands: dict[str, Callable[[Path], list[str]]] = {
        "predict": lambda c: ["predict", str(c), video],
        "eval": lambda c: ["eval", str(c)],
        "export": lambda c: ["export", str(c), str(work / "exported")],
        "viz recon": lambda c: ["viz", "recon", str(c), video, "--out", str(work / "r.png")],
        "finetune init": lambda c: ["finetune", str(ft_path), "--set", f"model.init={c}", "--set",
                                    "epochs=0.1", "--out", str(work / f"ft_{c.name}")],
    }
    sources = {**damaged_copies(good), **{f"classifier {k}": v for k, v in damaged_copies(ft_run).items()},
               "malicious transformers folder": hf_dir, "malicious .pth": pth}
    for src_name, src in sources.items():
        for cmd_name, make in commands.items():
            def bad_checkpoint(src: Path = src, make: Callable = make) -> tuple[bool, str]:
                r = progvid(*make(src))
                pwned = (work / "PWNED").exists()
                if src.name == "pickle_state":  # the training state: only `--resume` reads it
                    return not pwned and (r.returncode == 0 or one_line(r)), r.stderr
                return one_line(r) and not pwned, r.stderr
            b.guard("bad checkpoint", f"{src_name} -> {cmd_name}", bad_checkpoint)
    # --- a malicious training state where it is read: --resume
    def resume_pickle() -> tuple[bool, str]:
        from progvid.engine.checkpoint import list_checkpoints

        run = work / "resume_pickle"
        shutil.copytree(ref, run)
        (list_checkpoints(run)[-1] / "state.pt").write_bytes(pickle.dumps(Boom()))
        r = progvid("pretrain", *common, "--set", "budget.epochs=6", "--out", str(run),
                    "--resume", str(list_checkpoints(run)[-1]))
        return one_line(r) and not (work / "PWNED").exists(), r.stderr
    b.guard("bad checkpoint", "malicious state.pt -> pretrain --resume", resume_pickle)
    b.record("bad checkpoint", "no malicious pickle ran code", not (work / "PWNED").exists())

    summary = summarize(b.tries, time.time() - t0, args)
    (work / "faults.json").write_text(json.dumps(b.tries, indent=1))
    print(summary)
    if args.out:
        Path(args.out).write_text(summary)
    return 0 if all(t["ok"] for t in b.tries) else 1


def summarize(tries: list[dict], seconds: float, args: argparse.Namespace) -> str:
    kinds: dict[str, list[dict]] = {}
    for t in tries:
        kinds.setdefault(t["kind"], []).append(t)
    lines = ["# Fault injection", "",
             f"- date: {time.strftime('%Y-%m-%d')}; command: `.venv/bin/python bench/faults.py "
             f"--kills {args.kills}`; {seconds / 60:.0f} min; load average {os.getloadavg()[0]:.1f}",
             "- every try runs real `progvid` processes on a tiny synthetic dataset", "",
             "| fault | tries | survived with nothing lost | failed |", "|---|---|---|---|"]
    for kind, ts in kinds.items():
        failed = [t["what"] for t in ts if not t["ok"]]
        lines.append(f"| {kind} | {len(ts)} | {len(ts) - len(failed)} | {', '.join(failed) or '-'} |")
    lines += ["", f"Total: {sum(t['ok'] for t in tries)} of {len(tries)} tries kept their promise."]
    skipped = [t for t in tries if t["detail"].startswith("skipped")]
    for t in skipped:
        lines.append(f"- {t['kind']}: {t['detail']}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
