"""``make judges``: train and cache the MNIST and Fashion-MNIST judge classifiers.

Each judge must reach its target test accuracy (MNIST 99.3%, Fashion-MNIST 92%); the result is
written beside the weights and printed. Usage: ``python -m common.judges [--dataset mnist] [--force]``.
"""
from __future__ import annotations

import argparse

import torch

from .cli import run_main
from .metrics import JUDGE_DATASETS, JUDGE_TARGETS, _judge_path, save_judge, train_judge
from .training import get_device


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=JUDGE_DATASETS, nargs="+", default=list(JUDGE_DATASETS))
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--force", action="store_true", help="retrain even if a cached judge exists")
    args = parser.parse_args(argv)
    device = get_device(args.device)
    failed = []
    for name in args.dataset:
        path = _judge_path(name, False, args.data_root)
        if path.exists() and not args.force:
            info = torch.load(path, map_location="cpu", weights_only=False)["info"]
            print(f"[judge] {name}: cached at {path}")
        else:
            model, info = train_judge(name, device=device, data_root=args.data_root)
            save_judge(model, info, path)
        ok = info["test_accuracy"] >= JUDGE_TARGETS[name]
        failed += [] if ok else [name]
        print(f"judge {name}: test accuracy {info['test_accuracy']:.4f} "
              f"(target {JUDGE_TARGETS[name]:.3f}) {'ok' if ok else 'BELOW TARGET'} -> {path}")
    if failed:
        raise SystemExit(f"judges below target: {', '.join(failed)}")


if __name__ == "__main__":
    run_main(main)
