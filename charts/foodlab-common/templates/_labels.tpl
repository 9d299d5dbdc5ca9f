{{/*
Labels. Every template here takes a dict:
  ctx        the chart's root context ($)
  name       the object's app name (order, inventory, rabbitmq, foodlab-operator, ...)
  component  service | broker | operator | setup
*/}}

{{/* The labels a Deployment/StatefulSet selects its pods by (immutable: keep them few). */}}
{{- define "foodlab.selectorLabels" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- end }}

{{/*
Labels of every object. FoodLab part charts (sync-rest, async-rabbitmq, streaming-kafka)
also get foodlab.dev/part: <chart name>, so `kubectl get all -l foodlab.dev/part=sync-rest`
lists one part.
*/}}
{{- define "foodlab.labels" -}}
{{ include "foodlab.selectorLabels" . }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/part-of: foodlab
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version }}
{{- if has .ctx.Chart.Name (list "sync-rest" "async-rabbitmq" "streaming-kafka") }}
foodlab.dev/part: {{ .ctx.Chart.Name }}
{{- end }}
{{- end }}

{{/* "repository:tag" of the FoodLab image (every FoodLab binary is in it). Takes the root context. */}}
{{- define "foodlab.image" -}}
{{ printf "%s:%s" .Values.image.repository .Values.image.tag }}
{{- end }}

{{/* Prometheus scrape annotations; takes (dict "port" 8000 "path" "/admin/metrics"). */}}
{{- define "foodlab.scrapeAnnotations" -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: {{ .path | quote }}
{{- end }}
