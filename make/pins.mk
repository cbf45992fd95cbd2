# Supply chain: the hashed dependency locks and the digest-pinned base image, refreshed together. Included by the
# Makefile. Both targets need the network (PyPI for the locks, Docker Hub for the digest) and say so when it is
# out of reach; nothing is changed then.
#
# - requirements.lock: the gateway's runtime and dev dependencies for development and CI, on Python $(DEV_PYTHON)
#   (`make install` installs it with --require-hashes).
# - requirements-image.lock: the runtime dependencies and the build backend only, for the image's Python
#   ($(IMAGE_PYTHON), the Dockerfile's base image's), at the versions requirements.lock pins.
# Versions stay where the locks have them; `make lock UPGRADE=--upgrade` moves them to the newest allowed.
# Variables from the Makefile: TOOLS (.tools), PYTHON.

.PHONY: lock pins

UV_VERSION ?= 0.13.9
UV := $(TOOLS)/uv/bin/uv
DEV_PYTHON := 3.11
# Keep in step with the Dockerfile's FROM (tests/chart/test_image.py checks they agree).
IMAGE_PYTHON := 3.12
BASE_IMAGE := python:3.12-slim-bookworm
UPGRADE ?=
UV_COMPILE = $(UV) pip compile --python-platform linux --generate-hashes --quiet $(UPGRADE)
NO_PYPI = { echo "make lock: could not reach PyPI (or resolve): the locks are unchanged" >&2; exit 1; }

$(UV):
	@$(PYTHON) -m venv $(TOOLS)/uv
	@$(TOOLS)/uv/bin/python -m pip install --quiet uv==$(UV_VERSION) \
		|| { echo "make lock: could not install uv from PyPI" >&2; exit 1; }

lock: $(UV) ## recompile requirements.lock (dev, Python 3.11) and requirements-image.lock (the image's 3.12), hashed
	$(UV_COMPILE) pyproject.toml --extra dev --python-version $(DEV_PYTHON) -o requirements.lock || $(NO_PYPI)
	@# The build-system requirements go in too: the image builds the gateway without an unchecked isolated build.
	$(PYTHON) -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['build-system']['requires']))" \
		| $(UV_COMPILE) pyproject.toml - --python-version $(IMAGE_PYTHON) --constraints requirements.lock \
			--custom-compile-command "make lock (uv pip compile pyproject.toml <build-system requires> --python-version $(IMAGE_PYTHON) --python-platform linux --generate-hashes --constraints requirements.lock)" \
			-o requirements-image.lock || $(NO_PYPI)

pins: lock ## refresh the locks and the base image's digest in the Dockerfile (needs PyPI and Docker Hub)
	@image="$(BASE_IMAGE)"; repository="library/$${image%%:*}"; tag="$${image#*:}"; digest=""; \
	if command -v docker >/dev/null 2>&1 && docker buildx version >/dev/null 2>&1; then \
		echo "make pins: docker buildx imagetools inspect $$image"; \
		digest=$$(docker buildx imagetools inspect "$$image" --format '{{json .Manifest.Digest}}' 2>/dev/null | tr -d '"'); \
	elif command -v crane >/dev/null 2>&1; then \
		echo "make pins: crane digest $$image"; \
		digest=$$(crane digest "$$image" 2>/dev/null); \
	elif command -v curl >/dev/null 2>&1; then \
		echo "make pins: Docker Hub's registry API (curl) for $$image"; \
		token=$$(curl -fsS --max-time 20 "https://auth.docker.io/token?service=registry.docker.io&scope=repository:$$repository:pull" 2>/dev/null \
			| $(PYTHON) -c 'import json, sys; print(json.load(sys.stdin)["token"])' 2>/dev/null); \
		[ -z "$$token" ] || digest=$$(curl -fsS --max-time 20 --head -H "Authorization: Bearer $$token" \
			-H "Accept: application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json" \
			"https://registry-1.docker.io/v2/$$repository/manifests/$$tag" 2>/dev/null \
			| tr -d '\r' | awk 'tolower($$1) == "docker-content-digest:" {print $$2}'); \
	else \
		echo "make pins: none of docker buildx, crane or curl is installed: cannot ask the registry" >&2; exit 1; \
	fi; \
	case "$$digest" in \
		sha256:????????????????????????????????????????????????????????????????) ;; \
		*) echo "make pins: could not reach the registry for $$image: the Dockerfile's digest is unchanged" >&2; exit 1;; \
	esac; \
	sed -i -E "s|$$image@sha256:[0-9a-f]{64}|$$image@$$digest|g" Dockerfile; \
	echo "make pins: $$image@$$digest"
