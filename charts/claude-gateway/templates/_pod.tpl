{{/*
What the API and worker pods share: pod-level settings, environment, checksums.
*/}}

{{/*
Checksums that roll the pods when what they read at start-up changes. The client keys file is left out on
purpose: it is mounted as a file and re-read live, so rotating a key must not restart anything.
*/}}
{{- define "claude-gateway.checksums" -}}
checksum/config: {{ include (print $.Template.BasePath "/configmap.yaml") . | sha256sum }}
checksum/secret: {{ include (print $.Template.BasePath "/secret.yaml") . | sha256sum }}
{{- end }}

{{/* Pod-level settings of the gateway's pods. Call with (list $ .Values.api). */}}
{{- define "claude-gateway.podCommon" -}}
{{- $root := index . 0 }}
{{- $component := index . 1 -}}
serviceAccountName: {{ include "claude-gateway.serviceAccountName" $root }}
automountServiceAccountToken: {{ $root.Values.serviceAccount.automountServiceAccountToken }}
enableServiceLinks: false
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml $root.Values.podSecurityContext | nindent 2 }}
{{- with $component.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with $component.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $component.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $component.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Environment of the API and worker containers. Call with (list $ "api"). */}}
{{- define "claude-gateway.env" -}}
{{- $root := index . 0 }}
{{- $component := index . 1 -}}
envFrom:
  - configMapRef:
      name: {{ include "claude-gateway.fullname" $root }}
  {{- with $root.Values.extraEnvFrom }}
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
  - name: REDIS_URL
    value: {{ printf "redis://%s:6379/0" (include "claude-gateway.redisName" $root) | quote }}
  {{- else if eq $root.Values.redis.mode "external" }}
  - name: REDIS_URL
    valueFrom:
      secretKeyRef:
        name: {{ $root.Values.redis.existingSecret | default (include "claude-gateway.secretName" $root) }}
        key: {{ if $root.Values.redis.existingSecret }}{{ $root.Values.redis.existingSecretKey }}{{ else }}REDIS_URL{{ end }}
  {{- end }}
  {{- if and (eq $component "api") (include "claude-gateway.keysSecretName" $root) }}
  - name: API_KEYS_FILE
    value: {{ printf "%s/%s" (include "claude-gateway.keysDir" $root) (include "claude-gateway.keysSecretKey" $root) | quote }}
  {{- end }}
  - name: PORT
    value: "8000"
  {{- if eq $component "api" }}
  - name: WORKERS
    value: {{ include "claude-gateway.int" $root.Values.api.workers }}
  - name: GRACEFUL_TIMEOUT_S
    value: {{ include "claude-gateway.int" $root.Values.api.gracefulTimeoutSeconds }}
  # prometheus-client's multiprocess directory, on the /tmp emptyDir: `serve` creates it and empties it at every
  # start (an emptyDir outlives a container restart), and /metrics sums every Gunicorn worker's files.
  - name: PROMETHEUS_MULTIPROC_DIR
    value: /tmp/metrics
  {{- end }}
  - name: OTEL_RESOURCE_ATTRIBUTES
    value: "k8s.namespace.name=$(POD_NAMESPACE),k8s.pod.name=$(POD_NAME),service.instance.id=$(POD_NAME)"
  {{- with $root.Values.extraEnv }}
  {{- toYaml . | nindent 2 }}
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
