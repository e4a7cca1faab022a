"""`progvid export`: a checkpoint as a transformers folder.

A pre-training checkpoint becomes a `VideoMAEForPreTraining` folder, a fine-tuned ViT classifier
a `VideoMAEForVideoClassification` folder with `id2label` / `label2id` from the run's class
names. Both get a `preprocessor_config.json` (the run's input size, mean and std) that
`AutoImageProcessor.from_pretrained` loads, and a `progvid.json` with the run's data and eval
settings, so progvid reads the folder back with the run's own preprocessing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import ProgvidError
from ..interop.hf import export_hf
from ..loading import EXPORT, SIDECAR, load_model

FORMATS = ("hf",)


@dataclass(frozen=True)
class Exported:
    folder: Path
    architecture: str  # the transformers class that loads it


def export_checkpoint(checkpoint: str | Path, out_dir: str | Path, fmt: str = "hf") -> Exported:
    """Write a pre-training or fine-tuned ViT checkpoint (any source `progvid.loading` reads)
    in another format (`hf`: a transformers folder)."""
    if fmt not in FORMATS:
        raise ProgvidError(f"--format: unknown export format {fmt!r} (supported: "
                           f"{', '.join(FORMATS)})")
    target = Path(out_dir)
    if target.exists() and not target.is_dir():
        raise ProgvidError(f"{target}: exists and is not a folder (OUT_DIR is the folder to write)")
    model, ckpt = load_model(checkpoint, EXPORT)
    d = ckpt.data
    out = export_hf(model, out_dir, class_names=ckpt.class_names, input_size=d.input_size,
                    mean=d.mean, std=d.std)
    sidecar = {"exported_from": str(ckpt.path), "task": ckpt.task,
               "data": d.model_dump(mode="json")}
    if ckpt.kind == "vit":
        sidecar["eval"] = ckpt.eval.model_dump(mode="json")
    (out / SIDECAR).write_text(json.dumps(sidecar, indent=2))
    arch = "VideoMAEForVideoClassification" if ckpt.kind == "vit" else "VideoMAEForPreTraining"
    return Exported(out, arch)
