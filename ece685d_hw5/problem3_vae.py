"""ECE 685D HW5 Problem 3: a VAE and a class-conditional VAE on Fashion-MNIST, compared by t-SNE.

Both use the template's fixed network (784-400-20, see ``cvae.py``), Adam lr 1e-3, batch 128.
A seeded, stratified 20% of the train split is held out for validation; each model keeps the
weights of its best validation epoch (``vae_best.pt``, ``cvae_best.pt`` in the run folder), and
everything below is computed after reloading them:

- ``loss_curves.png``: train and validation negative ELBO per epoch, both models;
- ``tsne_mu.png``: t-SNE (scikit-learn) of the test-set means mu, VAE and C-VAE side by side;
- ``recon_vae.png``, ``recon_cvae.png``: test images beside their reconstructions;
- ``cvae_samples.png``: C-VAE samples, a row per class (each column shares one z);
  ``vae_samples.png``: VAE samples from the prior;
- ``test_elbo.md``/``.csv`` and ``metrics.json``: test ELBO (nats per image) of both models.

    python problem3_vae.py            # the full configuration (50 epochs per model)
    python problem3_vae.py --quick    # a few hundred images, 2 epochs
"""
from __future__ import annotations

import copy
import dataclasses
import math
import time
import typing
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.manifold import TSNE

from common.cli import BaseConfig, parse_config, run_main
from common.data import TensorLoader, images, load_split, one_hot, stratified_subset, train_val_split
from common.loop import train_epochs
from common.metrics import Evaluator
from common.paths import run_dir, shown
from common.plotting import plot_embeddings, plot_panels, plot_reconstructions, save_grid
from common.summary import Headline, write_summary
from common.tables import write_table
from common.training import Run, adam, get_device, resolved, seed_everything
from cvae import CVAE, VAE, load_best, loss_function, save_best

COURSE, PART = "ece685d_hw5", "problem3"
# the headline numbers of its summary.json: keys of metrics.json, with labels and units for a reader
HEADLINE = (Headline("vae.test_elbo", "VAE: test ELBO", unit="nats", fmt=".2f", better="higher"),
            Headline("cvae.test_elbo", "C-VAE: test ELBO", unit="nats", fmt=".2f", better="higher"),
            Headline("cvae_samples_judge.class_accuracy", "C-VAE samples: class accuracy", unit="%", better="higher"))
MODELS = {"vae": ("VAE", VAE), "cvae": ("C-VAE", CVAE)}


@dataclass
class Config(BaseConfig):
    epochs: int = 50
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    precision: str = dataclasses.field(default="fp32", metadata={
        "choices": ["fp32"], "help": "the MLPs train in fp32 only (bf16 gains little here)"})
    val_fraction: float = dataclasses.field(default=0.2, metadata={"help": "share of train held out"})
    tsne_points: int = dataclasses.field(default=10000, metadata={"help": "test images in the t-SNE"})
    judge: bool = dataclasses.field(default=True, metadata={
        "help": "score C-VAE samples with the Fashion-MNIST judge classifier (class accuracy)"})
    name: typing.Optional[str] = dataclasses.field(default=None, metadata={"help": "run name (default: default; a quick run adds _quick)"})

    QUICK: typing.ClassVar[dict] = {"epochs": 2, "tsne_points": 200}


@torch.no_grad()
def evaluate(model: VAE, x: torch.Tensor, c: torch.Tensor, seed: int = 1234, batch_size: int = 2000) -> dict:
    """Negative ELBO and its terms, nats per image, with the same noise eps at every call.

    eps is drawn on the CPU from a generator seeded with ``seed`` and moved to the data's device,
    so a model gets the same loss on any device (the global RNG is left alone); z = mu + sigma eps
    as in ``VAE.reparameterize``."""
    model.eval()
    totals = np.zeros(3)
    g = torch.Generator().manual_seed(seed)
    for i in range(0, len(x), batch_size):
        xb, cb = x[i:i + batch_size], c[i:i + batch_size]
        mu, logvar = model.encode(xb, cb)
        eps = torch.randn(mu.shape, generator=g).to(device=mu.device, dtype=mu.dtype)
        recon = model.decode(mu + torch.exp(0.5 * logvar) * eps, cb)
        totals += [t.item() for t in loss_function(recon, xb, mu, logvar)]
    loss, bce, kld = totals / len(x)
    return {"loss": loss, "bce": bce, "kld": kld}


