{{/* Names and labels shared by the templates. */}}

{{- define "causeway.fullname" -}}
{{- printf "%s-causeway" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "causeway.gatewayCsrRole" -}}
{{- printf "%s-gateway-csr" (include "causeway.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "causeway.operatorName" -}}
{{- printf "%s-operator" (include "causeway.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "causeway.serviceAccountName" -}}
{{- if .Values.serviceAccount.name -}}
{{- .Values.serviceAccount.name -}}
{{- else -}}
{{- include "causeway.operatorName" . -}}
{{- end -}}
{{- end -}}

{{- define "causeway.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "causeway.gatewayImage" -}}
{{- default (include "causeway.image" .) .Values.gateways.image -}}
{{- end -}}

{{- define "causeway.labels" -}}
app.kubernetes.io/name: causeway
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "causeway.operatorSelector" -}}
app.kubernetes.io/name: causeway
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}
