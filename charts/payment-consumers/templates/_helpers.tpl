{{/*
Names, labels and the pieces every workload of this chart shares.
*/}}

{{- define "payment-consumers.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name, truncated to 63 characters (the DNS-1123 label limit). A release name that already
contains the chart name is used as is.
*/}}
{{- define "payment-consumers.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* "<fullname>-<suffix>", the suffix kept whole: the fullname part is shortened instead. */}}
{{- define "payment-consumers.componentName" -}}
{{- $suffix := .suffix }}
{{- $base := include "payment-consumers.fullname" .root | trunc (int (sub 62 (len $suffix))) | trimSuffix "-" }}
{{- printf "%s-%s" $base $suffix }}
{{- end }}

{{- define "payment-consumers.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: a stable subset, never changed after the first install. */}}
{{- define "payment-consumers.selectorLabels" -}}
app.kubernetes.io/name: {{ include "payment-consumers.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* The recommended labels (helm.sh chart best practices). Call with dict "root" $ "component" "<name>". */}}
{{- define "payment-consumers.labels" -}}
helm.sh/chart: {{ include "payment-consumers.chart" .root }}
{{ include "payment-consumers.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: {{ .root.Values.partOf }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels of objects that belong to the whole release rather than one component. */}}
{{- define "payment-consumers.releaseLabels" -}}
{{ include "payment-consumers.labels" (dict "root" . "component" "consumers") }}
{{- end }}

{{- define "payment-consumers.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "payment-consumers.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "payment-consumers.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "payment-consumers.configMapName" -}}
{{- include "payment-consumers.componentName" (dict "root" . "suffix" "config") }}
{{- end }}

{{/* Pod-level security: non-root, the runtime's default seccomp profile. */}}
{{- define "payment-consumers.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
fsGroup: {{ .Values.securityContext.runAsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Container-level security: read-only root file system, no privilege escalation, every capability dropped. */}}
{{- define "payment-consumers.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: ["ALL"]
{{- end }}

{{/* Settings (PAYMENTS_*) from the chart's ConfigMap and secrets (database URL with its password) from a Secret
the operator manages; env set on the container itself wins over both. */}}
{{- define "payment-consumers.envFrom" -}}
- configMapRef:
    name: {{ include "payment-consumers.configMapName" . }}
- secretRef:
    name: {{ required "existingSecret: name the Secret that holds PAYMENTS_DB__URL" .Values.existingSecret }}
{{- end }}

{{- define "payment-consumers.podName" -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- end }}

{{/* Pod annotations: a checksum of the settings, so a config change rolls the pods. */}}
{{- define "payment-consumers.podAnnotations" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- with .Values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Scheduling knobs shared by every pod of the chart. */}}
{{- define "payment-consumers.scheduling" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Spread a component's pods over nodes (soft), unless the values give explicit constraints. */}}
{{- define "payment-consumers.topologySpread" -}}
topologySpreadConstraints:
{{- if .root.Values.topologySpreadConstraints }}
  {{- toYaml .root.Values.topologySpreadConstraints | nindent 2 }}
{{- else }}
  - maxSkew: 1
    topologyKey: kubernetes.io/hostname
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "payment-consumers.selectorLabels" . | nindent 8 }}
{{- end }}
{{- end }}

{{/* /tmp is the only writable path (read-only root fs): multi-worker metrics and temp files live there. */}}
{{- define "payment-consumers.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpSizeLimit }}
{{- if .Values.kafkaCaSecret }}
- name: kafka-ca
  secret:
    secretName: {{ .Values.kafkaCaSecret }}
    items:
      - key: ca.crt
        path: ca.crt
{{- end }}
{{- end }}

{{- define "payment-consumers.tmpMount" -}}
- name: tmp
  mountPath: /tmp
{{- if .Values.kafkaCaSecret }}
- name: kafka-ca
  mountPath: /etc/payments/kafka-ca
  readOnly: true
{{- end }}
{{- end }}

{{/*
The consumer group and topic of each worker that consumes Kafka (services/payment_consumers/groups.py; a test
keeps this table equal to the code). retry-dispatcher and status-check-scheduler consume nothing.
*/}}
{{- define "payment-consumers.groups" -}}
enqueuer:
  group: payment-order-enqueuer-consumer-group
  topic: payment_order_created_topic
psp-call-executor:
  group: payment-order-psp-call-executor-consumer-group
  topic: payment_order_psp_call_requested_topic
result-applier:
  group: payment-order-psp-result-updated-consumer-group
  topic: payment_order_psp_result_updated_topic
status-check-executor:
  group: payment-status-check-scheduler-consumer-group
  topic: payment_status_check_scheduler_topic
refund-executor:
  group: payment-order-refund-executor-consumer-group
  topic: payment_order_refund_requested_topic
{{- end }}

{{/* A component's autoscaling: its own keys over the chart-wide `autoscaling` (deep merge). Returns YAML. */}}
{{- define "payment-consumers.autoscaling" -}}
{{- $own := deepCopy (.component.autoscaling | default dict) }}
{{- toYaml (merge $own (deepCopy .root.Values.autoscaling)) }}
{{- end }}

{{/* The consumer groups (with topics) whose lag drives a component's autoscaling, as a YAML list. */}}
{{- define "payment-consumers.lagGroups" -}}
{{- $groups := include "payment-consumers.groups" . | fromYaml }}
{{- $out := list }}
{{- range $worker := .component.workers }}
{{- if hasKey $groups $worker }}
{{- $out = append $out (get $groups $worker) }}
{{- end }}
{{- end }}
{{- toYaml (dict "groups" $out) }}
{{- end }}

{{/* Values that render fine but would deploy a broken system: refuse them at render time. */}}
{{- define "payment-consumers.validate" -}}
{{- $all := list "enqueuer" "psp-call-executor" "result-applier" "status-check-executor" "retry-dispatcher" "status-check-scheduler" "refund-executor" }}
{{- $covered := list }}
{{- range $name, $component := .Values.components }}
{{- if $component.enabled }}
{{- if not $component.workers }}
{{- fail (printf "components.%s.workers is empty" $name) }}
{{- end }}
{{- $covered = concat $covered $component.workers }}
{{- $auto := include "payment-consumers.autoscaling" (dict "root" $ "component" $component) | fromYaml }}
{{- if ne $auto.mode "none" }}
{{- if gt (int $auto.minReplicas) (int $auto.maxReplicas) }}
{{- fail (printf "components.%s: autoscaling.minReplicas (%v) is above maxReplicas (%v)" $name $auto.minReplicas $auto.maxReplicas) }}
{{- end }}
{{- end }}
{{- if or (eq $auto.mode "keda") (eq $auto.mode "external") }}
{{- $lag := include "payment-consumers.lagGroups" (dict "root" $ "component" $component) | fromYaml }}
{{- if not $lag.groups }}
{{- fail (printf "components.%s: autoscaling.mode %s needs a worker that consumes Kafka" $name $auto.mode) }}
{{- end }}
{{- if gt (int $auto.maxReplicas) (int $.Values.kafka.partitions) }}
{{- fail (printf "components.%s: autoscaling.maxReplicas (%v) exceeds kafka.partitions (%v); consumers beyond the partition count stay idle" $name $auto.maxReplicas $.Values.kafka.partitions) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- range $worker := $all }}
{{- if not (has $worker $covered) }}
{{- fail (printf "no enabled component runs the worker %s" $worker) }}
{{- end }}
{{- end }}
{{- end }}