def train_model(kind: str, cfg: Config, data: dict, folder, device):
    """Train one model, keeping the best-validation weights; returns it reloaded from them."""
    title, cls = MODELS[kind]
    run = Run(folder / kind, {**cfg.to_dict(), **resolved(device, cfg.precision), "model": kind})
    seed_everything(cfg.seed)
    model = cls().to(device)
    optimizer = adam(model.parameters(), lr=cfg.lr)
    loader = TensorLoader(data["x_train"], data["c_train"], batch_size=cfg.batch_size, seed=cfg.seed)
    objects = {"model": model, "optimizer": optimizer, "loader": loader}
    best_path = folder / f"{kind}_best.pt"
    start = run.resume(objects) if cfg.resume else 0
    # A copy, not cls(): a fresh model's init would draw from the RNG state just restored.
    best = load_best(best_path, copy.deepcopy(model))["val_loss"] if start and best_path.exists() else math.inf

    def step(batch, i):
        xb, cb = batch
        recon, mu, logvar = model(xb, cb)
        loss, _, _ = loss_function(recon, xb, mu, logvar)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return {"loss": loss.item()}

    def end_of_epoch(ep):
        """Validation loss; the best epoch's weights are kept (``<kind>_best.pt``)."""
        nonlocal best
        val = evaluate(model, data["x_val"], data["c_val"])
        if val["loss"] < best:
            best = val["loss"]
            save_best(best_path, model, ep.number, best)
        ep.row = {"epoch": ep.number, "train_loss": ep.sums["loss"] / len(data["x_train"]), "val_loss": val["loss"],
                  "val_bce": val["bce"], "val_kld": val["kld"], "seconds": ep.row["seconds"]}

    train_epochs(step, loader, cfg.epochs, run=run, objects=objects, start=start, models=(model,),
                 on_epoch=[end_of_epoch], log_steps=False, label=title)
    info = load_best(best_path, model)
    model.eval()
    print(f"[{title}] reloaded the best validation weights (epoch {info['epoch']}) from {shown(best_path)}")
    return model, run, info


def tsne(points: np.ndarray, seed: int) -> np.ndarray:
    perplexity = min(30.0, (len(points) - 1) / 3)
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(points)


def neighbour_agreement(points: np.ndarray, labels: np.ndarray, k: int = 10) -> float:
    """Share of the points whose k nearest neighbours in the map (itself left out) are mostly of its
    own class: near 1 for separate class clusters, near 0.1 for ten classes mixed together."""
    from sklearn.neighbors import NearestNeighbors

    idx = NearestNeighbors(n_neighbors=k + 1).fit(points).kneighbors(points, return_distance=False)[:, 1:]
    majority = np.array([np.bincount(v, minlength=labels.max() + 1).argmax() for v in labels[idx]])
    return float((majority == labels).mean())


