"""Shared package of the generative-model coursework.

| module | holds |
| --- | --- |
| ``paths`` | repository root, data root (``--data-root`` > ``$HW_DATA_ROOT`` > ``data/``), run folders |
| ``data`` | datasets as tensors, the embedded sample, transforms, splits, ``TensorLoader``, ``DataError`` |
| ``training`` | seeding, device, precision, EMA, gradient penalty, LR schedules, ``Run`` (history, checkpoints, resume, NaN guard), progress bars |
| ``metrics`` | judge classifiers, Frechet distance, class accuracy and diversity, Bernoulli NLL |
| ``plotting`` | every figure type (grids, curves, reconstructions, latent grids, embeddings, bars) |
| ``tables`` | Markdown and CSV tables |
| ``cli`` | a dataclass of defaults -> flags, their validation (exit 2 before anything is written), quick mode, ``run_main`` (clean exits) |
| ``deliver`` | notebook execution and export, reports, course zips |
| ``bench`` | speed benchmarks against baselines run side by side |

Course folders import ``common``; ``common`` never imports a course.
"""
import os as _os

# Large CPU tensors on transparent huge pages. A training step allocates fresh activations of
# tens of MB; glibc maps each one anew and the kernel faults it in 4 KB pages (about 10% of a
# PixelCNN step, 60,000+ page faults). With THP_MEM_ALLOC_ENABLE set, PyTorch advises every CPU
# buffer of 2 MB or more as MADV_HUGEPAGE (Linux only; elsewhere it is ignored). PyTorch reads
# the variable once, at its first CPU tensor, so it is set here, on import, before any tensor
# exists; THP_MEM_ALLOC_ENABLE=0 in the environment turns it off.
_os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
