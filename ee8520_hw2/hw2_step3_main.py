"""EE 8520 HW2, Step 3: train the fully connected VAE of ``models/VAE.py`` on MNIST, and a
hyperparameter study.

Handout: the EE 8520 HW2 handout (Step 3); VAE: Kingma & Welling, "Auto-Encoding
Variational Bayes", ICLR 2014. The skeleton's functions keep their names and signatures
(``loss_func``, ``plot_latent_images``, ``eval``); the skeleton's figures go to
``imgs/VAE_recon.png`` and ``imgs/VAE_generated.png``; everything else goes to the run folder
``outputs/ee8520_hw2/step3/<run>/`` (``<run>_quick/`` for ``--quick``).

The reported test ELBO is in nats per image and always uses coeff = 1 (the true ELBO), whatever
coeff the model was trained with. As in the skeleton, pixels are grey levels in [0, 1] (ToTensor
only) and the reconstruction term is the Bernoulli log-likelihood (binary cross-entropy) of those
grey levels, so the numbers are not comparable with ELBOs on binarized MNIST.

    python hw2_step3_main.py            # the default run (settings in Step3Config)
    python hw2_step3_main.py --sweep    # the hyperparameter study (SWEEP) and its table
    python hw2_step3_main.py --quick    # a few hundred images, 2 epochs
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from common.cli import BaseConfig, parse_config, run_main
from common.data import TensorLoader, images, load_split
from common.loop import train_epochs
from common.metrics import Evaluator
from common.paths import run_dir, shown, skeleton_imgs_dir
from common.plotting import plot_embeddings, plot_latent_grid, plot_panels, plot_reconstructions, save_grid
from common.summary import Headline, write_summary
from common.tables import write_table
from common.training import (NonFiniteLoss, Run, adam, fixed_noise, get_device, load_checkpoint, resolved,
                             seed_everything)
from models.VAE import VAE_model

COURSE_DIR = Path(__file__).resolve().parent
COURSE = "ee8520_hw2"  # its folder under outputs/
IMGS_DIR = COURSE_DIR / "imgs"
EVAL_SEED = 1234  # the one z sample per test image of the reported ELBO
# the headline numbers of its summary.json: keys of metrics.json, with labels and units for a reader
HEADLINE = (Headline("test_elbo_nats", "test ELBO", unit="nats", fmt=".2f", better="higher"),
            Headline("prior_samples.frechet_distance", "prior samples: Fréchet distance",
                     floor="prior_samples.frechet_floor_train_vs_test", fmt=".2f", better="lower"))
SWEEP_HEADLINE = (Headline("*/test_elbo_nats", "{}: test ELBO", unit="nats", fmt=".2f", better="higher"),)


@dataclass
class Step3Config(BaseConfig):
    """Defaults of the full Step 3 run (``--quick`` changes what ``QUICK`` lists)."""

    epochs: int = field(default=50, metadata={"help": "training epochs (the handout suggests 20-100+)"})
    batch_size: int = 256
    lr: float = field(default=1e-3, metadata={"help": "Adam learning rate"})
    weight_decay: float = field(default=1e-8, metadata={"help": "Adam weight decay (the skeleton's 1e-8)"})
    coeff: float = field(default=1.0, metadata={"help": "weight of the KL term in the training loss"})
    hidden_dims: list[int] = field(default_factory=lambda: [256, 128, 64, 4], metadata={
        "help": "encoder hidden sizes then 2 x latent size (the decoder mirrors them)"})
    n_eval: int = field(default=10000, metadata={"help": "prior samples scored by the MNIST judge (0: no judge)"})
    threads: int = 1  # these small MLPs run fastest on one thread (two spin-wait on a busy CPU)
    precision: str = field(default="fp32", metadata={
        "choices": ["fp32"], "help": "these small MLPs train in fp32 only (bf16 is not checked for them)"})
    sweep: bool = field(default=False, metadata={"help": "run the hyperparameter study (SWEEP) instead"})
    sweep_runs: typing.Optional[str] = field(default=None, metadata={
        "help": "comma-separated subset of the study's runs (default: all of default, lr_1e-4, lr_1e-2, "
                "coeff_0.1, coeff_0.01, coeff_0.001, hidden_32_32_16, hidden_128_64_32, hidden_256_256_256)"})

    QUICK: typing.ClassVar[dict] = {"epochs": 2, "batch_size": 64, "n_eval": 256}


# One factor at a time around the default (lr 1e-3, coeff 1, hidden 256/128/64); epochs are
# read off every run's per-epoch test ELBO rather than retrained.
SWEEP: dict[str, tuple[str, dict]] = {
    "default": ("lr 1e-3, coeff 1, hidden 256/128/64", {}),
    "lr_1e-4": ("learning rate 1e-4", {"lr": 1e-4}),
    "lr_1e-2": ("learning rate 1e-2", {"lr": 1e-2}),
    "coeff_0.1": ("KL weight 0.1", {"coeff": 0.1}),
    "coeff_0.01": ("KL weight 0.01", {"coeff": 0.01}),
    "coeff_0.001": ("KL weight 0.001", {"coeff": 0.001}),
    "hidden_32_32_16": ("hidden 32/32/16 (small)", {"hidden_dims": [32, 32, 16, 4]}),
    "hidden_128_64_32": ("hidden 128/64/32", {"hidden_dims": [128, 64, 32, 4]}),
    "hidden_256_256_256": ("hidden 256/256/256 (wide)", {"hidden_dims": [256, 256, 256, 4]}),
}


# --------------------------------------------------------------------------------------------
# The loss (Eq. 2 of the handout)


def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, diag(sigma^2)) || N(0, I)) = 1/2 sum_j (sigma_j^2 + mean_j^2 - 1 - log sigma_j^2),
    in closed form (handout Eq. 2), per sample: shape (N,)."""
    return 0.5 * (logvar.exp() + mean.pow(2) - 1.0 - logvar).sum(dim=1)


