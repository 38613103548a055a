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
