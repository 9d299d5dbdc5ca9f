{{/*
NOTES.txt of a part chart. Takes (dict "ctx" $ "transport" "rest" "example" "sync-delay").
*/}}
{{- define "foodlab.partNotes" -}}
{{- $ns := .ctx.Release.Namespace -}}
FoodLab {{ .ctx.Chart.Name }} is installed in namespace {{ $ns }}:
{{- range $name, $svc := .ctx.Values.services }}
{{- if $svc.enabled }}
  {{ printf "%-13s" $name }} Deployment + Service {{ $name }}:{{ int $svc.port }}
{{- end }}
{{- end }}

Wait until it is ready:
  kubectl -n {{ $ns }} get pods -l foodlab.dev/part={{ .ctx.Chart.Name }} -w

Run a lab (the foodlab-operator chart must be installed in namespace {{ $ns }} first,
see docs/kubernetes.md); the labs for this part are the examples with transport: {{ .transport }}:
  grep -l 'transport: {{ .transport }}' manifests/examples/*.yaml
{{- with .example }}
  kubectl -n {{ $ns }} apply -f manifests/examples/{{ . }}.yaml
  kubectl -n {{ $ns }} get foodlabs -w          # PHASE, then VERDICT
  kubectl -n {{ $ns }} describe foodlab {{ . }}  # conditions, chaos records, results, events
{{- else }}
  kubectl -n {{ $ns }} apply -f manifests/examples/<lab>.yaml
  kubectl -n {{ $ns }} get foodlabs -w          # PHASE, then VERDICT
{{- end }}

The evidence, as JSON logs:
  kubectl -n {{ $ns }} logs deploy/inventory

By hand:
  kubectl -n {{ $ns }} port-forward svc/order 8000
  curl -s -XPOST localhost:8000/order -H 'content-type: application/json' -d '{"item":"burger","quantity":2}'
{{- end }}
