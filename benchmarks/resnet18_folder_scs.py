"""A pretrained network pruned with SCS on the user's own images, end to end through the CLI (issue 32):

1. a `folder` dataset: Fashion-MNIST (the original IDX files, ``--data-root``) written as 32x32 RGB PNGs in an
   ImageFolder tree (``--per-class`` training and ``--test-per-class`` test images per class), outside the repository;
2. "the user's pretrained model": torchvision's ``resnet18(num_classes=10)`` trained briefly in a plain PyTorch loop
   on that folder, read through archgraph's own ``folder`` source (so its inputs are standardised exactly as a run
   will standardise them), saved as a ``.pth`` state dict;
3. ``archgraph import torchvision:resnet18 --weights R.pth --num-classes 10 --input-shape 3,32,32 -o IMPORTED``;
4. ``archgraph grow RUN.yaml`` with ``seed: IMPORTED/graph.yaml``, ``weights: IMPORTED/weights.safetensors``,
   ``data: {name: folder}`` and ``method: {name: scs}`` (no growth: a MACs budget prunes the pretrained network).

Prints the imported model's own test accuracy (evaluated here, in plain PyTorch, on the folder's test images), the
run's ``initial_test_acc`` (its first evaluation, from the imported weights: the two must agree), its final
``test_acc``, and parameters and MACs before and after.

    nice -n 10 python benchmarks/resnet18_folder_scs.py --work /tmp/r18 --threads 1

Nothing is downloaded; the work folder holds the images, the checkpoint, the imported graph and the run.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from archgraph.compat import import_torchvision  # noqa: E402
from archgraph.data import data_config  # noqa: E402
from archgraph.data.feed import load_data  # noqa: E402

CLASSES = ("tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot")
VAL_FRACTION = 0.1


def write_folder(data_root: Path, out: Path, per_class: int, test_per_class: int) -> Path:
    """Fashion-MNIST's first ``per_class`` training and ``test_per_class`` test images of each class as 32x32 RGB
    PNGs in ``out/{train,test}/<class>/``."""
    from PIL import Image

    from archgraph.data.builtin import torchvision_arrays
    if (out / "done").exists():
        return out
    train, test = torchvision_arrays("fashion_mnist", str(data_root), False, "<benchmark>")   # the .gz files
    for split, (images, labels), n in (("train", train, per_class), ("test", test, test_per_class)):
        images = images[:, 0]
        for c, name in enumerate(CLASSES):
            folder = out / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i, k in enumerate(np.flatnonzero(labels == c)[:n]):
                img = Image.fromarray(images[k]).resize((32, 32), Image.BILINEAR).convert("RGB")
                img.save(folder / f"{i:04d}.png")
    (out / "done").write_text("")
    return out


def folder_data(path: Path, batch_size: int):
    """The folder as a run reads it (training split after the carved validation share; seed 0)."""
    cfg = data_config(name="folder", path=str(path), val_fraction=VAL_FRACTION, batch_size=batch_size, workers=0)
    return load_data(cfg, seed=0, input_shape=(3, 32, 32))


def accuracy(model, ds, split) -> float:
    model.eval()
    right = 0
    order = torch.arange(len(split))
    with torch.no_grad():
        for x, y in ds.batches(split, list(order.split(500))):
            right += int((model(x).argmax(1) == y).sum())
    return right / len(split)


def pretrain(path: Path, epochs: int, out: Path) -> tuple[float, float]:
    """Train torchvision's resnet18 (10 classes) on the folder; save its state dict; its val and test accuracy."""
    tv = import_torchvision()
    torch.manual_seed(0)
    model = tv.models.resnet18(num_classes=10)
    ds = folder_data(path, 64)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=5e-4)
    gen = torch.Generator().manual_seed(0)
    steps = epochs * ((len(ds.train) + 63) // 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    for epoch in range(epochs):
        model.train()
        order = ds.epoch_order(gen)
        for x, y in ds.batches(ds.train, list(order.split(64)), epoch=epoch):
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        print(f"  pretraining epoch {epoch + 1}/{epochs}: last loss {loss.item():.3f}", flush=True)
    torch.save(model.state_dict(), out)
    return accuracy(model, ds, ds.val), accuracy(model, ds, ds.test)


def cli(*argv: str) -> str:
    done = subprocess.run([sys.executable, "-m", "archgraph", *argv], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"archgraph {' '.join(argv)} failed:\n{done.stderr}")
    return done.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, required=True, help="folder for the images, checkpoint, graph and run")
    ap.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--per-class", type=int, default=300)
    ap.add_argument("--test-per-class", type=int, default=100)
    ap.add_argument("--pretrain-epochs", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=6, help="epochs of the SCS run")
    ap.add_argument("--budget", type=float, default=0.5, help="SCS MACs budget, as a share of the imported model's")
    ap.add_argument("--penalty", type=float, default=2.0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    work = args.work.resolve()
    t0 = time.perf_counter()
    images = write_folder(args.data_root, work / "fashion32", args.per_class, args.test_per_class)
    pth = work / "resnet18_fashion32.pth"
    val_acc, test_acc = pretrain(images, args.pretrain_epochs, pth)
    print(f"pretrained: val acc {val_acc:.4f}, test acc {test_acc:.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    imported = work / "imported"
    cli("import", "torchvision:resnet18", "--weights", str(pth), "--num-classes", "10", "--input-shape", "3,32,32",
        "-o", str(imported), "--force")
    run = {
        "name": "resnet18-folder-scs",
        "seed": str(imported / "graph.yaml"), "weights": str(imported / "weights.safetensors"),
        "data": {"name": "folder", "path": str(images), "val_fraction": VAL_FRACTION, "batch_size": 64,
                 "workers": 1},
        "method": {"name": "scs", "max_growths": 0, "penalty": args.penalty, "budget": args.budget,
                   "s_init": 2.0, "beta_final": 200.0, "gate_lr": 0.1, "min_width": 4, "finetune_epochs": 1},
        "schedule": {"optimizer": "adamw", "lr": 5e-4, "weight_decay": 5e-4, "lr_schedule": "cosine",
                     "epochs": args.epochs, "seed": 0, "device": "cpu", "threads": args.threads},
    }
    run_file = work / "run.yaml"
    run_file.write_text(json.dumps(run, indent=1))   # JSON is YAML
    out = work / "run"
    shutil.rmtree(out, ignore_errors=True)
    cli("grow", str(run_file), "--out", str(out), "--quiet")
    summary = json.loads((out / "summary.json").read_text())
    seed_summary = json.loads(cli("summary", str(imported / "graph.yaml"), "--json"))
    print(json.dumps({k: summary.get(k) for k in ("initial_test_acc", "initial_val_acc", "test_acc", "val_acc",
                                                   "params", "nonzero_params", "macs", "prune_events", "wall_s")}))
    print(f"\n| | test acc | params | MACs |\n|---|---|---|---|\n"
          f"| imported resnet18 (plain PyTorch eval) | {test_acc:.4f} | {seed_summary['params']:,} | "
          f"{seed_summary['macs']:,} |\n"
          f"| run's first evaluation (initial_test_acc) | {summary['initial_test_acc']:.4f} | | |\n"
          f"| after SCS ({args.epochs} epochs, budget {args.budget}) | {summary['test_acc']:.4f} | "
          f"{summary['params']:,} | {summary['macs']:,} |")
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
