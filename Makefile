# Two commands set everything up on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo app test install clean-venv shapes-data shapes-report

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# WWbL (Algorithm 1) on the bundled shapes-world scenes; with no model named, infer.py uses the
# shipped small CLIP, BLIP and g, all trained on CPU in this repository (see docs/shapes_report/).
# Offline, a few seconds. The flags suit the shapes world (docs/shapes_report/scores.md): proposals down to
# 2 % of a scene (its objects are small), boxes with confidence >= 0.3 (chosen on val), one name per object.
DEMO_FLAGS := --min-proposal-area 0.02 --score-threshold 0.3 --cross-phrase-iou 0.5
demo: $(STAMP)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) infer.py --image data/shapes_samples --out outputs/demo $(DEMO_FLAGS)

# The same models in a browser (Gradio, installed by the test extra); python -m wwbl.app --help for flags.
app: $(STAMP)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False $(PY) -m wwbl.app

# The shapes world (shapes_world/, beside the library and run from this root): write its datasets,
# then rebuild docs/shapes_report from the shipped checkpoints (retrains the ablation arms; long).
# Extra report flags go in SHAPES_REPORT_ARGS (e.g. --g-provenance '…', --resume).
SHAPES_REPORT_ARGS ?=

shapes-data: $(STAMP)
	$(PY) -m shapes_world.writers --config configs/shapes/world.yaml --out data/shapes

shapes-report: $(STAMP)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m shapes_world.report --out docs/shapes_report $(SHAPES_REPORT_ARGS)

test: $(STAMP)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m pytest -q

clean-venv:
	rm -rf $(VENV)
