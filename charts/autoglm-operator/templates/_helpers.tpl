{{- define "autoglm.name" -}}autoglm-operator{{- end -}}
{{- define "autoglm.fullname" -}}{{ .Release.Name | trunc 40 | trimSuffix "-" }}-autoglm-operator{{- end -}}
{{- define "autoglm.labels" -}}
app.kubernetes.io/name: autoglm-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}
{{- define "autoglm.selector" -}}
app.kubernetes.io/name: autoglm-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
{{- define "autoglm.webhookService" -}}{{ include "autoglm.fullname" . }}-webhook{{- end -}}
{{- define "autoglm.certSecret" -}}{{ include "autoglm.fullname" . }}-webhook-tls{{- end -}}
{{- define "autoglm.policyKey" -}}{{ . | replace "files/policies/" "" | replace "/" "." }}{{- end -}}
{{- /* A policy file the OPA sidecar loads: Rego and JSON data, never a test or a README. */ -}}
{{- define "autoglm.isPolicy" -}}{{ if and (or (hasSuffix ".rego" .) (hasSuffix ".json" .)) (not (hasSuffix "_test.rego" .)) }}true{{ end }}{{- end -}}
