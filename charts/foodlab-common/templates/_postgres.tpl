{{/*
Where a part's services keep their state (.Values.database): each service's SQLite files
(backend sqlite, the default: one replica per service), or one PostgreSQL the part's
services share (backend postgres: stateless services, any replicas), either run by the
chart (.Values.postgres; database.url empty) or an external one (database.url).
Sections absent from a release installed before them (--reuse-values) mean sqlite.
*/}}

{{/* "true" when the part's services keep their state in PostgreSQL; takes $. */}}
{{- define "foodlab.onPostgres" -}}
{{- if eq ((.Values.database).backend | default "sqlite") "postgres" }}true{{ end -}}
{{- end }}

{{/* "true" when this chart runs the part's PostgreSQL itself; takes $. */}}
{{- define "foodlab.runsPostgres" -}}
{{- if and (include "foodlab.onPostgres" .) (not (.Values.database).url) }}true{{ end -}}
{{- end }}

{{/* The services' FOODLAB_DATABASE_URL (and the password it is made with); takes $. */}}
{{- define "foodlab.databaseEnv" -}}
{{- if include "foodlab.runsPostgres" . }}
- name: FOODLAB_POSTGRES_PASSWORD
  valueFrom:
    secretKeyRef: {name: postgres, key: POSTGRES_PASSWORD}
- name: FOODLAB_DATABASE_URL
  value: "postgres://foodlab:$(FOODLAB_POSTGRES_PASSWORD)@postgres:5432/foodlab"
{{- else if include "foodlab.onPostgres" . }}
- name: FOODLAB_DATABASE_URL
  value: {{ .Values.database.url | quote }}
{{- end }}
{{- end }}

{{/*
The part's PostgreSQL when the chart runs it: a Secret with its password (made up at
random on the first install and kept), a Service and a one-pod StatefulSet (the official
postgres image's conventions: POSTGRES_USER/PASSWORD/DB, PGDATA). Takes $.
*/}}
{{- define "foodlab.postgres" -}}
{{- if include "foodlab.runsPostgres" . }}
{{- $p := .Values.postgres -}}
{{- $labels := dict "ctx" . "name" "postgres" "component" "database" -}}
{{- $existing := (lookup "v1" "Secret" .Release.Namespace "postgres") | default dict }}
{{- $password := get ($existing.data | default dict) "POSTGRES_PASSWORD" | b64dec | default (randAlphaNum 32) }}
---
apiVersion: v1
kind: Secret
metadata:
  name: postgres
  labels:
    {{- include "foodlab.labels" $labels | nindent 4 }}
type: Opaque
data:
  POSTGRES_PASSWORD: {{ $password | b64enc | quote }}
---
apiVersion: v1
kind: Service
metadata:
  name: postgres
  labels:
    {{- include "foodlab.labels" $labels | nindent 4 }}
spec:
  type: ClusterIP
  selector:
    {{- include "foodlab.selectorLabels" $labels | nindent 4 }}
  ports:
    - name: postgres
      port: 5432
      targetPort: postgres
---
apiVersion: v1
kind: Service
metadata:
  name: postgres-headless
  labels:
    {{- include "foodlab.labels" $labels | nindent 4 }}
spec:
  clusterIP: None
  selector:
    {{- include "foodlab.selectorLabels" $labels | nindent 4 }}
  ports:
    - name: postgres
      port: 5432
      targetPort: postgres
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: postgres
  labels:
    {{- include "foodlab.labels" $labels | nindent 4 }}
spec:
  serviceName: postgres-headless
  replicas: 1
  selector:
    matchLabels:
      {{- include "foodlab.selectorLabels" $labels | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "foodlab.labels" $labels | nindent 8 }}
    spec:
      automountServiceAccountToken: false
      enableServiceLinks: false
      terminationGracePeriodSeconds: 30
      securityContext:
        {{- toYaml $p.podSecurityContext | nindent 8 }}
      containers:
        - name: postgres
          image: {{ printf "%s:%s" $p.image.repository $p.image.tag }}
          imagePullPolicy: {{ $p.image.pullPolicy }}
          env:
            - name: POSTGRES_USER
              value: foodlab
            - name: POSTGRES_DB
              value: foodlab
            - name: POSTGRES_PASSWORD
              valueFrom:
                secretKeyRef: {name: postgres, key: POSTGRES_PASSWORD}
            # A directory of the volume, not its root (which may hold lost+found).
            - name: PGDATA
              value: /var/lib/postgresql/data/pgdata
          args:
            {{- range $name, $value := $p.settings }}
            - "-c"
            - {{ printf "%s=%v" $name $value | quote }}
            {{- end }}
          lifecycle:
            # A fast shutdown, as the official image's STOPSIGNAL SIGINT: on SIGTERM
            # PostgreSQL waits for every client to leave, up to the grace period.
            preStop:
              exec:
                command: [/bin/sh, -c, "kill -INT 1"]
          ports:
            - name: postgres
              containerPort: 5432
          startupProbe:
            tcpSocket: {port: postgres}
            periodSeconds: 2
            failureThreshold: 60
          livenessProbe:
            tcpSocket: {port: postgres}
            periodSeconds: 10
            timeoutSeconds: 3
            failureThreshold: 6
          readinessProbe:
            tcpSocket: {port: postgres}
            periodSeconds: 2
            timeoutSeconds: 2
            failureThreshold: 2
          resources:
            {{- toYaml $p.resources | nindent 12 }}
          securityContext:
            {{- toYaml $p.securityContext | nindent 12 }}
          volumeMounts:
            - name: data
              mountPath: /var/lib/postgresql/data
            - name: run
              mountPath: /var/run/postgresql
            - name: tmp
              mountPath: /tmp
      volumes:
        {{- if not $p.persistence.enabled }}
        - name: data
          emptyDir:
            sizeLimit: 1Gi
        {{- end }}
        - name: run
          emptyDir:
            sizeLimit: 16Mi
        - name: tmp
          emptyDir:
            sizeLimit: 64Mi
  {{- if $p.persistence.enabled }}
  # Immutable once created: only labels that never change.
  volumeClaimTemplates:
    - metadata:
        name: data
        labels:
          {{- include "foodlab.selectorLabels" $labels | nindent 10 }}
      spec:
        accessModes: [ReadWriteOnce]
        {{- with $p.persistence.storageClass }}
        storageClassName: {{ . }}
        {{- end }}
        resources:
          requests:
            storage: {{ $p.persistence.size }}
  {{- end }}
{{- end }}
{{- end }}
