{{- define "earshot.name" -}}earshot-operator{{- end -}}

{{- define "earshot.labels" -}}
app.kubernetes.io/name: earshot-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "earshot.selector" -}}
app.kubernetes.io/name: earshot-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "earshot.image" -}}
{{ .image.repository }}:{{ default .appVersion .image.tag }}
{{- end -}}
