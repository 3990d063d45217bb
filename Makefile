# The two commands: `make run` serves on the embedded SQLite default, `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: run test test-dicom-plain bench install clean chromium dcmtk haproxy orthanc node viewer schema

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# The DICOM viewer (viewer/): Cornerstone3D from npm, built by vite into viewer/static, which the
# Python package serves at /viewer/. Rebuilt only when its sources or lockfile change (stamps).
VIEWER_SRC := $(wildcard viewer/src/*) viewer/index.html viewer/vite.config.js viewer/package.json
VIEWER_DEPS := viewer/node_modules/.installed
VIEWER_BUILT := viewer/static/.built

node:  # Debian's nodejs and npm for the viewer build
	command -v npm >/dev/null || (apt-get update && apt-get install -y nodejs npm)

$(VIEWER_DEPS): viewer/package-lock.json
	$(MAKE) node
	cd viewer && npm ci --no-audit --no-fund
	touch $@

$(VIEWER_BUILT): $(VIEWER_DEPS) $(VIEWER_SRC)
	cd viewer && npx --no-install vite build
	touch $@

viewer: $(VIEWER_BUILT)

run: $(STAMP) viewer
	$(BIN)/fhirserver serve --insecure-no-auth --dev

chromium:  # Debian's chromium for the Playwright browser tests (no browser download)
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)

dcmtk:  # Debian's dcmtk: the real DICOM peers of the DICOM node tests and bench
	command -v storescu >/dev/null || (apt-get update && apt-get install -y dcmtk)

haproxy:  # Debian's HAProxy: the load balancer in front of the API hosts of tests/multihost
	command -v haproxy >/dev/null || (apt-get update && apt-get install -y haproxy)

# loadgroup: tests of one xdist_group (the multi-host cluster) run on one worker, in order
test: $(STAMP) chromium dcmtk haproxy viewer
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q $(PYTEST_ARGS)

test-dicom-plain: $(STAMP) dcmtk  # the DICOM and DICOMweb tests with the fast path off (libraries only)
	for d in tests/dicom tests/dicomweb; do FHIRSERVER_DICOM_FAST_PATH=0 $(BIN)/python -m pytest -q $(PYTEST_ARGS) $$d || exit 1; done

orthanc:  # Debian's Orthanc and its DICOMweb plugin: the reference peer of the DICOM and DICOMweb benches (skipped there if they will not install)
	(command -v Orthanc >/dev/null && test -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so) || \
		(apt-get update && apt-get install -y orthanc orthanc-dicomweb) || true

# fhirserver/model/data/r4_schema.json (R4's differences from the R4B models) regenerated from the
# R4 4.0.1 StructureDefinitions in HL7's npm package (needs npm and its registry; not part of test)
R4_PACKAGE := var/hl7.fhir.r4.examples-4.0.1.tgz

$(R4_PACKAGE):
	$(MAKE) node
	mkdir -p var && cd var && npm pack --silent hl7.fhir.r4.examples@4.0.1

schema: $(STAMP) $(R4_PACKAGE)
	$(BIN)/python -m fhirserver.model.gen_schema $(R4_PACKAGE)
	-git diff --stat -- fhirserver/model/data/r4_schema.json

# Each part prints a table and a last JSON line of figures and ratios (see bench/README.md).
bench: $(STAMP) dcmtk orthanc
	$(BIN)/python -m bench.run
	$(BIN)/python -m bench.auth
	$(BIN)/python -m bench.search
	$(BIN)/python -m bench.dicomweb
	$(BIN)/python -m bench.dicom --count 500
	$(BIN)/python -m bench.subscriptions
	$(BIN)/python -m bench.export
	$(BIN)/python -m bench.blobs

clean:
	rm -rf $(VENV) var .pytest_cache viewer/node_modules viewer/static
