{{/* Names and labels of the DNS redirector (causeway-redirector), shared by its templates. */}}

{{- define "causeway.redirectorName" -}}
{{- printf "%s-redirector" (include "causeway.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "causeway.redirectorSelector" -}}
app.kubernetes.io/name: causeway
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: redirector
{{- end -}}

{{/* The one namespace the redirector reads, or "" for every namespace. */}}
{{- define "causeway.redirectorNamespace" -}}
{{- default .Values.operator.watchNamespace .Values.redirector.watchNamespace -}}
{{- end -}}

{{- define "causeway.redirectorImage" -}}
{{- default (include "causeway.image" .) .Values.redirector.image -}}
{{- end -}}

{{/* Where the TSIG Secret is mounted. */}}
{{- define "causeway.redirectorTsigDir" -}}
/etc/causeway/tsig
{{- end -}}

{{/*
The directory file: the zones, and the exports with each TSIG key read from the mounted
Secret. A secret written inline would end up in a ConfigMap, so it is refused.
*/}}
{{- define "causeway.redirectorDirectory" -}}
{{- $redirector := .Values.redirector -}}
{{- $exports := list -}}
{{- range $i, $export := $redirector.exports -}}
{{- $export = deepCopy $export -}}
{{- $key := deepCopy (default dict $export.key) -}}
{{- if $key.secret -}}
{{- fail (printf "redirector.exports[%d].key.secret: put the TSIG secret in a Secret named by redirector.tsig.secretName, not in values (it would land in a ConfigMap)" $i) -}}
{{- end -}}
{{- if not $key.secretFile -}}
{{- if not $redirector.tsig.secretName -}}
{{- fail (printf "redirector.exports[%d]: set redirector.tsig.secretName, the Secret holding the TSIG key's base64 secret" $i) -}}
{{- end -}}
{{- $_ := set $key "secretFile" (printf "%s/%s" (include "causeway.redirectorTsigDir" $) (default $redirector.tsig.secretKey $key.secretKey)) -}}
{{- end -}}
{{- $_ := unset $key "secretKey" -}}
{{- $_ := set $export "key" $key -}}
{{- $exports = append $exports $export -}}
{{- end -}}
{{- toYaml (dict "zones" (default list $redirector.zones) "exports" $exports) -}}
{{- end -}}
