# The two images. Included by the top-level Makefile; `charts/images/build.py` picks the engine (a
# running Docker, else podman) and the base (python:3.11-slim-bookworm, or on machines no image
# registry answers, a stand-in built from Debian's packages once and kept in the image store).

PYTHON ?= python3
IMAGE_TAG ?= dev
IMAGE_REPOSITORY ?= waveflow
OPERATOR_IMAGE ?= $(IMAGE_REPOSITORY)/operator:$(IMAGE_TAG)
JOB_IMAGE ?= $(IMAGE_REPOSITORY)/job:$(IMAGE_TAG)
IMAGES := $(PYTHON) charts/images/build.py --job $(JOB_IMAGE) --operator $(OPERATOR_IMAGE)
SUDO ?= $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# `make test` builds and runs both images (tests/images).
TEST_TOOLS += tools-podman

tools-podman: ## podman, runc and mmdebstrap from Debian, for the image tests (skipped when present)
	@if command -v podman >/dev/null && command -v runc >/dev/null && command -v mmdebstrap >/dev/null; then \
		echo "podman: $$(podman --version)"; \
	else \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
			podman runc mmdebstrap && \
		podman --version; \
	fi

base-image: ## The images' Python base: pulled, or built from Debian when no registry answers
	$(IMAGES) base

images: ## Build both images (Docker or podman): waveflow/operator:dev, waveflow/job:dev (IMAGE_TAG=...)
	$(IMAGES) build

image-sizes: ## Bytes each image adds above its base, uncompressed and gzip'd (as pushed)
	$(IMAGES) sizes

push-images: images ## Tag and push both images to IMAGE_REGISTRY=<account>.dkr.ecr.<region>.amazonaws.com
	@test -n "$(IMAGE_REGISTRY)" || { echo "set IMAGE_REGISTRY=<account>.dkr.ecr.<region>.amazonaws.com"; exit 1; }
	$(IMAGES) push $(IMAGE_REGISTRY)

.PHONY: tools-podman base-image images image-sizes push-images
