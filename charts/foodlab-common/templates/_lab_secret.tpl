{{/*
The lab's Secret: the token the services' admin API (/admin/*: faults, stock, settings,
throttle, offsets) asks for, and the RabbitMQ user of the async-rabbitmq part's broker.
Its keys are the environment variables that carry them (FOODLAB_ADMIN_TOKEN,
FOODLAB_RABBITMQ_USER, FOODLAB_RABBITMQ_PASSWORD), so the operator and its workload Job
take it whole (envFrom) and the services take the keys they need.

The operator chart creates it (labSecret.create); the part charts take it by name. An
empty value is made up at random on the first install, in each namespace on its own (the
services and Jobs of one namespace cannot call another's admin API), and kept on upgrades
(lookup); `helm uninstall` keeps the Secret (resource-policy keep), so parts that run on
keep working and a reinstalled operator gets the same tokens. A labSecret.adminToken that
is set is the token of every namespace.
Takes (dict "ctx" $ "namespaces" (list ...)): the Secret in each namespace; "create" for
when labSecret is absent (a release installed before it existed, upgraded with
--reuse-values, gets the defaults of values.yaml); and "tokens": the name of a Secret
made in the first namespace (the release's) that holds every namespace's token as JSON,
FOODLAB_ADMIN_TOKENS (the operator's, which calls every namespace's services).
*/}}
{{- define "foodlab.labSecret" -}}
{{- $ctx := .ctx -}}
{{- $s := $ctx.Values.labSecret | default dict -}}
{{- $name := include "foodlab.labSecretName" $ctx -}}
{{- if hasKey $s "create" | ternary $s.create .create }}
{{- $tokens := dict }}
{{- range $namespace := .namespaces }}
{{- $existing := (lookup "v1" "Secret" $namespace $name) | default dict }}
{{- $data := $existing.data | default dict }}
{{- $token := $s.adminToken | default (get $data "FOODLAB_ADMIN_TOKEN" | b64dec) | default (randAlphaNum 40) }}
{{- $password := $s.rabbitmqPassword | default (get $data "FOODLAB_RABBITMQ_PASSWORD" | b64dec) | default (randAlphaNum 32) }}
{{- $_ := set $tokens $namespace $token }}
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
{{- with .tokens }}
---
apiVersion: v1
kind: Secret
metadata:
  name: {{ . }}
  namespace: {{ first $.namespaces }}
  labels:
    {{- include "foodlab.labels" (dict "ctx" $ctx "name" "foodlab-operator" "component" "secret") | nindent 4 }}
type: Opaque
data:
  FOODLAB_ADMIN_TOKENS: {{ toJson $tokens | b64enc | quote }}
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

{{/* The operator's Secret of every namespace's token; takes the chart's root context ($). */}}
{{- define "foodlab.adminTokensName" -}}
{{- printf "%s-tokens" (include "foodlab.labSecretName" .) -}}
{{- end }}

{{/* The lab's Secret's name; takes the chart's root context ($). */}}
{{- define "foodlab.labSecretName" -}}
{{- (.Values.labSecret).name | default "foodlab-lab" -}}
{{- end }}