def reconstruction_loss(recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log p(x|z) = -sum_i [x_i log x^_i + (1 - x_i) log(1 - x^_i)] (Bernoulli decoder), per sample: (N,).
    NaN when the decoder's output is not finite (a diverged model), for the training guard to report."""
    if not torch.isfinite(recon).all():  # F.binary_cross_entropy would raise an unclear range error
        return torch.full((recon.shape[0],), float("nan"), device=recon.device)
    return F.binary_cross_entropy(recon, x.reshape(x.shape[0], -1), reduction="none").sum(dim=1)


def loss_func(model, x, coeff, return_terms: bool = False):
    """Negative ELBO with a weighted KL, averaged over the batch (one z sample per image):

        loss = 1/N sum_n [ -log p(x_n|z_n) + coeff * KL(q(z|x_n) || p(z)) ],  z_n ~ q(z|x_n).

    coeff = 1 is the true negative ELBO (Eq. 2). With ``return_terms`` also returns the batch
    means of the reconstruction and KL terms (detached-free tensors)."""
    out = model(x)
    recon = reconstruction_loss(out["imgs"], x).mean()
    kl = kl_divergence(out["mean"], out["logvar"]).mean()
    loss = recon + coeff * kl
    return (loss, recon, kl) if return_terms else loss


# --------------------------------------------------------------------------------------------
# The skeleton's figures


@torch.no_grad()
def plot_latent_images(model, n, device, digit_size=28, path=None, limit=2.0):
    """Decode an n x n grid of latents over [-limit, limit]^2 and save ``imgs/VAE_generated.png``
    (unless ``path``). Latent dimensions beyond the first two are held at 0."""
    model.eval()

    def decode(z2):
        z = torch.zeros(len(z2), model.z_size, device=device)
        z[:, :2] = z2.to(device)
        return model.decode(z)

    return plot_latent_grid(decode, path or IMGS_DIR / "VAE_generated.png", n=n, limit=limit, device=device,
                            side=digit_size, title=f"VAE: decoded {n}x{n} grid of latents over "
                                                   f"$[-{limit:g}, {limit:g}]^2$")


@torch.no_grad()
def eval(model, train_dataset, device, path=None, n=32):  # noqa: A001 - the skeleton's name
    """Save ``n`` images of ``train_dataset`` beside their reconstructions (decoded posterior
    means) as ``imgs/VAE_recon.png`` (unless ``path``). ``train_dataset`` may be a tensor of
    images in [0, 1], a ``common.data.Split`` or a torchvision-style dataset of (image, label)."""
    model.eval()
    if isinstance(train_dataset, torch.Tensor):
        x = train_dataset[:n]
    elif hasattr(train_dataset, "x") and hasattr(train_dataset, "info"):  # common.data.Split
        x = images(train_dataset.subset(torch.arange(min(n, len(train_dataset)))), scale="unit")
    else:
        x = torch.stack([torch.as_tensor(train_dataset[i][0]) for i in range(n)])
    x = x.float().reshape(-1, 1, 28, 28).to(device)
    mean, _ = model.encode(x)
    recon = model.decode(mean).reshape_as(x)
    return plot_reconstructions(x.cpu(), recon.cpu(), path or IMGS_DIR / "VAE_recon.png",
                                title="VAE: originals (left) and their reconstructions from the posterior mean (right)")


# --------------------------------------------------------------------------------------------
# Training and evaluation


@torch.no_grad()
def evaluate(model, x: torch.Tensor, batch: int = 2000) -> dict:
    """Test-set terms in nats per image with coeff = 1: reconstruction, KL, negative ELBO
    (one seeded z sample per image), the pixel MSE of the decoded posterior mean, and the means."""
    model.eval()
    recon = kl = mse = 0.0
    means = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(EVAL_SEED)
        for i in range(0, len(x), batch):
            xb = x[i:i + batch]
            out = model(xb)
            recon += reconstruction_loss(out["imgs"], xb).sum().item()
            kl += kl_divergence(out["mean"], out["logvar"]).sum().item()
            mse += (model.decode(out["mean"]) - xb.reshape(len(xb), -1)).pow(2).mean(1).sum().item()
            means.append(out["mean"].cpu())
    n = len(x)
    return {"recon": recon / n, "kl": kl / n, "neg_elbo": (recon + kl) / n, "elbo": -(recon + kl) / n,
            "mse": mse / n, "means": torch.cat(means)}


def train_vae(cfg: Step3Config, folder: Path, train_x, test_x, device,
              keep_last_good: bool = False, data_source: str | None = None) -> tuple[VAE_model, Run]:
    """Train one configuration, logging train and test terms per epoch; checkpoint each epoch.

    A NaN loss stops the run (the last good checkpoint is kept). With ``keep_last_good`` (the
    study) it returns that checkpoint's model instead of raising, so the study goes on and
    reports the run as diverged: its history is then shorter than ``cfg.epochs``."""
    seed_everything(cfg.seed)
    model = VAE_model(train_x.shape[1], cfg.hidden_dims).to(device)
    optimizer = adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loader = TensorLoader(train_x, batch_size=cfg.batch_size, shuffle=True, seed=cfg.seed)
    run = Run(folder, {**cfg.to_dict(), **resolved(device, cfg.precision, data_source), "train_images": len(train_x),
                       "test_images": len(test_x), "z_size": model.z_size})
    objects = {"model": model, "optimizer": optimizer, "loader": loader}
    start_epoch = run.resume(objects) if cfg.resume else 0

    def step(batch, i):
        loss, recon, kl = loss_func(model, batch[0], cfg.coeff, return_terms=True)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return {"train_loss": loss, "train_recon": recon, "train_kl": kl}

    def end_of_epoch(ep):
        test = evaluate(model, test_x)
        r = ep.row
        ep.row = {**{k: r[k] for k in ("epoch", "train_loss", "train_recon", "train_kl")},
                  "train_neg_elbo": r["train_recon"] + r["train_kl"], "test_recon": test["recon"],
                  "test_kl": test["kl"], "test_neg_elbo": test["neg_elbo"], "test_mse": test["mse"],
                  "seconds": r["seconds"]}

    try:
        train_epochs(step, loader, cfg.epochs, run=run, objects=objects, start=start_epoch, models=(model,),
                     on_epoch=[end_of_epoch], log_steps=False, desc="VAE epoch", label="step3")
    except NonFiniteLoss as err:
        if not (keep_last_good and run.ckpt_path.exists()):
            raise
        print(f"[step3] diverged: {err}")
        load_checkpoint(run.ckpt_path, {"model": model, "history": run.history})
    return model, run


def plot_curves_of(run: Run, path: Path, title: str):
    h = [e for e in run.history.epochs]
    ep = [e["epoch"] for e in h]

    def pair(key):
        return {"train": (ep, [e[f"train_{key}"] for e in h]), "test": (ep, [e[f"test_{key}"] for e in h])}

    return plot_panels({"total: -ELBO = recon + KL (coeff 1)": pair("neg_elbo"), "reconstruction -log p(x|z)": pair("recon"),
                        "KL(q(z|x) || p(z))": pair("kl")}, path, xlabel="epoch",
                       ylabels={"total: -ELBO = recon + KL (coeff 1)": "nats per image",
                                "reconstruction -log p(x|z)": "nats per image", "KL(q(z|x) || p(z))": "nats per image"},
                       title=title)


def finish_run(cfg, model, run, test_split, test_x, device, evaluator, imgs_dir: Path | None) -> dict:
    """Every figure and metrics.json of one trained model; returns its metrics."""
    out = imgs_dir or run.dir
    eval(model, test_split, device, path=out / "VAE_recon.png")
    plot_latent_images(model, 8, device, path=out / "VAE_generated.png")
    if imgs_dir is not None:
        for name in ("VAE_recon.png", "VAE_generated.png"):
            run.path(name).write_bytes((imgs_dir / name).read_bytes())
    plot_latent_images(model, 20, device, path=run.path("VAE_generated_20x20.png"))
    plot_curves_of(run, run.path("loss_curves.png"), f"VAE training curves (trained with coeff {cfg.coeff:g}; "
                                                     "curves show coeff 1)")
    test = evaluate(model, test_x)
    if model.z_size == 2:
        plot_embeddings({"test-set posterior means": test["means"].numpy()}, test_split.y.numpy(),
                        run.path("latent_means.png"), class_names=[str(i) for i in range(10)],
                        title="VAE latent space: mean of q(z|x) for each test image",
                        xlabel="$z_1$", ylabel="$z_2$")
    with torch.no_grad():
        samples = model.decode(fixed_noise(max(cfg.n_eval, 64), model.z_size, seed=cfg.seed + 1, device=device)).cpu()
    save_grid(samples[:64], run.path("prior_samples.png"), nrow=8, value_range=(0, 1),
              title="VAE: decoded samples z ~ N(0, I)")
    report = evaluator.report(samples[:cfg.n_eval], value_range=(0, 1)) if evaluator is not None else {}
    metrics = {"test_elbo_nats": test["elbo"], "test_neg_elbo_nats": test["neg_elbo"], "test_recon_nats": test["recon"],
               "test_kl_nats": test["kl"], "test_mse_per_pixel": test["mse"],
               "elbo_note": "coeff = 1, one seeded z sample per test image, Bernoulli likelihood of grey-level pixels",
               "epochs": len(run.history.epochs), "seconds_per_epoch": run.history.seconds_per_epoch(),
               "device": str(device), "prior_samples": report}
    run.write_metrics(metrics)
    judged = (f"; prior samples Frechet {report['frechet_distance']:.2f} (floor {report['frechet_floor_train_vs_test']:.2f})"
              if report else "")
    print(f"[step3] {shown(run.dir)}: test ELBO {test['elbo']:.2f} nats (recon {test['recon']:.2f}, KL {test['kl']:.2f}){judged}")
    return metrics


def run_sweep(cfg, train_x, test_split, test_x, device, evaluator, data_source: str | None = None) -> Path:
    """Each SWEEP entry in its own sub-folder, then a table and an overlay of test -ELBO per epoch."""
    base = run_dir(COURSE, "step3", "sweep", cfg.out_dir, quick=cfg.quick)
    rows, curves = [], {}
    names = [n.strip() for n in cfg.sweep_runs.split(",")] if cfg.sweep_runs else list(SWEEP)
    unknown = [n for n in names if n not in SWEEP]
    if unknown:
        raise SystemExit(f"unknown sweep run(s) {', '.join(unknown)}; choose from {', '.join(SWEEP)}")
    for name in names:
        description, changes = SWEEP[name]
        print(f"[step3] sweep {name}: {description}")
        sub = dataclasses.replace(cfg, **changes)
        model, run = train_vae(sub, base / name, train_x, test_x, device, keep_last_good=True,
                               data_source=data_source)
        m = finish_run(sub, model, run, test_split, test_x, device, evaluator, imgs_dir=None)
        h = run.history.epochs
        diverged = len(h) < sub.epochs  # stopped by a NaN; evaluated at its last good epoch
        curves[name] = ([e["epoch"] for e in h], [-e["test_neg_elbo"] for e in h])
        readout = {f"ELBO @ ep {k}": -h[k - 1]["test_neg_elbo"] for k in (5, 10, 25) if k <= len(h)}
        rows.append({"run": name, "change": description, "lr": sub.lr, "coeff": sub.coeff,
                     "hidden": "/".join(map(str, sub.hidden_dims[:-1])), "epochs": m["epochs"],
                     "test ELBO (nats)": m["test_elbo_nats"], "recon (nats)": m["test_recon_nats"],
                     "KL (nats)": m["test_kl_nats"], "MSE/pixel": m["test_mse_per_pixel"], **readout,
                     "Frechet (prior samples)": m["prior_samples"].get("frechet_distance", ""),
                     "diverged": f"in epoch {len(h) + 1} (NaN); last good epoch shown" if diverged else ""})
    best = max((r for r in rows if not r["diverged"]), key=lambda r: r["test ELBO (nats)"], default=rows[0])
    for r in rows:
        r["chosen"] = "yes" if r is best else ""
    write_table(rows, base / "sweep_table", title="EE 8520 HW2 Step 3 hyperparameter study (test set; ELBO with "
                "coeff 1, higher is better; chosen = best test ELBO)")
    plot_panels({"test ELBO per epoch": curves}, base / "sweep_elbo_curves.png", xlabel="epoch",
                ylabels={"test ELBO per epoch": "test ELBO (nats per image, coeff 1)"},
                title="Step 3 hyperparameter study: test ELBO during training")
    (base / "chosen.txt").write_text(f"chosen configuration: {best['run']} ({best['change']}), "
                                     f"test ELBO {best['test ELBO (nats)']:.2f} nats\n")
    print((base / "sweep_table.md").read_text() + (base / "chosen.txt").read_text())
    return base


def main(argv=None) -> None:
    cfg = parse_config(Step3Config, argv, description=__doc__.splitlines()[0])
    device = get_device(cfg.device)
    train = load_split("mnist", "train", root=cfg.data_root, quick=cfg.quick, seed=cfg.seed)
    test = load_split("mnist", "test", root=cfg.data_root, quick=cfg.quick, seed=cfg.seed)
    # ToTensor only, as in the skeleton: grey levels in [0, 1], flattened for the MLP.
    train_x = images(train, scale="unit", device=device).reshape(len(train), -1)
    test_x = images(test, scale="unit", device=device).reshape(len(test), -1)
    evaluator = Evaluator("mnist", device, quick=cfg.quick, data_root=cfg.data_root) if cfg.n_eval > 0 else None
    if cfg.sweep:
        base = run_sweep(cfg, train_x, test, test_x, device, evaluator, train.source)
        write_summary(base, SWEEP_HEADLINE)
        print(f"[step3] sweep table and figures in {shown(base)}")
        return
    folder = run_dir(COURSE, "step3", "vae", cfg.out_dir, quick=cfg.quick)
    imgs = skeleton_imgs_dir(COURSE_DIR, folder, cfg)
    model, run = train_vae(cfg, folder, train_x, test_x, device, data_source=train.source)
    finish_run(cfg, model, run, test, test_x, device, evaluator, imgs)
    write_summary(run.dir, HEADLINE)
    print(f"[step3] figures in {shown(imgs)} and {shown(run.dir)}")


if __name__ == "__main__":
    run_main(main)
