{{/*
The FoodLab services of a part chart: for every enabled entry of .Values.services, a
Service, a Deployment and, with persistence on (SQLite), a PersistentVolumeClaim, all
named after the service (order, inventory, notification, analytics). Call it from the part chart:

  {{ include "foodlab.services" (dict "ctx" $ "transport" "rest") }}

"partEnv" (optional): environment the part chart derives from its own values, for every
service ({NAME: value}); .Values.env and services.<name>.env win over it.
*/}}
{{- define "foodlab.services" -}}
{{- range $name, $svc := .ctx.Values.services }}
{{- if $svc.enabled }}
{{ include "foodlab.service" (dict "ctx" $.ctx "transport" $.transport "name" $name "svc" $svc "partEnv" ($.partEnv | default dict)) }}
{{- end }}
{{- end }}
{{- end }}

{{/* One service; takes (dict "ctx" $ "transport" "rest" "name" "inventory" "svc" .Values.services.inventory). */}}
{{- define "foodlab.service" -}}
{{- $v := .ctx.Values -}}
{{- $labels := dict "ctx" .ctx "name" .name "component" "service" -}}
{{- $onPostgres := include "foodlab.onPostgres" .ctx -}}
{{- $persistent := and (not $onPostgres) $v.persistence.enabled -}}
{{- if and (not $onPostgres) (gt (int .svc.replicas) 1) -}}
{{- fail (printf "services.%s.replicas is %v: on SQLite each pod would keep a stock and a record of processed messages of its own (oversold stock, a message reserved twice); set database.backend=postgres for more than one replica" .name .svc.replicas) -}}
{{- end -}}
{{- $waitFor := $v.waitFor | default list -}}
{{- if include "foodlab.runsPostgres" .ctx -}}
{{- $waitFor = append $waitFor "postgres:5432" -}}
{{- end -}}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ .name }}
  labels:
    {{- include "foodlab.labels" $labels | nindent 4 }}
spec:
  type: ClusterIP
  selector:
    {{- include "foodlab.selectorLabels" $labels | nindent 4 }}
  ports:
    - name: http
      port: {{ int .svc.port }}
      targetPort: http
{{- if $persistent }}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: {{ .name }}-data
  labels:
    {{- include "foodlab.labels" $labels | nindent 4 }}
spec:
  accessModes: [ReadWriteOnce]
  {{- with $v.persistence.storageClass }}
  storageClassName: {{ . }}
  {{- end }}
  resources:
    requests:
      storage: {{ $v.persistence.size }}
{{- end }}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .name }}
  labels:
    {{- include "foodlab.labels" $labels | nindent 4 }}
