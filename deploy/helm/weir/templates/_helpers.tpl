{{/* The name of the chart's objects: the release name, or "weir-<release>". */}}
{{- define "weir.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" $name .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "weir.selectorLabels" -}}
app.kubernetes.io/name: {{ default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "weir.labels" -}}
{{ include "weir.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: agent
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "weir.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "weir.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Kubelet probes come from the node's own network namespace: loopback
reaches a wildcard or loopback listener; any other address is probed there. */}}
{{- define "weir.probeHost" -}}
{{- $a := .Values.listen.address -}}
{{- if or (eq $a "0.0.0.0") (eq $a "127.0.0.1") -}}127.0.0.1
{{- else if or (eq $a "::") (eq $a "::1") -}}::1
{{- else -}}{{ $a }}
{{- end -}}
{{- end -}}

{{- define "weir.listen" -}}
{{- if contains ":" .Values.listen.address -}}
[{{ .Values.listen.address }}]:{{ .Values.listen.port }}
{{- else -}}
{{ .Values.listen.address }}:{{ .Values.listen.port }}
{{- end -}}
{{- end -}}
