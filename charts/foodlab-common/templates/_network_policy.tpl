{{/*
The part's NetworkPolicy. NetworkPolicy filters by port, not by path: the services' HTTP
ports carry the business API, the read-only endpoints labs read and the admin API, so
they are open to every pod; the admin API (/admin/*) is gated by the lab's token instead
(labSecret). A port that is admin-only (RabbitMQ's management API) admits only the
operator and the workload Job, by label; a broker's client port admits FoodLab's own pods
(the part's services, its setup Job, the operator and the workload Job); a broker's
cluster ports (a broker of several nodes: Kafka's controller port, RabbitMQ's epmd and
inter-node ports) admit only the broker's own pods.
Takes (dict "ctx" $ "brokers" (list (dict "name" "rabbitmq" "ports" (list 5672) "adminPorts" (list 15672) "openPorts" (list 15692) "peerPorts" (list 4369 25672)))); the part's own PostgreSQL (database.backend=postgres) is added.
Enforced only where the cluster's network plugin enforces NetworkPolicy. Off when
networkPolicy is absent (a release from before it, upgraded with --reuse-values).
*/}}
{{- define "foodlab.networkPolicy" -}}
{{- $v := .ctx.Values -}}
{{- $brokers := .brokers -}}
{{- /* The part's own PostgreSQL is reached like a broker: by FoodLab's pods only. */ -}}
{{- if include "foodlab.runsPostgres" .ctx -}}
{{- $brokers = append $brokers (dict "name" "postgres" "ports" (list 5432)) -}}
{{- end -}}
{{- if ($v.networkPolicy).enabled }}
{{- $labels := dict "ctx" .ctx "name" "foodlab-services" "component" "service" -}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ .ctx.Chart.Name }}-services
  labels:
    {{- include "foodlab.labels" $labels | nindent 4 }}
  annotations:
    foodlab.dev/admin-api: "token-gated: /admin/* needs the lab's token (Secret {{ include "foodlab.labSecretName" .ctx }})"
spec:
  podSelector:
    matchLabels:
      app.kubernetes.io/instance: {{ .ctx.Release.Name }}
      app.kubernetes.io/component: service
  policyTypes: [Ingress]
  ingress:
    - ports:
        {{- range $name, $svc := $v.services }}
        {{- if $svc.enabled }}
        - port: {{ int $svc.port }}
          protocol: TCP
        {{- end }}
        {{- end }}
{{- range $broker := $brokers }}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ .name }}
  labels:
    {{- include "foodlab.labels" (dict "ctx" $.ctx "name" .name "component" "broker") | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "foodlab.selectorLabels" (dict "ctx" $.ctx "name" .name) | nindent 6 }}
  policyTypes: [Ingress]
  ingress:
    # Clients: FoodLab's pods in this namespace, and the broker itself.
    - from:
        - podSelector:
            matchLabels:
              app.kubernetes.io/part-of: foodlab
      ports:
        {{- range .ports }}
        - port: {{ . }}
          protocol: TCP
        {{- end }}
    {{- with .adminPorts }}
    # Admin-only: the operator and the workload Job.
    - from:
        - podSelector:
            matchExpressions:
              - key: app.kubernetes.io/name
                operator: In
                values: [foodlab-operator, foodlab-workload]
      ports:
        {{- range . }}
        - port: {{ . }}
          protocol: TCP
        {{- end }}
    {{- end }}
    {{- with .peerPorts }}
    # Cluster traffic: the broker's nodes, to each other.
    - from:
        - podSelector:
            matchLabels:
              {{- include "foodlab.selectorLabels" (dict "ctx" $.ctx "name" $broker.name) | nindent 14 }}
      ports:
        {{- range . }}
        - port: {{ . }}
          protocol: TCP
        {{- end }}
    {{- end }}
    {{- with .openPorts }}
    # Metrics, for any scraper.
    - ports:
        {{- range . }}
        - port: {{ . }}
          protocol: TCP
        {{- end }}
    {{- end }}
{{- end }}
{{- end }}
{{- end }}