def main(argv=None):
    cfg = parse_config(Config, argv, description=__doc__.splitlines()[0])
    device = get_device(cfg.device)
    seed_everything(cfg.seed)
    train, test = (load_split("fashion", s, root=cfg.data_root, quick=cfg.quick, seed=cfg.seed)
                   for s in ("train", "test"))
    classes = list(train.info.classes)
    folder = run_dir(COURSE, PART, cfg.name or "default", cfg.out_dir, quick=cfg.quick)
    train_idx, val_idx = train_val_split(train.y, cfg.val_fraction, seed=cfg.seed)
    x_all, c_all = images(train, "unit", device=device).flatten(1), one_hot(train.y).to(device)
    data = {"x_train": x_all[train_idx.to(device)], "c_train": c_all[train_idx.to(device)],
            "x_val": x_all[val_idx.to(device)], "c_val": c_all[val_idx.to(device)]}
    x_test, y_test = images(test, "unit", device=device).flatten(1), test.y
    c_test = one_hot(y_test).to(device)
    top = Run(folder, {**cfg.to_dict(), **resolved(device, cfg.precision, train.source), "n_train": len(train_idx),
                       "n_val": len(val_idx), "n_test": len(test)})
    print(f"Fashion-MNIST ({train.source}): {len(train_idx)} train / {len(val_idx)} validation / "
          f"{len(test)} test images -> {shown(folder)}")

    g = torch.Generator().manual_seed(cfg.seed)
    show = torch.randperm(len(x_test), generator=g)[:32].to(device)
    z_prior = torch.randn(64, 20, generator=g).to(device)  # fixed noise for the VAE samples
    z_rows = torch.randn(10, 20, generator=g).to(device)  # one z per column of the C-VAE grid
    n_tsne = min(cfg.tsne_points, len(x_test))
    tsne_idx = (stratified_subset(y_test, n_tsne, seed=cfg.seed)[:n_tsne] if n_tsne < len(x_test)
                else torch.arange(len(x_test)))

    curves, embeddings, rows, metrics = {}, {}, [], {}
    for kind, (title, _) in MODELS.items():
        model, run, info = train_model(kind, cfg, data, folder, device)
        hist = run.history
        curves[title] = {"train": hist.series("train_loss", "epoch"), "validation": hist.series("val_loss", "epoch")}
        ev = evaluate(model, x_test, c_test)
        seconds = hist.series("seconds", "epoch")
        metrics[kind] = {"test_elbo": -ev["loss"], "test_recon_log_lik": -ev["bce"], "test_kl": ev["kld"],
                         "best_epoch": info["epoch"], "best_val_loss": info["val_loss"],
                         "epochs": len(seconds), "seconds_per_epoch": hist.seconds_per_epoch()}
        rows.append({"model": title, "test ELBO (nats/image)": -ev["loss"],
                     "E_q log p(x|z)": -ev["bce"], "KL(q || p)": ev["kld"],
                     "best epoch": info["epoch"], "best val -ELBO": info["val_loss"],
                     "s/epoch": metrics[kind]["seconds_per_epoch"]})
        with torch.no_grad():
            mu = model.encode(x_test[tsne_idx.to(device)], c_test[tsne_idx.to(device)])[0]
            recon = model.decode(model.encode(x_test[show], c_test[show])[0], c_test[show])
        plot_reconstructions(x_test[show].cpu(), recon.cpu(), folder / f"recon_{kind}.png", value_range=(0.0, 1.0),
                             title=f"{title}: Fashion-MNIST test images (left) and reconstructions from mu (right)")
        print(f"[{title}] t-SNE of {len(tsne_idx)} test means ...")
        t0 = time.perf_counter()
        embeddings[title] = tsne(mu.cpu().numpy(), cfg.seed)
        metrics[kind]["tsne_seconds"] = time.perf_counter() - t0
        metrics[kind]["tsne_neighbour_agreement"] = neighbour_agreement(embeddings[title], y_test[tsne_idx].numpy())
        run.write_metrics(metrics[kind])
        with torch.no_grad():
            if kind == "vae":
                samples = model.decode(z_prior)
                save_grid(samples.cpu(), folder / "vae_samples.png", nrow=8, value_range=(0.0, 1.0),
                          title="VAE samples: decoder means for z ~ N(0, I)")
            else:
                labels = torch.arange(10).repeat_interleave(10)
                samples = model.decode(z_rows.repeat(10, 1), one_hot(labels).to(device))
                save_grid(samples.cpu(), folder / "cvae_samples.png", nrow=10, value_range=(0.0, 1.0),
                          row_labels=classes, xlabel="each column shares one z ~ N(0, I)",
                          title="C-VAE samples: decoder means, one row per class", cell_inches=0.6)
                many = torch.arange(10).repeat_interleave(100)
                z = torch.randn(len(many), 20, generator=g).to(device)
                x_gen = model.decode(z, one_hot(many).to(device)).view(-1, 1, 28, 28)
        if kind == "cvae" and cfg.judge:  # outside no_grad: a missing judge is trained first
            evaluator = Evaluator("fashion", device, quick=cfg.quick, data_root=cfg.data_root)
            metrics["cvae_samples_judge"] = evaluator.report(x_gen, labels=many, value_range=(0.0, 1.0))

    plot_panels(curves, folder / "loss_curves.png", xlabel="epoch",
                ylabels={t: "negative ELBO (nats per image)" for t in curves},
                title="Fashion-MNIST: train and validation loss (weights of the best validation epoch kept)")
    plot_embeddings(embeddings, y_test[tsne_idx].numpy(), folder / "tsne_mu.png", classes,
                    title=f"t-SNE of the encoder means mu of {len(tsne_idx)} Fashion-MNIST test images",
                    xlabel="t-SNE 1", ylabel="t-SNE 2")
    table = write_table(rows, folder / "test_elbo",
                        title="Fashion-MNIST test ELBO per image (nats; Bernoulli decoder on gray levels, one z draw), "
                              "best-validation weights")
    top.write_metrics({**metrics, "n_tsne": len(tsne_idx), "data_source": train.source})
    write_summary(folder, HEADLINE)
    print(table.read_text())
    print(f"figures, tables and metrics in {shown(folder)}")


if __name__ == "__main__":
    run_main(main)
