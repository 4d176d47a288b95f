{{/* The release's name for verifyq's objects, at most 63 characters. */}}
{{- define "verifyq.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "verifyq.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one component (enqueuer or worker): pass (list $ "worker"). */}}
{{- define "verifyq.selector" -}}
app.kubernetes.io/name: {{ (index . 0).Chart.Name }}
app.kubernetes.io/instance: {{ (index . 0).Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "verifyq.secretName" -}}
{{- .Values.secrets.existingSecret | default (printf "%s-secrets" (include "verifyq.fullname" .)) -}}
{{- end -}}

{{- define "verifyq.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* Queue shard names, as tasks.Queues names them. */}}
{{- define "verifyq.queues" -}}
{{- $n := int .Values.common.queueShards -}}
{{- if le $n 1 -}}
mail
{{- else -}}
{{- range $i := until $n }}mail-{{ $i }} {{ end -}}
{{- end -}}
{{- end -}}

{{/* Environment both binaries share. */}}
{{- define "verifyq.commonEnv" -}}
- name: REDIS_MODE
  value: {{ .Values.redis.mode | quote }}
- name: REDIS_URL
  valueFrom:
    secretKeyRef: {name: {{ include "verifyq.secretName" . }}, key: redis-url}
- name: CODE_SECRET
  valueFrom:
    secretKeyRef: {name: {{ include "verifyq.secretName" . }}, key: code-secret, optional: true}
- name: LOG_LEVEL
  value: {{ .Values.common.logLevel | quote }}
- name: CODE_KEY_PREFIX
  value: {{ .Values.common.codeKeyPrefix | quote }}
- name: CODE_TTL
  value: {{ .Values.common.codeTTL | quote }}
- name: PURPOSES
  value: {{ .Values.common.purposes | quote }}
- name: QUEUE_SHARDS
  value: {{ .Values.common.queueShards | quote }}
- name: SHUTDOWN_TIMEOUT
  value: "25s"
{{- with .Values.common.webhookURLs }}
- name: WEBHOOK_URLS
  value: {{ . | quote }}
{{- end }}
{{- end -}}

{{/* Extra variables of a component, sorted by name. */}}
{{- define "verifyq.extraEnv" -}}
{{- range $k, $v := . }}
- name: {{ $k }}
  value: {{ $v | toString | quote }}
{{- end -}}
{{- end -}}

{{- define "verifyq.probes" -}}
startupProbe:
  httpGet: {path: /healthz, port: admin}
  periodSeconds: 2
  failureThreshold: 30
livenessProbe:
  httpGet: {path: /healthz, port: admin}
  periodSeconds: 10
  timeoutSeconds: 3
readinessProbe:
  httpGet: {path: /readyz, port: admin}
  periodSeconds: 5
  timeoutSeconds: 3
{{- end -}}
