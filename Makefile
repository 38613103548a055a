# Generative-model coursework: one command per assignment part. `make help` lists them.
# QUICK=1 on any target runs the smoke-sized version (--quick / HW_QUICK=1).
# NAME=<your name> names the submission files (zips, reports, the CSC 8851 notebook).

SHELL := /bin/bash
VENV  := .venv
PY    := $(abspath $(VENV))/bin/python
STAMP := $(VENV)/.installed
NAME  ?= YourName
Q     := $(if $(QUICK),--quick,)
export HW_QUICK := $(if $(QUICK),1,$(HW_QUICK))

.DEFAULT_GOAL := help
.PHONY: help setup test demo results judges bench bench-data bench-pixelcnn-sampling clean \
	ee8520 ee8520-step1 ee8520-step1-ablations ee8520-step2 ee8520-step3 ee8520-step3-sweep \
	csc8851 csc8851-train assignment3 assignment3-part1 assignment3-stages assignment3-batch-sizes \
	assignment3-schedules ece685d ece685d-p1 ece685d-p2 ece685d-p3 rdfia rdfia-experiments gallery \
	zip-ee8520 zip-assignment3 zip-ece685d zip-rdfia zips

help: ## list the targets
	@echo "make <target> [QUICK=1] [NAME=<your name>]"
	@echo "  QUICK=1      the smoke-sized run of any target (--quick: a few hundred images, 1-2 epochs, own _quick folders)"
	@echo "  NAME=<name>  names the submission files (zips, reports, the CSC 8851 notebook; default YourName)"
	@echo
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-26s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP) ## create .venv and install the project (torch, torchvision, ...)

test: $(STAMP) ## run the test suite (quick end-to-end runs included)
	$(PY) -m pytest -q

demo: $(STAMP) ## run every assignment part in quick mode (a few minutes) and list the folders it made
	$(MAKE) --no-print-directory ee8520 csc8851 assignment3 ece685d rdfia QUICK=1
	@echo "Figures and metrics went to these quick run folders (make gallery shows them on one page):"
	@$(PY) -m common.courses figures --quick

results: $(STAMP) ## rewrite the READMEs' results tables from results/ (put a run on record: python -m common.results add <run folder>)
	$(PY) -m common.results tables

judges: $(STAMP) ## train and cache the MNIST and Fashion-MNIST judge classifiers
	$(PY) -m common.judges

bench: $(STAMP) ## every speed benchmark, side by side with its baseline
	$(PY) -m common.bench all --record

bench-data: $(STAMP) ## in-memory batches vs torchvision DataLoader, one MNIST epoch
	$(PY) -m common.bench data

bench-pixelcnn-sampling: $(STAMP) ## cached PixelCNN sampling vs the naive 784-pass loop
	cd ee8520_hw2 && $(PY) bench_sampling.py

# ---- EE 8520 HW2 ------------------------------------------------------------------------
ee8520: ee8520-step1 ee8520-step2 ee8520-step3 ## EE 8520: all three steps

ee8520-step1: $(STAMP) ## EE 8520 step 1: MLP GAN (imgs/generated_images.png, imgs/loss_monitoring.png)
	cd ee8520_hw2 && $(PY) hw2_step1_main.py $(Q)

ee8520-step1-ablations: $(STAMP) ## EE 8520 step 1: every ablation, overlay and table
	cd ee8520_hw2 && $(PY) hw2_step1_main.py --ablation all $(Q)

ee8520-step2: $(STAMP) ## EE 8520 step 2: PixelCNN and conditional PixelCNN (imgs/pixelcnn_generated.png)
	cd ee8520_hw2 && $(PY) hw2_step2_main.py $(Q)

ee8520-step3: $(STAMP) ## EE 8520 step 3: MLP VAE (imgs/VAE_recon.png, imgs/VAE_generated.png)
	cd ee8520_hw2 && $(PY) hw2_step3_main.py $(Q)

ee8520-step3-sweep: $(STAMP) ## EE 8520 step 3: hyperparameter study and its table
	cd ee8520_hw2 && $(PY) hw2_step3_main.py --sweep $(Q)

# ---- CSC 8851 HW2 -----------------------------------------------------------------------
csc8851: $(STAMP) ## CSC 8851: the upload, dist/CSC8851_F2025_HW2_<NAME>.ipynb and .pdf, run alone top to bottom
	$(PY) -m common.deliver notebook csc8851_hw2/CSC8851_F2025_HW2_YourName.ipynb \
		dist/CSC8851_F2025_HW2_$(NAME).ipynb --name $(NAME)

csc8851-train: $(STAMP) ## CSC 8851: the conditional WGAN-GP as a script (same module)
	cd csc8851_hw2 && $(PY) wgan_gp.py $(Q)

