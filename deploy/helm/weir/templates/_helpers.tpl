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

{{/* ---- weir relay ---- */}}

{{/* The relay's pods: a name of their own, so that the DaemonSet's
selector, the agents' Services and NetworkPolicy never select them. */}}
{{- define "weir.relay.selectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-relay" (default .Chart.Name .Values.nameOverride) | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "weir.relay.labels" -}}
{{ include "weir.relay.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: relay
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* <fullname>-SUFFIX, within the 63 characters of a DNS label. */}}
{{- define "weir.suffixed" -}}
{{- $suffix := printf "-%s" .suffix -}}
{{- printf "%s%s" (include "weir.fullname" .top | trunc (int (sub 63 (len $suffix))) | trimSuffix "-") $suffix -}}
{{- end -}}

{{- define "weir.relay.fullname" -}}
{{- include "weir.suffixed" (dict "top" . "suffix" "relay") -}}
{{- end -}}

{{/* The headless Service over the agents' relay listeners. */}}
{{- define "weir.agents.serviceName" -}}
{{- include "weir.suffixed" (dict "top" . "suffix" "agents") -}}
{{- end -}}

{{- define "weir.relay.serviceAccountName" -}}
{{- if .Values.relay.serviceAccount.create -}}
{{- default (include "weir.relay.fullname" .) .Values.relay.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.relay.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The Secrets (kubernetes.io/tls plus ca.crt) of the agents' server
certificate, the relay's client certificate and the chart's CA. */}}
{{- define "weir.agents.tlsSecret" -}}
{{- include "weir.suffixed" (dict "top" . "suffix" "agent-tls") -}}
{{- end -}}
{{- define "weir.relay.tlsSecret" -}}
{{- include "weir.suffixed" (dict "top" . "suffix" "relay-tls") -}}
{{- end -}}
{{- define "weir.relay.caSecret" -}}
{{- include "weir.suffixed" (dict "top" . "suffix" "relay-ca") -}}
{{- end -}}

{{- define "weir.relay.listen" -}}
{{- if contains ":" .Values.relay.address -}}
[{{ .Values.relay.address }}]:{{ .Values.relay.port }}
{{- else -}}
{{ .Values.relay.address }}:{{ .Values.relay.port }}
{{- end -}}
{{- end -}}

{{- define "weir.relay.agentListen" -}}
{{- $l := .Values.relay.agentListen -}}
{{- if contains ":" $l.address -}}
[{{ $l.address }}]:{{ $l.port }}
{{- else -}}
{{ $l.address }}:{{ $l.port }}
{{- end -}}
{{- end -}}

{{/* The chart's certificates (certManager off), computed once per render
and shared by the Secrets and the pods' checksum annotations: the CA and
each certificate of the previous install are kept (lookup); a missing one
is issued, and an upgrade re-issues one within renewBeforeDays of its
expiry (weir.dev/expires, Unix seconds), the CA too. A new CA re-issues
both certificates. Returns
nothing; sets .weirRelayCerts: {ca, agent, relay}, each a dict of
base64 data and expires. */}}
{{- define "weir.relay.certs" -}}
{{- if not (hasKey . "weirRelayCerts") -}}
{{- $ns := .Release.Namespace -}}
{{- $tls := .Values.relay.tls -}}
{{- if ge (int $tls.renewBeforeDays) (int $tls.validityDays) -}}
{{- fail "relay.tls.renewBeforeDays must be less than relay.tls.validityDays (else every upgrade re-issues the certificates)" -}}
{{- end -}}
{{- $now := now | unixEpoch | int64 -}}
{{- $validFor := mul $tls.validityDays 86400 | int64 -}}
{{- $renewAt := mul $tls.renewBeforeDays 86400 | int64 -}}
{{- $expires := add $now $validFor | toString -}}
{{- $ca := dict -}}
{{- $old := lookup "v1" "Secret" $ns (include "weir.relay.caSecret" .) -}}
{{- $caWas := "" -}}
{{- if $old -}}{{- $caWas = dig "metadata" "annotations" "weir.dev/expires" "" $old -}}{{- end -}}
{{- if and $old $old.data (index $old.data "tls.crt") (index $old.data "tls.key") (or (not $caWas) (gt (sub (int64 $caWas) $now) $renewAt)) -}}
{{- $ca = dict "crt" (index $old.data "tls.crt") "key" (index $old.data "tls.key") "expires" $caWas "fresh" false -}}
{{- else -}}
{{- /* The CA outlives its certificates: ten validity periods. */ -}}
{{- $new := genCA "weir relay CA" (mul $tls.validityDays 10 | int) -}}
{{- $ca = dict "crt" ($new.Cert | b64enc) "key" ($new.Key | b64enc) "expires" (add $now (mul $validFor 10) | toString) "fresh" true -}}
{{- end -}}
{{- $signer := buildCustomCert $ca.crt $ca.key -}}
{{- $certs := dict "ca" $ca -}}
{{- range $which, $san := dict "agent" "*.agents.weir.internal" "relay" "relay.weir.internal" -}}
{{- $secret := include (printf "weir.%s.tlsSecret" (ternary "agents" "relay" (eq $which "agent"))) $ -}}
{{- $old := lookup "v1" "Secret" $ns $secret -}}
{{- $keep := false -}}
{{- if and (not $ca.fresh) $old $old.data (index $old.data "tls.crt") (index $old.data "tls.key") (eq (index $old.data "ca.crt" | default "") $ca.crt) -}}
{{- $was := dig "metadata" "annotations" "weir.dev/expires" "" $old -}}
{{- if and $was (gt (sub (int64 $was) $now) $renewAt) -}}
{{- $keep = true -}}
{{- $_ := set $certs $which (dict "crt" (index $old.data "tls.crt") "key" (index $old.data "tls.key") "expires" $was) -}}
{{- end -}}
{{- end -}}
{{- if not $keep -}}
{{- $cert := genSignedCert $san nil (list $san) (int $tls.validityDays) $signer -}}
{{- $_ := set $certs $which (dict "crt" ($cert.Cert | b64enc) "key" ($cert.Key | b64enc) "expires" $expires) -}}
{{- end -}}
{{- end -}}
{{- $_ := set . "weirRelayCerts" $certs -}}
{{- end -}}
{{- end -}}

{{/* A checksum of the certificates the pods mount, so that pods roll when
an upgrade re-issues them. */}}
{{- define "weir.relay.certsChecksum" -}}
{{- if .Values.certManager.enabled -}}
{{- /* cert-manager renews the Secrets in place; nothing to roll. */ -}}
{{- else -}}
{{- include "weir.relay.certs" . -}}
{{- $c := .weirRelayCerts -}}
{{- printf "%s%s%s" $c.ca.crt $c.agent.crt $c.relay.crt | sha256sum -}}
{{- end -}}
{{- end -}}
