{{/*
Names, labels and the small decisions every template shares.
*/}}

{{/* The chart name, the `app.kubernetes.io/name` label. */}}
{{- define "claude-gateway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of the release's objects. Truncated at 63 characters, the limit of DNS labels; the release name
alone when it already contains the chart name.
*/}}
{{- define "claude-gateway.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* `<fullname>-<suffix>`, kept within 63 characters. Call with (list $ "suffix"). */}}
{{- define "claude-gateway.componentName" -}}
{{- $root := index . 0 }}
{{- $suffix := index . 1 }}
{{- printf "%s-%s" (include "claude-gateway.fullname" $root | trunc (int (sub 62 (len $suffix)))) $suffix | trimSuffix "-" }}
{{- end }}

{{- define "claude-gateway.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "claude-gateway.labels" -}}
helm.sh/chart: {{ include "claude-gateway.chart" . }}
{{ include "claude-gateway.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: claude-gateway
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of the release; each workload adds `app.kubernetes.io/component`. */}}
{{- define "claude-gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "claude-gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of one component. Call with (list $ "api"). */}}
{{- define "claude-gateway.componentLabels" -}}
{{ include "claude-gateway.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/* Selector labels of one component. Call with (list $ "api"). */}}
{{- define "claude-gateway.componentSelectorLabels" -}}
{{ include "claude-gateway.selectorLabels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "claude-gateway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "claude-gateway.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
An image reference: `[registry/]repository` then `@digest`, else `:tag` (else the default tag).
`global.imageRegistry` replaces the image's own registry, so one value points every image at a mirror.
Call with (dict "root" $ "image" .Values.image "defaultTag" .Chart.AppVersion).
*/}}
{{- define "claude-gateway.imageRef" -}}
{{- $image := .image }}
{{- $registry := .root.Values.global.imageRegistry | default $image.registry }}
{{- $repository := $image.repository }}
{{- if $registry }}{{ $repository = printf "%s/%s" (trimSuffix "/" $registry) $repository }}{{ end }}
{{- if $image.digest }}
{{- printf "%s@%s" $repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $repository ($image.tag | default .defaultTag) }}
{{- end }}
{{- end }}

{{/* The gateway image: a digest pins it; else the tag, else the chart's appVersion. */}}
{{- define "claude-gateway.image" -}}
{{- include "claude-gateway.imageRef" (dict "root" . "image" .Values.image "defaultTag" .Chart.AppVersion) }}
{{- end }}

{{/* The internal Redis (Valkey) image. Nothing of the gateway's version goes in, so an upgrade leaves it alone. */}}
{{- define "claude-gateway.redisImage" -}}
{{- include "claude-gateway.imageRef" (dict "root" . "image" .Values.redis.internal.image "defaultTag" "") }}
{{- end }}

{{/*
Image pull secrets of every pod: `global.imagePullSecrets` then `imagePullSecrets`, each given as `{name: x}` or
as a bare name, without duplicates.
*/}}
{{- define "claude-gateway.imagePullSecrets" -}}
{{- $names := list }}
{{- range (concat (.Values.global.imagePullSecrets | default list) (.Values.imagePullSecrets | default list)) }}
{{- $name := "" }}
{{- if kindIs "string" . }}{{ $name = . }}{{ else }}{{ $name = .name }}{{ end }}
{{- if and $name (not (has $name $names)) }}{{ $names = append $names $name }}{{ end }}
{{- end }}
{{- if $names }}
imagePullSecrets:
{{- range $names }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end }}

{{/* The Secret made by the chart for the upstream key and the Redis URL. */}}
{{- define "claude-gateway.secretName" -}}
{{- include "claude-gateway.fullname" . }}
{{- end }}

{{/* The Secret holding the upstream key: yours, or the chart's. */}}
{{- define "claude-gateway.anthropicSecretName" -}}
{{- .Values.anthropic.existingSecret | default (include "claude-gateway.secretName" .) }}
{{- end }}

{{- define "claude-gateway.anthropicSecretKey" -}}
{{- if .Values.anthropic.existingSecret }}{{ .Values.anthropic.existingSecretKey }}{{ else }}ANTHROPIC_API_KEY{{ end }}
{{- end }}

{{/*
The upstream key the chart stores itself: the one given, or a placeholder the simulator accepts. Empty when the
key comes from an existing Secret, or when there is none at all.
*/}}
{{- define "claude-gateway.inlineAnthropicKey" -}}
{{- if .Values.anthropic.apiKey }}{{ .Values.anthropic.apiKey }}
{{- else if and .Values.simulator.enabled (not .Values.anthropic.existingSecret) }}sk-ant-simulator
{{- end }}
{{- end }}

{{- define "claude-gateway.hasAnthropicKey" -}}
{{- if or .Values.anthropic.existingSecret (include "claude-gateway.inlineAnthropicKey" .) }}true{{ end }}
{{- end }}

{{/* The Secret holding the client keys file: yours, or the chart's. Empty when there is no keys file. */}}
{{- define "claude-gateway.keysSecretName" -}}
{{- if .Values.clientKeys.existingSecret }}{{ .Values.clientKeys.existingSecret }}
{{- else if .Values.clientKeys.keys }}{{ include "claude-gateway.componentName" (list . "keys") }}
{{- end }}
{{- end }}

{{- define "claude-gateway.keysSecretKey" -}}
{{- if .Values.clientKeys.existingSecret }}{{ .Values.clientKeys.existingSecretKey }}{{ else }}keys.yaml{{ end }}
{{- end }}

{{/* Where the keys file is mounted: a directory mount (never subPath), so the kubelet's updates reach the pod. */}}
{{- define "claude-gateway.keysDir" -}}/etc/claude-gateway/keys{{- end }}

{{/*
The internal Redis's password Secret: yours (`redis.internal.auth.existingSecret`), or the one the chart makes
once and keeps (redis-secret.yaml).
*/}}
{{- define "claude-gateway.redisAuthSecretName" -}}
{{- .Values.redis.internal.auth.existingSecret | default (include "claude-gateway.redisName" .) }}
{{- end }}

{{- define "claude-gateway.redisAuthSecretKey" -}}
{{- if .Values.redis.internal.auth.existingSecret }}{{ .Values.redis.internal.auth.existingSecretKey }}{{ else }}redis-password{{ end }}
{{- end }}

{{/* True when upstream calls go through an egress proxy (HTTPS_PROXY). */}}
{{- define "claude-gateway.hasEgressProxy" -}}
{{- if or .Values.egressProxy.httpsProxy .Values.egressProxy.existingSecret }}true{{ end }}
{{- end }}

{{/* True when the admin views have keys (ADMIN_API_KEYS). */}}
{{- define "claude-gateway.hasAdminKeys" -}}
{{- if or .Values.adminKeys.keys .Values.adminKeys.existingSecret }}true{{ end }}
{{- end }}

{{/* The ConfigMap holding the price table (PRICES_FILE): yours, or the chart's. Empty: the shipped table. */}}
{{- define "claude-gateway.pricesConfigMapName" -}}
{{- if .Values.prices.existingConfigMap }}{{ .Values.prices.existingConfigMap }}
{{- else if .Values.prices.table }}{{ include "claude-gateway.componentName" (list . "prices") }}
{{- end }}
{{- end }}

{{- define "claude-gateway.pricesKey" -}}
{{- if .Values.prices.existingConfigMap }}{{ .Values.prices.existingConfigMapKey }}{{ else }}prices.json{{ end }}
{{- end }}

{{/* A directory mount (never subPath), so an edited ConfigMap reaches the pod. */}}
{{- define "claude-gateway.pricesDir" -}}/etc/claude-gateway/prices{{- end }}

{{/* The names in the chart-wide and every gateway component's extraEnv, to see what a user passed that way. */}}
{{- define "claude-gateway.extraEnvNames" -}}
{{- $names := list }}
{{- range concat (.Values.extraEnv | default list) (.Values.api.extraEnv | default list) }}
{{- $names = append $names .name }}
{{- end }}
{{- toJson $names }}
{{- end }}

{{/* True when the gateway has Redis (internal or external). */}}
{{- define "claude-gateway.hasRedis" -}}
{{- if ne .Values.redis.mode "none" }}true{{ end }}
{{- end }}

{{- define "claude-gateway.redisName" -}}
{{- include "claude-gateway.componentName" (list . "redis") }}
{{- end }}

{{- define "claude-gateway.simulatorName" -}}
{{- include "claude-gateway.componentName" (list . "simulator") }}
{{- end }}

{{- define "claude-gateway.workerEnabled" -}}
{{- if and .Values.worker.enabled (include "claude-gateway.hasRedis" .) }}true{{ end }}
{{- end }}

{{/*
The API pod's grace period: the preStop pause, then Gunicorn's graceful timeout for in-flight streams, then a
margin for the arbiter to reap its workers and exit. Kubernetes counts the preStop hook inside the grace period,
so anything shorter would SIGKILL streams that still had time left.
*/}}
{{- define "claude-gateway.apiTerminationGracePeriodSeconds" -}}
{{- add (int .Values.api.preStopSleepSeconds) (int .Values.api.gracefulTimeoutSeconds) (int .Values.api.shutdownMarginSeconds) }}
{{- end }}

{{/*
The worker pod's grace period: ARQ's job_completion_wait, which the gateway derives as one upstream call at its
slowest (UPSTREAM_TIMEOUT_S x (UPSTREAM_MAX_RETRIES + 1) + the SDK's 8 s maximum backoff per retry, rounded up),
then a margin to close connections. Shorter, and the kubelet's SIGKILL would strand running jobs until their
in-progress keys expire.
*/}}
{{- define "claude-gateway.workerJobCompletionWaitSeconds" -}}
{{- $retries := int .Values.config.upstreamMaxRetries }}
{{- addf (mulf .Values.config.upstreamTimeoutSeconds (add1 $retries)) (mul 8 $retries) | ceil | int }}
{{- end }}

{{- define "claude-gateway.workerTerminationGracePeriodSeconds" -}}
{{- add (include "claude-gateway.workerJobCompletionWaitSeconds" . | int) (int .Values.worker.shutdownMarginSeconds) }}
{{- end }}

{{/*
Fewest pods a component runs: KEDA's minimum, else the HPA's, else its replica count.
Call with (list $ "api" .Values.api).
*/}}
{{- define "claude-gateway.minReplicas" -}}
{{- $root := index . 0 }}
{{- $values := index . 2 }}
{{- if $root.Values.keda.enabled }}{{ (index $root.Values.keda (index . 1)).minReplicas }}
{{- else if $values.autoscaling.enabled }}{{ $values.autoscaling.minReplicas }}
{{- else }}{{ $values.replicaCount }}{{ end }}
{{- end }}

{{/* True when something other than the Deployment owns its replica count (an HPA, or KEDA's). */}}
{{- define "claude-gateway.autoscaled" -}}
{{- $root := index . 0 }}
{{- if or $root.Values.keda.enabled (index . 1).autoscaling.enabled }}true{{ end }}
{{- end }}

{{/*
Topology spread of one component: the given constraints (with the component's labelSelector filled in), else one
over zones and one over nodes, both ScheduleAnyway so a single-zone or single-node cluster still schedules.
Call with (list $ "api" .Values.api.topologySpread).
*/}}
{{- define "claude-gateway.topologySpread" -}}
{{- $root := index . 0 }}
{{- $component := index . 1 }}
{{- $spread := index . 2 }}
{{- if $spread.enabled -}}
{{- $selector := dict "matchLabels" (include "claude-gateway.componentSelectorLabels" (list $root $component) | fromYaml) }}
{{- $constraints := list }}
{{- if $spread.constraints }}
{{- range $spread.constraints }}
{{- $constraints = append $constraints (merge (deepCopy .) (dict "labelSelector" $selector)) }}
{{- end }}
{{- else }}
{{- range $key := list "topology.kubernetes.io/zone" "kubernetes.io/hostname" }}
{{- $constraints = append $constraints (dict "maxSkew" 1 "topologyKey" $key "whenUnsatisfiable" "ScheduleAnyway" "labelSelector" $selector) }}
{{- end }}
{{- end -}}
topologySpreadConstraints:
{{- toYaml $constraints | nindent 2 }}
{{- end }}
{{- end }}

{{/* A ConfigMap value: integers printed whole (Helm reads numbers as floats), everything else as a string. */}}
{{- define "claude-gateway.int" -}}
{{- int64 . | toString | quote }}
{{- end }}

{{/*
Values that contradict each other stop the render with a message that says what to change.
*/}}
{{- define "claude-gateway.validate" -}}
{{- $extraEnv := include "claude-gateway.extraEnvNames" . | fromJsonArray }}
{{- if and .Values.anthropic.apiKey .Values.anthropic.existingSecret }}
{{- fail "set anthropic.apiKey or anthropic.existingSecret, not both" }}
{{- end }}
{{- /* An install that would refuse every request must not go green: say what is missing instead. */}}
{{- if not (or (include "claude-gateway.hasAnthropicKey" .) (has "ANTHROPIC_API_KEY" $extraEnv)) }}
{{- fail "no upstream key: set anthropic.existingSecret (or anthropic.apiKey), or simulator.enabled=true to try the chart without Anthropic; otherwise every request would fail" }}
{{- end }}
{{- if not (or .Values.clientKeys.keys .Values.clientKeys.existingSecret (has "VALID_API_KEYS" $extraEnv) (has "API_KEYS_FILE" $extraEnv)) }}
{{- fail "no client keys: set clientKeys.existingSecret (or clientKeys.keys); otherwise every request would be refused with 401" }}
{{- end }}
{{- if and .Values.adminKeys.keys .Values.adminKeys.existingSecret }}
{{- fail "set adminKeys.keys or adminKeys.existingSecret, not both" }}
{{- end }}
{{- if and .Values.prices.table .Values.prices.existingConfigMap }}
{{- fail "set prices.table or prices.existingConfigMap, not both" }}
{{- end }}
{{- if and .Values.egressProxy.existingSecret (or .Values.egressProxy.httpsProxy .Values.egressProxy.httpProxy) }}
{{- fail "set egressProxy.httpsProxy/httpProxy or egressProxy.existingSecret, not both" }}
{{- end }}
{{- if and .Values.egressProxy.httpProxy (not .Values.egressProxy.httpsProxy) }}
{{- fail "egressProxy.httpProxy without egressProxy.httpsProxy: the upstream is HTTPS, so set httpsProxy" }}
{{- end }}
{{- if .Values.keda.enabled }}
{{- if or .Values.api.autoscaling.enabled .Values.worker.autoscaling.enabled }}
{{- fail "keda.enabled makes KEDA scale the API and the worker: set api.autoscaling.enabled=false and worker.autoscaling.enabled=false (an HPA and a ScaledObject on one Deployment fight over its replicas)" }}
{{- end }}
{{- if eq .Values.redis.mode "none" }}
{{- fail "keda.enabled scales to several API pods, which redis.mode=none cannot share: use redis.mode internal or external" }}
{{- end }}
{{- if not .Values.metrics.enabled }}
{{- fail "keda.enabled reads the gateway's metrics from Prometheus: it needs metrics.enabled" }}
{{- end }}
{{- range $name := list "api" "worker" }}
{{- $k := index $.Values.keda $name }}
{{- if gt (int $k.minReplicas) (int $k.maxReplicas) }}
{{- fail (printf "keda.%s.minReplicas (%d) is above keda.%s.maxReplicas (%d)" $name (int $k.minReplicas) $name (int $k.maxReplicas)) }}
{{- end }}
{{- end }}
{{- end }}
{{- if and .Values.simulator.enabled .Values.anthropic.baseUrl }}
{{- fail "simulator.enabled points ANTHROPIC_BASE_URL at the simulator: leave anthropic.baseUrl empty, or disable the simulator" }}
{{- end }}
{{- if and .Values.clientKeys.keys .Values.clientKeys.existingSecret }}
{{- fail "set clientKeys.keys or clientKeys.existingSecret, not both" }}
{{- end }}
{{- if eq .Values.redis.mode "external" }}
{{- if and .Values.redis.url .Values.redis.existingSecret }}
{{- fail "set redis.url or redis.existingSecret, not both" }}
{{- end }}
{{- if not (or .Values.redis.url .Values.redis.existingSecret) }}
{{- fail "redis.mode=external needs redis.url or redis.existingSecret" }}
{{- end }}
{{- else if or .Values.redis.url .Values.redis.existingSecret }}
{{- fail (printf "redis.url and redis.existingSecret are used only with redis.mode=external (redis.mode is %s)" .Values.redis.mode) }}
{{- end }}
{{- if eq .Values.redis.mode "none" }}
{{- if .Values.worker.enabled }}
{{- fail "redis.mode=none runs jobs inside the API process, so there is no worker: set worker.enabled=false, or use redis.mode internal or external" }}
{{- end }}
{{- if or .Values.api.autoscaling.enabled (gt (int .Values.api.replicaCount) 1) }}
{{- fail "redis.mode=none keeps rate limits and jobs in one pod's memory: set api.replicaCount=1 and api.autoscaling.enabled=false, or use redis.mode internal or external" }}
{{- end }}
{{- end }}
{{- range $name, $component := dict "api" .Values.api "worker" .Values.worker }}
{{- if and $component.autoscaling.enabled (gt (int $component.autoscaling.minReplicas) (int $component.autoscaling.maxReplicas)) }}
{{- fail (printf "%s.autoscaling.minReplicas (%d) is above %s.autoscaling.maxReplicas (%d)" $name (int $component.autoscaling.minReplicas) $name (int $component.autoscaling.maxReplicas)) }}
{{- end }}
{{- end }}
{{- if and .Values.httpRoute.enabled (not .Values.httpRoute.parentRefs) }}
{{- fail "httpRoute.enabled needs httpRoute.parentRefs: the Gateway(s) the route attaches to" }}
{{- end }}
{{- if and .Values.api.autoscaling.activeStreams.enabled (not .Values.metrics.enabled) }}
{{- fail "api.autoscaling.activeStreams needs metrics.enabled: the HPA reads claude_gateway_active_streams from /metrics" }}
{{- end }}
{{- if and (or .Values.metrics.serviceMonitor.enabled .Values.metrics.prometheusRule.enabled) (not .Values.metrics.enabled) }}
{{- fail "metrics.serviceMonitor and metrics.prometheusRule need metrics.enabled" }}
{{- end }}
{{- end }}

{{/*
The NetworkPolicy rule for the metrics port: scrapers from the monitoring namespace (networkPolicy.metrics),
plus any metricsFrom peers. Never open to everyone, whatever allowExternal says: metrics name clients and models.
*/}}
{{- define "claude-gateway.metricsIngressRule" -}}
{{- $np := .Values.networkPolicy }}
{{- $peer := dict "namespaceSelector" $np.metrics.namespaceSelector }}
{{- with $np.metrics.podSelector }}{{ $_ := set $peer "podSelector" . }}{{ end -}}
- ports:
    - port: metrics
      protocol: TCP
  from:
    {{- toYaml (prepend ($np.metricsFrom | default list) $peer) | nindent 4 }}
{{- end }}