# ---- Assignment 3 -----------------------------------------------------------------------
assignment3: assignment3-part1 assignment3-stages assignment3-batch-sizes assignment3-schedules ## Assignment 3: all parts

assignment3-part1: $(STAMP) ## Assignment 3 part I: the upload, dist/Assignment_3_GAN.ipynb, run alone top to bottom
	$(PY) -m common.deliver notebook assignment3/Assignment_3_GAN.ipynb dist/Assignment_3_GAN.ipynb --name $(NAME)

assignment3-stages: $(STAMP) ## Assignment 3 part II.1: quality across training stages
	cd assignment3 && $(PY) part2_training_stages.py $(Q)

assignment3-batch-sizes: $(STAMP) ## Assignment 3 part II.2: batch sizes 128-1024
	cd assignment3 && $(PY) part2_batch_sizes.py $(Q)

assignment3-schedules: $(STAMP) ## Assignment 3 part II.3: step decay and warmup+cosine
	cd assignment3 && $(PY) part2_lr_schedules.py $(Q)

# ---- ECE 685D HW5 -----------------------------------------------------------------------
ece685d: ece685d-p1 ece685d-p2 ece685d-p3 ## ECE 685D: all three problems

ece685d-p1: $(STAMP) ## ECE 685D problem 1: DCGAN and the linear probe
	cd ece685d_hw5 && $(PY) problem1_dcgan.py $(Q)

ece685d-p2: $(STAMP) ## ECE 685D problem 2: Gaussian-Bernoulli RBM, M = 16, 64, 256
	cd ece685d_hw5 && $(PY) problem2_rbm.py $(Q)

ece685d-p3: $(STAMP) ## ECE 685D problem 3: VAE and C-VAE on Fashion-MNIST, t-SNE
	cd ece685d_hw5 && $(PY) problem3_vae.py $(Q)

# ---- RDFIA TP2 --------------------------------------------------------------------------
rdfia: $(STAMP) ## RDFIA: default DCGAN and the conditional DCGAN
	cd rdfia_tp2 && $(PY) tp2_dcgan.py $(Q) && $(PY) tp2_cgan.py $(Q)

rdfia-experiments: $(STAMP) ## RDFIA: every DCGAN experiment (nz, init, capacity, loss, lr, CIFAR-10)
	cd rdfia_tp2 && $(PY) tp2_dcgan.py --experiment all $(Q)

# ---- Deliverables -----------------------------------------------------------------------
zips: zip-ee8520 zip-assignment3 zip-ece685d zip-rdfia ## every course's code zip (NAME=...)

zip-ee8520: $(STAMP) ## dist/<NAME>_EE8520_F25.zip
	$(PY) -m common.deliver zip ee8520_hw2 $(NAME)

zip-assignment3: $(STAMP) ## dist/<NAME>_Assignment3_PartII.zip: the Part II code
	$(PY) -m common.deliver zip assignment3 $(NAME)

zip-ece685d: $(STAMP) ## dist/<NAME>_ECE685D_HW5.zip
	$(PY) -m common.deliver zip ece685d_hw5 $(NAME)

zip-rdfia: $(STAMP) ## dist/<NAME>_RDFIA_TP2.zip
	$(PY) -m common.deliver zip rdfia_tp2 $(NAME)

clean: ## remove outputs/ and dist/ (keeps data/ and .venv)
	rm -rf outputs dist

# ---- Reports and gallery ----------------------------------------------------------------
.PHONY: report-ee8520 report-assignment3 report-ece685d report-rdfia reports

reports: report-ee8520 report-assignment3 report-ece685d report-rdfia ## every report PDF from the latest runs (NAME=...)

report-ee8520: $(STAMP) ## dist/<NAME>_EE8520_F25.pdf from ee8520_hw2/report.md and the latest runs
	$(PY) -m common.report ee8520 --name $(NAME)

report-assignment3: $(STAMP) ## dist/<NAME>_Assignment3_PartII.pdf (at most 3 pages) from assignment3/report.md
	$(PY) -m common.report assignment3 --name $(NAME)

report-ece685d: $(STAMP) ## dist/<NAME>_ECE685D_HW5.pdf from ece685d_hw5/report.md and the latest runs
	$(PY) -m common.report ece685d --name $(NAME)

report-rdfia: $(STAMP) ## dist/<NAME>_RDFIA_TP2.pdf: answers to questions 1-9 from rdfia_tp2/report.md
	$(PY) -m common.report rdfia --name $(NAME)

gallery: $(STAMP) ## outputs/index.html: every figure and table of the latest runs, per course
	$(PY) -m common.gallery
