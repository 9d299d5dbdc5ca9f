{{/* The workload Job's ServiceAccount; values.yaml's default where workload is absent (a release from before it, upgraded with --reuse-values). */}}
{{- define "foodlab.workloadServiceAccount" -}}
{{- (.Values.workload).serviceAccount | default "foodlab-workload" -}}
{{- end }}