spec:
  replicas: {{ int .svc.replicas }}
  revisionHistoryLimit: 3
  {{- /* With a ReadWriteOnce volume the old pod must let go of it before the new one starts. */}}
  strategy:
    type: {{ ternary "Recreate" "RollingUpdate" $persistent }}
  selector:
    matchLabels:
      {{- include "foodlab.selectorLabels" $labels | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "foodlab.labels" $labels | nindent 8 }}
        {{- /* The operator scales a lab's spec.replicas past one only where the pods share a database. */}}
        foodlab.dev/database: {{ ternary "postgres" "sqlite" (eq $onPostgres "true") }}
      annotations:
        {{- include "foodlab.scrapeAnnotations" (dict "port" (int .svc.port) "path" "/admin/metrics") | nindent 8 }}
        {{- with $v.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      # The services never call the Kubernetes API, and Service env links would only add noise.
      automountServiceAccountToken: false
      enableServiceLinks: false
      securityContext:
        {{- toYaml $v.podSecurityContext | nindent 8 }}
      {{- with $v.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $waitFor }}
      initContainers:
        # Start once the brokers (and the database) take connections (bash's /dev/tcp: the image has no other client).
        - name: wait-for-brokers
          image: {{ include "foodlab.image" $.ctx }}
          imagePullPolicy: {{ $v.image.pullPolicy }}
          command:
            - /bin/bash
            - -c
            - |
              for target in "$@"; do
                until timeout 2 bash -c "exec 3<>/dev/tcp/${target%:*}/${target##*:}" 2>/dev/null; do
                  echo "waiting for $target"; sleep 2
                done
                echo "$target is up"
              done
            - wait-for-brokers
          args: {{ toJson . }}
          resources:
            {{- toYaml $v.initResources | nindent 12 }}
          securityContext:
            {{- toYaml $v.securityContext | nindent 12 }}
      {{- end }}
      containers:
        - name: {{ .name }}
          image: {{ include "foodlab.image" .ctx }}
          imagePullPolicy: {{ $v.image.pullPolicy }}
          command: [/usr/local/bin/{{ .name }}]
          ports:
            - name: http
              containerPort: {{ int .svc.port }}
          env:
            {{- include "foodlab.serviceEnv" . | nindent 12 }}
          startupProbe:
            httpGet: {path: /healthz, port: http}
            {{- toYaml $v.probes.startup | nindent 12 }}
          livenessProbe:
            httpGet: {path: /healthz, port: http}
            {{- toYaml $v.probes.liveness | nindent 12 }}
          readinessProbe:
            httpGet: {path: /readyz, port: http}
            {{- toYaml $v.probes.readiness | nindent 12 }}
          resources:
            {{- toYaml (.svc.resources | default $v.resources) | nindent 12 }}
          securityContext:
            {{- toYaml $v.securityContext | nindent 12 }}
          volumeMounts:
            - name: data
              mountPath: /data
            - name: tmp
              mountPath: /tmp
      volumes:
        # SQLite's files; on PostgreSQL an emptyDir that stays empty (the state is in the database).
        - name: data
          {{- if $persistent }}
          persistentVolumeClaim:
            claimName: {{ .name }}-data
          {{- else }}
          emptyDir:
            {{- toYaml $v.emptyDir | nindent 12 }}
          {{- end }}
        # The root filesystem is read-only; SQLite may spill temporary files here.
        - name: tmp
          emptyDir:
            sizeLimit: 64Mi
{{- end }}

{{/*
A service's environment (the binaries read all their settings from FOODLAB_* variables).
The admin token (and in the RabbitMQ part the broker's user) come from the lab's Secret.
The part's own (.partEnv), .Values.env (every service) and .Values.services.<name>.env
(this one) come last, in name order; on a clash the latter wins.
*/}}
{{- define "foodlab.serviceEnv" -}}
{{- $v := .ctx.Values -}}
- name: FOODLAB_TRANSPORT
  value: {{ .transport | quote }}
- name: FOODLAB_LISTEN
  value: {{ printf "0.0.0.0:%d" (int .svc.port) | quote }}
- name: FOODLAB_DATA_DIR
  value: /data
- name: FOODLAB_LOG_FORMAT
  value: {{ $v.logFormat | quote }}
- name: RUST_LOG
  value: {{ $v.rustLog | quote }}
{{- /* Before .Values.env, so that values there can use them: $(FOODLAB_RABBITMQ_USER). */}}
{{ include "foodlab.labSecretEnv" (dict "ctx" .ctx "key" "FOODLAB_ADMIN_TOKEN") }}
{{- if eq .transport "rabbitmq" }}
{{ include "foodlab.labSecretEnv" (dict "ctx" .ctx "key" "FOODLAB_RABBITMQ_USER") }}
{{ include "foodlab.labSecretEnv" (dict "ctx" .ctx "key" "FOODLAB_RABBITMQ_PASSWORD") }}
{{- end }}
{{- include "foodlab.databaseEnv" .ctx }}
{{- with $v.stock }}
- name: FOODLAB_STOCK
  value: {{ . | quote }}
{{- end }}
{{- with .svc.faults }}
{{- if hasKey . "delayMs" }}
- name: FOODLAB_FAULT_DELAY_MS
  value: {{ int64 .delayMs | quote }}
{{- end }}
{{- if hasKey . "failRate" }}
- name: FOODLAB_FAULT_FAIL_RATE
  value: {{ float64 .failRate | quote }}
{{- end }}
{{- if hasKey . "failStatus" }}
- name: FOODLAB_FAULT_FAIL_STATUS
  value: {{ int .failStatus | quote }}
{{- end }}
{{- end }}
{{- range $name, $value := merge (deepCopy (.svc.env | default dict)) ($v.env | default dict) (.partEnv | default dict) }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end }}
