"""ECE 685D HW5 Problem 2.2: Gaussian-Bernoulli RBMs with M = 16, 64, 256 hidden units, CD-5.

The handout's setting: KMNIST with its default train/test split, Adam (lr 1e-3, weight decay 0),
batch 128, 25 epochs, CD-5, seed 42, data standardized and sigma = 1 (see ``gb_rbm.py``). One
change to the template's recipe: the visible bias starts at the standardized train mean image
instead of zero (``--visible-bias-init zeros`` restores the template); with the zero start, Adam
at lr 1e-3 moves it ~1e-3 per step and M = 16 measured no better than the mean image after an
epoch of MNIST, where the mean start reconstructs recognisable digits.
KMNIST cannot be downloaded on machines without a network: such a run stops with one line that
names the folder searched; ``--dataset mnist`` (or ``fashion``) trains on a dataset that is there.

Per M it writes train and test reconstructions beside their originals (the handout's Fig. 2),
and for all M: MSE per epoch against PCA with the same number of components (scikit-learn), a
table of train and test MSE (standardized units and [0, 1] pixels) and ``metrics.json``.

    python problem2_rbm.py                      # KMNIST, the full configuration
    python problem2_rbm.py --dataset mnist      # where KMNIST cannot be downloaded
    python problem2_rbm.py --quick              # a few hundred images, 2 epochs
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.decomposition import PCA

from common.cli import BaseConfig, parse_config, run_main
from common.data import DataError, TensorLoader, images, load_split
from common.loop import train_epochs
from common.paths import run_dir, shown
from common.plotting import plot_curves, plot_panels, plot_reconstructions, save_grid
from common.summary import Headline, write_summary
from common.tables import write_table
from common.training import Run, adam, get_device, resolved, seed_everything
from gb_rbm import RBM, Standardizer, cd_step, reconstruction_mse

COURSE, PART = "ece685d_hw5", "problem2"
# the headline numbers of its summary.json: keys of metrics.json, with labels and units for a reader
HEADLINE = (Headline("per_M.*.test_mse_std", "M = {}: test MSE (standardized)", fmt=".3f", better="lower"),)
D = 784


@dataclass
class Config(BaseConfig):
    epochs: int = 25
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 42
    precision: str = dataclasses.field(default="fp32", metadata={"choices": ["fp32"],
                                                                  "help": "the RBM trains in fp32 only"})
    dataset: str = dataclasses.field(default="kmnist", metadata={
        "choices": ["kmnist", "mnist", "fashion"], "help": "KMNIST as in the handout; mnist/fashion offline"})
    hidden: typing.List[int] = dataclasses.field(default_factory=lambda: [16, 64, 256],
                                                 metadata={"help": "the values of M to train"})
    k: int = dataclasses.field(default=5, metadata={"help": "Gibbs steps of CD-k"})
    sigma: float = dataclasses.field(default=1.0, metadata={
        "help": "fixed std of every visible unit, in standardized units (the handout's setting: 1)"})
    weight_decay: float = 0.0
    visible_bias_init: str = dataclasses.field(default="mean", metadata={
        "choices": ["zeros", "mean"],
        "help": "mean: start c at the standardized train mean image; zeros: keep the template's c = 0 "
                "(M = 16 then reconstructs the mean image for every input after one epoch)"})
    standardize: str = dataclasses.field(default="global", metadata={
        "choices": ["global", "batch"],
        "help": "global: train-set mean/std for every batch and the test set; batch: each batch's own (template)"})
    n_show: int = dataclasses.field(default=32, metadata={"help": "images per reconstruction figure"})
    name: typing.Optional[str] = dataclasses.field(default=None, metadata={"help": "run name (default: dataset)"})

    QUICK: typing.ClassVar[dict] = {"epochs": 2}


def load_data(cfg: Config):
    """Train and test splits; a missing KMNIST says which dataset to use instead."""
    try:
        return [load_split(cfg.dataset, s, root=cfg.data_root, quick=cfg.quick, seed=cfg.seed)
                for s in ("train", "test")]
    except DataError as exc:
        if cfg.dataset != "kmnist":
            raise
        raise DataError(f"{exc} KMNIST cannot be downloaded without a network: "
                        f"rerun with --dataset mnist (or --dataset fashion).") from None


def pca_reference(x_train: np.ndarray, x_test: np.ndarray, ms, seed: int) -> dict:
    """Train and test MSE (per pixel, the data's units) of PCA with M components, fit on train.

    PCA's components are nested, so one fit with max(M) components serves every M.
    """
    n_max = min(max(ms), *x_train.shape)
    pca = PCA(n_components=n_max, svd_solver="full", random_state=seed).fit(x_train)
    out = {}
    for m in ms:
        comps = pca.components_[:min(m, n_max)]
        row = {}
        for split, x in (("train", x_train), ("test", x_test)):
            centred = x - pca.mean_
            rec = centred @ comps.T @ comps
            row[split] = float(((rec - centred) ** 2).mean())
        out[m] = row
    return out


def train_one(cfg: Config, m: int, x_train, x_test, standardizer, folder, device):
    """Train one RBM with ``m`` hidden units (resuming if asked) and return it with its run."""
    run = Run(folder / f"M{m}", {**cfg.to_dict(), **resolved(device, cfg.precision), "M": m})
    seed_everything(cfg.seed)
    rbm = RBM(D, m, cfg.k, sigma=cfg.sigma).to(device)
    if cfg.visible_bias_init == "mean":
        with torch.no_grad():
            rbm.c.copy_(((x_train - standardizer.mean) / standardizer.std).mean(0))
    optimizer = adam(rbm.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loader = TensorLoader(x_train, batch_size=cfg.batch_size, seed=cfg.seed)
    objects = {"rbm": rbm, "optimizer": optimizer, "loader": loader}
    start = run.resume(objects) if cfg.resume else 0

    def end_of_epoch(ep):
        rbm.eval()
        tr = reconstruction_mse(rbm, x_train, standardizer)
        te = reconstruction_mse(rbm, x_test, standardizer)
        ep.row.update(train_mse_std=tr["mse_std"], test_mse_std=te["mse_std"], train_mse_unit=tr["mse_unit"],
                      test_mse_unit=te["mse_unit"])

    train_epochs(lambda batch, i: cd_step(rbm, optimizer, batch[0], standardizer), loader, cfg.epochs, run=run,
                 objects=objects, start=start, models=(rbm,), on_epoch=[end_of_epoch], log_steps=False,
                 label=f"M={m}")
    rbm.eval()
    return rbm, run


@torch.no_grad()
def to_unit(rbm_or_none, z, standardizer):
    """Standardized rows -> [0, 1] images (N, 1, 28, 28), reconstructing first if an RBM is given."""
    if rbm_or_none is not None:
        z = rbm_or_none.reconstruct(z)
    return (z * standardizer.std + standardizer.mean).clamp(0, 1).view(-1, 1, 28, 28).cpu()


def main(argv=None):
    cfg = parse_config(Config, argv, description=__doc__.splitlines()[0])
    device = get_device(cfg.device)
    seed_everything(cfg.seed)
    train, test = load_data(cfg)
    folder = run_dir(COURSE, PART, cfg.name or cfg.dataset, cfg.out_dir, quick=cfg.quick)
    x_train = images(train, "unit", device=device).flatten(1)
    x_test = images(test, "unit", device=device).flatten(1)
    standardizer = Standardizer.fit(x_train, cfg.standardize)
    title = {"full": train.info.title, "sample": f"{train.info.title} sample",
             "synthetic": f"synthetic bars (stand-in for {train.info.title})"}.get(train.source, train.info.title)
    top = Run(folder, {**cfg.to_dict(), **resolved(device, cfg.precision, train.source), "n_train": len(train),
                       "n_test": len(test), "standardize_mean": standardizer.mean, "standardize_std": standardizer.std})
    print(f"{title}: {len(train)} train / {len(test)} test images -> {shown(folder)}")

    # The same originals in every figure; shown standardized with the train-set statistics.
    g = torch.Generator().manual_seed(cfg.seed)
    show = {split: x[torch.randperm(len(x), generator=g)[:cfg.n_show].to(x.device)]
            for split, x in (("train", x_train), ("test", x_test))}
    show_z = {split: (x - standardizer.mean) / standardizer.std for split, x in show.items()}

    pca = pca_reference(x_train.cpu().numpy(), x_test.cpu().numpy(), cfg.hidden, cfg.seed)
    var = standardizer.std ** 2
    # The trivial reference: every image reconstructed as the train set's mean image.
    mean_image_mse = {split: ((x - x_train.mean(0)) ** 2).mean().item() for split, x in
                      (("train", x_train), ("test", x_test))}
    rows, per_m, panels, test_curves, compare = [], {}, {}, {}, {s: [to_unit(None, show_z[s][:16], standardizer)]
                                                                  for s in show_z}
    for m in cfg.hidden:
        rbm, run = train_one(cfg, m, x_train, x_test, standardizer, folder, device)
        tr = reconstruction_mse(rbm, x_train, standardizer)
        te = reconstruction_mse(rbm, x_test, standardizer)
        hist = run.history
        seconds = hist.series("seconds", "epoch")
        for split in ("train", "test"):
            rec = to_unit(rbm, show_z[split], standardizer)
            plot_reconstructions(to_unit(None, show_z[split], standardizer), rec,
                                 folder / f"recon_{split}_M{m}.png", value_range=(0.0, 1.0),
                                 title=f"GB-RBM, M = {m}, {title}: {split} images (left) and reconstructions (right)")
            compare[split].append(rec[:16])
        panels[f"M = {m}"] = {
            "RBM train": hist.series("train_mse_std", "epoch"),
            "RBM test": hist.series("test_mse_std", "epoch"),
            f"PCA {m} comps train": [pca[m]["train"] / var] * len(seconds),
            f"PCA {m} comps test": [pca[m]["test"] / var] * len(seconds),
        }
        test_curves[f"M = {m}"] = hist.series("test_mse_std", "epoch")
        per_m[str(m)] = {"train_mse_std": tr["mse_std"], "test_mse_std": te["mse_std"],
                         "train_mse_unit": tr["mse_unit"], "test_mse_unit": te["mse_unit"],
                         "pca_train_mse_unit": pca[m]["train"], "pca_test_mse_unit": pca[m]["test"],
                         "pca_test_mse_std": pca[m]["test"] / var,
                         "final_cd_loss": hist.series("cd_loss", "epoch")[-1] if seconds else None,
                         "final_chain_mse_std": hist.series("chain_mse_std", "epoch")[-1] if seconds else None,
                         "seconds_per_epoch": hist.seconds_per_epoch(),
                         "epochs": len(seconds)}
        run.write_metrics(per_m[str(m)])
        rows.append({"M": m, "train MSE (std)": tr["mse_std"], "test MSE (std)": te["mse_std"],
                     "train MSE [0,1]": tr["mse_unit"], "test MSE [0,1]": te["mse_unit"],
                     "PCA-M test MSE (std)": pca[m]["test"] / var, "PCA-M test MSE [0,1]": pca[m]["test"],
                     "s/epoch": per_m[str(m)]["seconds_per_epoch"]})
    rows.append({"M": "mean image", "train MSE (std)": mean_image_mse["train"] / var,
                 "test MSE (std)": mean_image_mse["test"] / var, "train MSE [0,1]": mean_image_mse["train"],
                 "test MSE [0,1]": mean_image_mse["test"]})

    ms = ", ".join(map(str, cfg.hidden))
    for split in ("train", "test"):
        save_grid(torch.cat(compare[split]), folder / f"recon_{split}_all_M.png", nrow=16, value_range=(0.0, 1.0),
                  row_labels=["original"] + [f"M = {m}" for m in cfg.hidden],
                  title=f"{title} {split} images and GB-RBM reconstructions (M = {ms})")
    plot_panels(panels, folder / "mse_vs_pca.png", xlabel="epoch",
                ylabels={p: "MSE per pixel (standardized units)" for p in panels}, logy=list(panels),
                title=f"GB-RBM reconstruction MSE per epoch vs PCA with M components ({title})")
    plot_curves(test_curves, folder / "mse_curves.png", title=f"GB-RBM test reconstruction MSE ({title})",
                xlabel="epoch", ylabel="MSE per pixel (standardized units)", logy=True)
    table = write_table(rows, folder / "mse_table",
                        title=f"GB-RBM reconstruction MSE per pixel, {title}; std = standardized units "
                              f"(x - {standardizer.mean:.4f}) / {standardizer.std:.4f}; [0,1] = pixel scale; "
                              f"last row: every image replaced by the train mean image")
    top.write_metrics({"dataset": cfg.dataset, "data_source": train.source, "epochs": cfg.epochs,
                       "standardize": cfg.standardize, "mean": standardizer.mean, "std": standardizer.std,
                       "mean_image_mse_unit": mean_image_mse, "per_M": per_m})
    write_summary(folder, HEADLINE)
    print(table.read_text())
    print(f"figures, table and metrics in {shown(folder)}")


if __name__ == "__main__":
    run_main(main)
