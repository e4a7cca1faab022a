"""`make gpu-bundle`: download the wheels the GPU machine lacks, for Python 3.12 on x86-64 Linux.

    python3 bench/gpu_bundle.py [--dest gpu_bundle] [--pins bench/gpu_bundle.txt] [--max-mib 64]
                                [--footage data/footage]

Runs on a CPU machine with network access (pip and its configured index). Downloads every wheel
pinned in bench/gpu_bundle.txt (binary only, no dependency resolution: the list is the closure),
then checks, and fails loudly (exit 1) unless:
- each pin has exactly one wheel in the folder (stale wheels from older pins are removed);
- every requirement of every wheel (markers evaluated for CPython 3.12 on x86-64 Linux) is either
  another wheel of the bundle, at a version its specifier accepts, or in ASSUMED_PRESENT (what the
  GPU machine's torch / transformers / torchvision installation brings);
- the folder, with the working tree it travels beside (the files git tracks and the untracked ones it
  does not ignore: what the device tool sends), holds less than --max-mib MiB (64 MiB at most).
With `--footage DIR` (`make gpu-bundle` passes data/footage, which `make footage` fetches) its
videos are copied into DEST/footage/ (counted in the size), so that the GPU check's evidence part
pans over real footage on the offline machine (bench/gpu_check.py passes them as `--footage`).
Idempotent: when MANIFEST.json matches the pins and the files, nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

try:
    from packaging.markers import default_environment
    from packaging.requirements import Requirement
    from packaging.version import Version
except ImportError:  # pip always vendors packaging
    from pip._vendor.packaging.markers import default_environment  # type: ignore[no-redef]
    from pip._vendor.packaging.requirements import Requirement  # type: ignore[no-redef]
    from pip._vendor.packaging.version import Version  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parent.parent
PY_VERSION = "3.12"
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "any")

# On the GPU machine already (torch 2.11, transformers, timm, torchvision), so not bundled.
ASSUMED_PRESENT = {
    "torch": "the machine's CUDA build",
    "numpy": "torch, transformers, torchvision",
    "pillow": "torchvision",
    # in the lent image's package list (device/KINDS.md, as read on 2026-11-17): 17.6 MiB of
    # wheels that would otherwise leave the working tree 2 MiB of the 64 MiB the device carries
    **{name: "the lent image (KINDS.md)" for name in (
        "matplotlib", "contourpy", "cycler", "fonttools", "kiwisolver", "pyparsing",
        "python-dateutil", "pygments")},
}

# What the requirement markers see on the GPU machine.
TARGET_ENV = {
    **default_environment(),
    "implementation_name": "cpython",
    "implementation_version": "3.12.0",
    "os_name": "posix",
    "platform_machine": "x86_64",
    "platform_python_implementation": "CPython",
    "platform_system": "Linux",
    "python_full_version": "3.12.0",
    "python_version": PY_VERSION,
    "sys_platform": "linux",
}


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(path: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep or not version.strip():
            sys.exit(f"{path}: `{line}`: pin every wheel as name==version")
        pins[norm(name.strip())] = version.strip()
    return pins


def wheel_name_version(path: Path) -> tuple[str, str]:
    name, version = path.name.split("-")[:2]
    return norm(name), version


def download(pins: dict[str, str], dest: Path) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as fh:
        fh.write("\n".join(f"{n}=={v}" for n, v in pins.items()) + "\n")
        reqs = fh.name
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--python-version", PY_VERSION, "--implementation", "cp", "--abi", "cp312",
           *[a for p in PLATFORMS for a in ("--platform", p)], "--dest", str(dest), "-r", reqs]
    print("+", " ".join(cmd), flush=True)
    res = subprocess.run(cmd)
    Path(reqs).unlink(missing_ok=True)
    if res.returncode != 0:
        sys.exit(f"gpu-bundle: pip download failed (exit {res.returncode}); see above")


def requirements_of(wheel: Path) -> list[Requirement]:
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        text = zf.read(meta).decode("utf-8", "replace")
    out = []
    for line in text.splitlines():
        if line.startswith("Requires-Dist:"):
            req = Requirement(line.split(":", 1)[1].strip())
            if req.marker is None or req.marker.evaluate({**TARGET_ENV, "extra": ""}):
                out.append(req)
    return out


def verify(pins: dict[str, str], dest: Path) -> tuple[dict[str, Path], list[str]]:
    """(wheel per pin, problems); removes wheels of names or versions no longer pinned."""
    wheels: dict[str, Path] = {}
    problems: list[str] = []
    for w in sorted(dest.glob("*.whl")):
        name, version = wheel_name_version(w)
        if pins.get(name) != version:
            print(f"removing stale {w.name}")
            w.unlink()
            continue
        if name in wheels:
            problems.append(f"two wheels for {name}: {wheels[name].name}, {w.name}")
        wheels[name] = w
    for name in pins:
        if name not in wheels:
            problems.append(f"no wheel for {name}=={pins[name]}")
    for name, w in wheels.items():
        for req in requirements_of(w):
            dep = norm(req.name)
            if dep in ASSUMED_PRESENT:
                continue
            if dep not in pins:
                problems.append(f"{name} needs {req}, which is neither bundled nor assumed present")
            elif req.specifier and not req.specifier.contains(Version(pins[dep]), prereleases=True):
                problems.append(f"{name} needs {req}, but the bundle pins {dep}=={pins[dep]}")
    return wheels, problems


def tree_bytes(root: Path = ROOT) -> int:
    """Bytes of the working tree the device tool sends with a carried path: the files git tracks
    and the untracked ones it does not ignore (0 outside a git checkout)."""
    try:
        names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                               cwd=root, capture_output=True, check=True).stdout.split(b"\0")
    except (OSError, subprocess.CalledProcessError):
        return 0
    paths = {root / n.decode() for n in names if n}
    return sum(p.stat().st_size for p in paths if p.is_file() and not p.is_symlink())


def copy_footage(src: Path, dest: Path) -> dict[str, int]:
    """Copy src's videos (.mp4, .mkv, .avi, .webm) into dest, replacing what was there; returns
    {"footage/NAME": bytes}. A folder without videos is an error: the GPU run would pan over
    dead leaves without saying so."""
    kinds = {".mp4", ".mkv", ".avi", ".webm"}
    found = sorted(p for p in src.glob("*") if p.suffix.lower() in kinds and p.is_file()) if src.is_dir() else []
    if not found:
        raise SystemExit(f"gpu-bundle: --footage {src}: no videos there (make footage fetches them)")
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for p in found:
        shutil.copyfile(p, dest / p.name)
    return {f"footage/{p.name}": p.stat().st_size for p in found}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dest", type=Path, default=ROOT / "gpu_bundle")
    ap.add_argument("--pins", type=Path, default=ROOT / "bench" / "gpu_bundle.txt")
    ap.add_argument("--max-mib", type=float, default=64.0)
    ap.add_argument("--footage", type=Path, default=None,
                    help="copy this folder's videos into DEST/footage/ (the GPU evidence preset's camera pans)")
    args = ap.parse_args(argv)

    pins = read_pins(args.pins)
    dest = args.dest
    dest.mkdir(parents=True, exist_ok=True)
    manifest = dest / "MANIFEST.json"
    current = False
    if manifest.is_file():
        try:
            old = json.loads(manifest.read_text())
            current = old.get("pins") == pins and all(
                (dest / f).is_file() and (dest / f).stat().st_size == size
                for f, size in old.get("files", {}).items())
        except (ValueError, OSError):
            current = False
    if current:
        print(f"{dest}: up to date with {args.pins.name} (nothing downloaded)")
    else:
        manifest.unlink(missing_ok=True)
        download(pins, dest)

    wheels, problems = verify(pins, dest)
    videos = copy_footage(args.footage, dest / "footage") if args.footage else {}
    files = {p.name: p.stat().st_size for p in sorted(dest.iterdir())
             if p.is_file() and p.name != "MANIFEST.json"}
    files.update(videos)
    total = sum(files.values())
    for name, size in sorted(files.items(), key=lambda kv: -kv[1]):
        print(f"  {size / 2**20:7.2f} MiB  {name}")
    tree = tree_bytes()
    print(f"  {total / 2**20:7.2f} MiB  total ({len(files)} files) + {tree / 2**20:.2f} MiB of working tree "
          f"(limit {args.max_mib:g} MiB together)")
    if total + tree >= args.max_mib * 2**20:
        problems.append(f"the bundle ({total / 2**20:.1f} MiB) and the working tree ({tree / 2**20:.1f} MiB) "
                        f"hold more than the {args.max_mib:g} MiB the device tool sends: drop a wheel from "
                        "bench/gpu_bundle.txt or commit less")
    if problems:
        print("gpu-bundle: FAILED", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        return 1
    manifest.write_text(json.dumps({
        "pins": pins, "files": files, "total_bytes": total, "python": PY_VERSION,
        "platforms": list(PLATFORMS), "assumed_present": ASSUMED_PRESENT,
        "written": time.strftime("%Y-%m-%d %H:%M:%S"),
    }, indent=1) + "\n")
    print(f"gpu-bundle: {len(wheels)} wheels, {total / 2**20:.1f} MiB in {dest} "
          f"(assumed on the GPU machine: {', '.join(ASSUMED_PRESENT)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
