{{/*
What the chart's pods share: pod-level settings, the escape hatches, environment, checksums.

Every component (api, worker, redis, simulator) takes the same escape hatches from its own values block:
podLabels, podAnnotations, deploymentAnnotations, extraEnv, extraEnvFrom, extraVolumes, extraVolumeMounts,
initContainers, sidecars, lifecycle, hostAliases, dnsConfig, priorityClassName, runtimeClassName, nodeSelector,
tolerations, affinity. Lists of containers and volumes go through `tpl`, so they may name `{{ .Release.Name }}`.
*/}}

{{/*
Checksums that roll the pods when what they read at start-up changes. The client keys file is left out on
purpose: it is mounted as a file and re-read live, so rotating a key must not restart anything. So is the
internal Redis password: it is made once and kept (see redis-secret.yaml), and a checksum of a value that
`helm template` cannot read back would change at every render.
*/}}
{{- define "claude-gateway.checksums" -}}
checksum/config: {{ include (print $.Template.BasePath "/configmap.yaml") . | sha256sum }}
checksum/secret: {{ include (print $.Template.BasePath "/secret.yaml") . | sha256sum }}
checksum/prices: {{ include (print $.Template.BasePath "/prices-configmap.yaml") . | sha256sum }}
{{- end }}

{{/* A values list rendered through `tpl` (containers, volumes). Call with (list $ .Values.api.sidecars). */}}
{{- define "claude-gateway.tplList" -}}
{{- $root := index . 0 }}
{{- with index . 1 }}
{{- tpl (toYaml .) $root }}
{{- end }}
{{- end }}

{{/* Labels of a pod template: the component's, then its podLabels. Call with (list $ "api" .Values.api). */}}
{{- define "claude-gateway.podLabels" -}}
{{- $root := index . 0 }}
{{- include "claude-gateway.componentLabels" (list $root (index . 1)) }}
{{- with (index . 2).podLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Annotations of a Deployment. Call with the component's values. */}}
{{- define "claude-gateway.deploymentAnnotations" -}}
{{- with .deploymentAnnotations -}}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
Scheduling and pod-level escape hatches of one component, for any pod of the chart.
Call with the component's values.
*/}}
{{- define "claude-gateway.podScheduling" -}}
{{- with .priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .runtimeClassName }}
runtimeClassName: {{ . }}
{{- end }}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .hostAliases }}
hostAliases:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .dnsConfig }}
dnsConfig:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Pod-level settings of the gateway's pods. Call with (list $ .Values.api). */}}
{{- define "claude-gateway.podCommon" -}}
{{- $root := index . 0 }}
{{- $component := index . 1 -}}
serviceAccountName: {{ include "claude-gateway.serviceAccountName" $root }}
automountServiceAccountToken: {{ $root.Values.serviceAccount.automountServiceAccountToken }}
enableServiceLinks: false
{{- include "claude-gateway.imagePullSecrets" $root }}
securityContext:
  {{- toYaml $root.Values.podSecurityContext | nindent 2 }}
{{- include "claude-gateway.podScheduling" $component }}
{{- end }}

{{/* initContainers of a component, when it has any. Call with (list $ .Values.api). */}}
{{- define "claude-gateway.initContainers" -}}
{{- with (index . 1).initContainers }}
initContainers:
  {{- include "claude-gateway.tplList" (list (index $ 0) .) | nindent 2 }}
{{- end }}
{{- end }}

{{/* The component's own extraEnv after the chart-wide one: a later entry of the same name wins. */}}
{{- define "claude-gateway.extraEnv" -}}
{{- $root := index . 0 }}
{{- with concat ($root.Values.extraEnv | default list) ((index . 1).extraEnv | default list) }}
{{- tpl (toYaml .) $root }}
{{- end }}
{{- end }}

