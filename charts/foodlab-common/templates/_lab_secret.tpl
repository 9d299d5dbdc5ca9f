{{/*
The lab's Secret: the token the services' admin API (/admin/*: faults, stock, settings,
throttle, offsets) asks for, and the RabbitMQ user of the async-rabbitmq part's broker.
Its keys are the environment variables that carry them (FOODLAB_ADMIN_TOKEN,
FOODLAB_RABBITMQ_USER, FOODLAB_RABBITMQ_PASSWORD), so the operator and its workload Job
take it whole (envFrom) and the services take the keys they need.

The operator chart creates it (labSecret.create); the part charts take it by name. An
empty value is made up at random on the first install and kept on upgrades (lookup), and
`helm uninstall` keeps the Secret (resource-policy keep), so parts that run on keep
working and a reinstalled operator gets the same token.
Takes (dict "ctx" $ "namespaces" (list ...)): the same Secret in each namespace (the
operator sends one token everywhere), made up in the first (the release's), and
"create" for when labSecret is absent: a release installed before it existed, upgraded
with --reuse-values, gets the defaults of values.yaml.
*/}}
{{- define "foodlab.labSecret" -}}
{{- $ctx := .ctx -}}
{{- $s := $ctx.Values.labSecret | default dict -}}
{{- $name := include "foodlab.labSecretName" $ctx -}}
{{- if hasKey $s "create" | ternary $s.create .create }}
{{- $existing := (lookup "v1" "Secret" (first .namespaces) $name) | default dict }}
{{- $data := $existing.data | default dict }}
{{- $kept := dict }}
{{- range $key := list "FOODLAB_ADMIN_TOKEN" "FOODLAB_RABBITMQ_PASSWORD" }}
{{- $_ := set $kept $key (get $data $key | b64dec) }}
{{- end }}
{{- $token := $s.adminToken | default (get $kept "FOODLAB_ADMIN_TOKEN") | default (randAlphaNum 40) }}
{{- $password := $s.rabbitmqPassword | default (get $kept "FOODLAB_RABBITMQ_PASSWORD") | default (randAlphaNum 32) }}
{{- range $namespace := .namespaces }}
---
apiVersion: v1
kind: Secret
metadata:
  name: {{ $name }}
  namespace: {{ $namespace }}
  labels:
    {{- include "foodlab.labels" (dict "ctx" $ctx "name" "foodlab-lab" "component" "secret") | nindent 4 }}
  annotations:
    helm.sh/resource-policy: keep
type: Opaque
data:
  FOODLAB_ADMIN_TOKEN: {{ $token | b64enc | quote }}
  FOODLAB_RABBITMQ_USER: {{ $s.rabbitmqUser | default "foodlab" | b64enc | quote }}
  FOODLAB_RABBITMQ_PASSWORD: {{ $password | b64enc | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* An environment variable from one key of the lab's Secret; takes (dict "ctx" $ "key" "FOODLAB_ADMIN_TOKEN"). */}}
{{- define "foodlab.labSecretEnv" -}}
- name: {{ .key }}
  valueFrom:
    secretKeyRef:
      name: {{ include "foodlab.labSecretName" .ctx }}
      key: {{ .key }}
{{- end }}

{{/* The lab's Secret's name; takes the chart's root context ($). */}}
{{- define "foodlab.labSecretName" -}}
{{- (.Values.labSecret).name | default "foodlab-lab" -}}
{{- end }}
