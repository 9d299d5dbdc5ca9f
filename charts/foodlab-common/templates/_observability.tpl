{{/*
Observability, all off by default. Each takes a dict:
  ctx       the chart's root context ($)
  name      the app name of the monitored pods (app.kubernetes.io/name), or "" for every
            FoodLab service of the release (app.kubernetes.io/component: service)
  path      the metrics path (/admin/metrics for the services, /metrics for the operator)

dashboards.enabled: a ConfigMap with the Grafana dashboard (dashboards/foodlab.json in the
chart, a link to docs/grafana/foodlab.json), labelled for the Grafana sidecar
(dashboards.label: dashboards.labelValue, grafana_dashboard: "1" by default). Every chart
ships the same dashboard (uid foodlab): the sidecar shows it once.
serviceMonitor.enabled / podMonitor.enabled: Prometheus Operator monitors (the
monitoring.coreos.com CRDs must be installed).
Each section may be absent (a release from before them, upgraded with --reuse-values):
off, and values.yaml's defaults for its other keys.
*/}}

{{- define "foodlab.monitorSelector" -}}
matchLabels:
  app.kubernetes.io/instance: {{ .ctx.Release.Name }}
  {{- if .name }}
  app.kubernetes.io/name: {{ .name }}
  {{- else }}
  app.kubernetes.io/component: service
  {{- end }}
{{- end }}

{{- define "foodlab.monitorEndpoint" -}}
port: http
path: {{ .path }}
interval: {{ .monitor.interval | default "15s" }}
{{- with .monitor.scrapeTimeout }}
scrapeTimeout: {{ . }}
{{- end }}
{{- end }}

{{- define "foodlab.observability" -}}
{{- $dashboards := .ctx.Values.dashboards | default dict -}}
{{- $serviceMonitor := .ctx.Values.serviceMonitor | default dict -}}
{{- $podMonitor := .ctx.Values.podMonitor | default dict -}}
{{- $labels := dict "ctx" .ctx "name" (printf "%s-observability" .ctx.Chart.Name) "component" "observability" -}}
{{- if $dashboards.enabled }}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ printf "%s-dashboard" .ctx.Chart.Name }}
  labels:
    {{- include "foodlab.labels" $labels | nindent 4 }}
    {{ $dashboards.label | default "grafana_dashboard" }}: {{ $dashboards.labelValue | default "1" | quote }}
  {{- with $dashboards.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
data:
  foodlab.json: |-
    {{- .ctx.Files.Get "dashboards/foodlab.json" | required "dashboards/foodlab.json is missing from the chart" | nindent 4 }}
{{- end }}
{{- if $serviceMonitor.enabled }}
---
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata:
  name: {{ .ctx.Chart.Name }}
  labels:
    {{- include "foodlab.labels" $labels | nindent 4 }}
    {{- with $serviceMonitor.labels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  namespaceSelector:
    matchNames: [{{ .ctx.Release.Namespace }}]
  selector:
    {{- include "foodlab.monitorSelector" . | nindent 4 }}
  endpoints:
    - {{ include "foodlab.monitorEndpoint" (dict "path" .path "monitor" $serviceMonitor) | indent 6 | trim }}
{{- end }}
{{- if $podMonitor.enabled }}
---
apiVersion: monitoring.coreos.com/v1
kind: PodMonitor
metadata:
  name: {{ .ctx.Chart.Name }}
  labels:
    {{- include "foodlab.labels" $labels | nindent 4 }}
    {{- with $podMonitor.labels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  namespaceSelector:
    matchNames: [{{ .ctx.Release.Namespace }}]
  selector:
    {{- include "foodlab.monitorSelector" . | nindent 4 }}
  podMetricsEndpoints:
    - {{ include "foodlab.monitorEndpoint" (dict "path" .path "monitor" $podMonitor) | indent 6 | trim }}
{{- end }}
{{- end }}