{{/* Environment of the API and worker containers. Call with (list $ "api" .Values.api). */}}
{{- define "claude-gateway.env" -}}
{{- $root := index . 0 }}
{{- $component := index . 1 }}
{{- $values := index . 2 -}}
envFrom:
  - configMapRef:
      name: {{ include "claude-gateway.fullname" $root }}
  {{- with concat ($root.Values.extraEnvFrom | default list) ($values.extraEnvFrom | default list) }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
env:
  {{- include "claude-gateway.podEnv" $root | nindent 2 }}
  {{- if include "claude-gateway.hasAnthropicKey" $root }}
  - name: ANTHROPIC_API_KEY
    valueFrom:
      secretKeyRef:
        name: {{ include "claude-gateway.anthropicSecretName" $root }}
        key: {{ include "claude-gateway.anthropicSecretKey" $root }}
  {{- end }}
  {{- if eq $root.Values.redis.mode "internal" }}
  # The password from its Secret, then the URL composed from it by the kubelet: the password is never written
  # into the ConfigMap or the pod spec.
  - name: INTERNAL_REDIS_PASSWORD
    valueFrom:
      secretKeyRef:
        name: {{ include "claude-gateway.redisAuthSecretName" $root }}
        key: {{ include "claude-gateway.redisAuthSecretKey" $root }}
  - name: REDIS_URL
    value: {{ printf "redis://:$(INTERNAL_REDIS_PASSWORD)@%s:6379/0" (include "claude-gateway.redisName" $root) | quote }}
  {{- else if eq $root.Values.redis.mode "external" }}
  - name: REDIS_URL
    valueFrom:
      secretKeyRef:
        name: {{ $root.Values.redis.existingSecret | default (include "claude-gateway.secretName" $root) }}
        key: {{ if $root.Values.redis.existingSecret }}{{ $root.Values.redis.existingSecretKey }}{{ else }}REDIS_URL{{ end }}
  {{- end }}
  {{- if include "claude-gateway.hasEgressProxy" $root }}
  {{- $proxy := $root.Values.egressProxy }}
  - name: HTTPS_PROXY
    valueFrom:
      secretKeyRef:
        name: {{ $proxy.existingSecret | default (include "claude-gateway.secretName" $root) }}
        key: HTTPS_PROXY
  {{- if or $proxy.httpProxy $proxy.existingSecret }}
  - name: HTTP_PROXY
    valueFrom:
      secretKeyRef:
        name: {{ $proxy.existingSecret | default (include "claude-gateway.secretName" $root) }}
        key: HTTP_PROXY
        {{- if $proxy.existingSecret }}
        optional: true
        {{- end }}
  {{- end }}
  {{- end }}
  {{- if eq $component "api" }}
  {{- if include "claude-gateway.keysSecretName" $root }}
  - name: API_KEYS_FILE
    value: {{ printf "%s/%s" (include "claude-gateway.keysDir" $root) (include "claude-gateway.keysSecretKey" $root) | quote }}
  {{- end }}
  {{- if include "claude-gateway.hasAdminKeys" $root }}
  - name: ADMIN_API_KEYS
    valueFrom:
      secretKeyRef:
        name: {{ $root.Values.adminKeys.existingSecret | default (include "claude-gateway.secretName" $root) }}
        key: {{ if $root.Values.adminKeys.existingSecret }}{{ $root.Values.adminKeys.existingSecretKey }}{{ else }}ADMIN_API_KEYS{{ end }}
  {{- end }}
  {{- end }}
  {{- if include "claude-gateway.pricesConfigMapName" $root }}
  - name: PRICES_FILE
    value: {{ printf "%s/%s" (include "claude-gateway.pricesDir" $root) (include "claude-gateway.pricesKey" $root) | quote }}
  {{- end }}
  {{- if eq $component "api" }}
  - name: PORT
    value: "8000"
  - name: WORKERS
    value: {{ include "claude-gateway.int" $root.Values.api.workers }}
  - name: GRACEFUL_TIMEOUT_S
    value: {{ include "claude-gateway.int" $root.Values.api.gracefulTimeoutSeconds }}
  # prometheus-client's multiprocess directory, on the /tmp emptyDir: `serve` creates it and empties it at every
  # start (an emptyDir outlives a container restart), and /metrics sums every Gunicorn worker's files.
  - name: PROMETHEUS_MULTIPROC_DIR
    value: /tmp/metrics
  {{- else }}
  # The liveness probe's evidence: the worker's loop touches this file on the /tmp emptyDir, and
  # `claude-gateway worker --check` reads its age. Local, so a Redis outage never restarts a worker.
  - name: WORKER_HEARTBEAT_FILE
    value: {{ $root.Values.worker.heartbeatFile | quote }}
  {{- end }}
  - name: OTEL_RESOURCE_ATTRIBUTES
    value: "k8s.namespace.name=$(POD_NAMESPACE),k8s.pod.name=$(POD_NAME),service.instance.id=$(POD_NAME)"
  {{- with include "claude-gateway.extraEnv" (list $root $values) }}
  {{- . | nindent 2 }}
  {{- end }}
{{- end }}

{{/* The downward-API variables OTEL_RESOURCE_ATTRIBUTES refers to; they must come before it. */}}
{{- define "claude-gateway.podEnv" -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- end }}

{{/*
Volume mounts every gateway container shares after /tmp: the price table, then the component's extraVolumeMounts.
Call with (list $ .Values.api).
*/}}
{{- define "claude-gateway.sharedVolumeMounts" -}}
{{- $root := index . 0 }}
{{- if include "claude-gateway.pricesConfigMapName" $root }}
- name: prices
  mountPath: {{ include "claude-gateway.pricesDir" $root }}
  readOnly: true
{{- end }}
{{- with (index . 1).extraVolumeMounts }}
{{ tpl (toYaml .) $root }}
{{- end }}
{{- end }}

{{/* Volumes matching sharedVolumeMounts. Call with (list $ .Values.api). */}}
{{- define "claude-gateway.sharedVolumes" -}}
{{- $root := index . 0 }}
{{- with include "claude-gateway.pricesConfigMapName" $root }}
- name: prices
  configMap:
    name: {{ . }}
    items:
      - key: {{ include "claude-gateway.pricesKey" $root }}
        path: {{ include "claude-gateway.pricesKey" $root }}
{{- end }}
{{- with (index . 1).extraVolumes }}
{{ tpl (toYaml .) $root }}
{{- end }}
{{- end }}

{{/* Egress of the gateway's pods when networkPolicy.egress.enabled. */}}
{{- define "claude-gateway.egressRules" -}}
# DNS, wherever the cluster runs it.
- ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
{{- with .Values.networkPolicy.egress.ports }}
# The upstream API (HTTPS).
- ports:
    {{- range . }}
    - port: {{ . }}
      protocol: TCP
    {{- end }}
{{- end }}
{{- if eq .Values.redis.mode "internal" }}
- to:
    - podSelector:
        matchLabels:
          {{- include "claude-gateway.componentSelectorLabels" (list . "redis") | nindent 10 }}
  ports:
    - port: 6379
      protocol: TCP
{{- end }}
{{- if .Values.simulator.enabled }}
- to:
    - podSelector:
        matchLabels:
          {{- include "claude-gateway.componentSelectorLabels" (list . "simulator") | nindent 10 }}
  ports:
    - port: {{ .Values.simulator.port }}
      protocol: TCP
{{- end }}
{{- with .Values.networkPolicy.egress.extraRules }}
{{ toYaml . }}
{{- end }}
{{- end }}
