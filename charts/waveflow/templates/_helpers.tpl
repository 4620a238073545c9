{{/* Chart name. */}}
{{- define "waveflow.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: the prefix of every object name. */}}
{{- define "waveflow.fullname" -}}
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

{{- define "waveflow.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "waveflow.labels" -}}
helm.sh/chart: {{ include "waveflow.chart" . }}
{{ include "waveflow.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: waveflow
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "waveflow.selectorLabels" -}}
app.kubernetes.io/name: {{ include "waveflow.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels and selector of the operator's pods. */}}
{{- define "waveflow.operator.selectorLabels" -}}
{{ include "waveflow.selectorLabels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "waveflow.operator.image" -}}
{{- printf "%s:%s" .Values.operator.image.repository (default .Chart.AppVersion .Values.operator.image.tag) }}
{{- end }}

{{- define "waveflow.job.image" -}}
{{- printf "%s:%s" .Values.queue.job.image.repository (default .Chart.AppVersion .Values.queue.job.image.tag) }}
{{- end }}

{{- define "waveflow.serviceAccountName" -}}
{{- default (printf "%s-operator" (include "waveflow.fullname" .)) .Values.serviceAccount.name }}
{{- end }}

{{- define "waveflow.jobServiceAccountName" -}}
{{- default (printf "%s-job" (include "waveflow.fullname" .)) .Values.jobServiceAccount.name }}
{{- end }}

{{- define "waveflow.queueName" -}}
{{- default (include "waveflow.fullname" .) .Values.queue.name }}
{{- end }}

{{/* Name of the Secret with the webhook signing key, or "" when webhooks are unsigned. */}}
{{- define "waveflow.webhookSecretName" -}}
{{- if .Values.queue.webhookSecret.create }}
{{- printf "%s-webhook" (include "waveflow.fullname" .) }}
{{- else }}
{{- .Values.queue.webhookSecret.existingSecret }}
{{- end }}
{{- end }}

{{/* Label matchers that pick this release's operator series in alert expressions. */}}
{{- define "waveflow.alertSelector" -}}
namespace="{{ .Release.Namespace }}"
{{- end }}

{{- define "waveflow.emulatorName" -}}
{{- printf "%s-emulator" (include "waveflow.fullname" .) }}
{{- end }}
