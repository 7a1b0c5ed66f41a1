{{/*
Names, labels and the pieces every workload of this chart shares.
*/}}

{{- define "payment-service.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name, truncated to 63 characters (the DNS-1123 label limit). A release name that already
contains the chart name is used as is.
*/}}
{{- define "payment-service.fullname" -}}
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
{{- define "payment-service.componentName" -}}
{{- $suffix := .suffix }}
{{- $base := include "payment-service.fullname" .root | trunc (int (sub 62 (len $suffix))) | trimSuffix "-" }}
{{- printf "%s-%s" $base $suffix }}
{{- end }}

{{- define "payment-service.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: a stable subset, never changed after the first install. */}}
{{- define "payment-service.selectorLabels" -}}
app.kubernetes.io/name: {{ include "payment-service.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* The recommended labels (helm.sh chart best practices). Call with dict "root" $ "component" "<name>". */}}
{{- define "payment-service.labels" -}}
helm.sh/chart: {{ include "payment-service.chart" .root }}
{{ include "payment-service.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: {{ .root.Values.partOf }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels of objects that belong to the whole release rather than one component. */}}
{{- define "payment-service.releaseLabels" -}}
{{ include "payment-service.labels" (dict "root" . "component" "payment-service") }}
{{- end }}

{{- define "payment-service.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "payment-service.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "payment-service.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "payment-service.configMapName" -}}
{{- include "payment-service.componentName" (dict "root" . "suffix" "config") }}
{{- end }}

{{/* Pod-level security: non-root, the runtime's default seccomp profile. */}}
{{- define "payment-service.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
fsGroup: {{ .Values.securityContext.runAsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Container-level security: read-only root file system, no privilege escalation, every capability dropped. */}}
{{- define "payment-service.containerSecurityContext" -}}
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
{{- define "payment-service.envFrom" -}}
- configMapRef:
    name: {{ include "payment-service.configMapName" . }}
- secretRef:
    name: {{ required "existingSecret: name the Secret that holds PAYMENTS_DB__URL" .Values.existingSecret }}
{{- end }}

{{/* Fail the render when the operator's Secret exists (lookup reads the cluster on install and upgrade; `helm
template` and a client dry run see nothing) but lacks a key the release needs: PAYMENTS_DB__URL, and the migration
key. Without it, the migration Job would wait for the key until Helm's timeout. */}}
{{- define "payment-service.secretHasKeys" -}}
{{- $name := required "existingSecret: name the Secret that holds PAYMENTS_DB__URL" .Values.existingSecret }}
{{- $secret := lookup "v1" "Secret" .Release.Namespace $name }}
{{- if $secret }}
{{- $keys := list "PAYMENTS_DB__URL" }}
{{- if .Values.migrations.enabled }}
{{- $keys = append $keys .Values.migrations.databaseUrlKey }}
{{- end }}
{{- $data := merge (dict) ($secret.data | default dict) ($secret.stringData | default dict) }}
{{- range $key := uniq $keys }}
{{- if not (hasKey $data $key) }}
{{- fail (printf "Secret %s/%s has no key %s (this release needs %s): add it, see charts/README.md, Install" $.Release.Namespace $name $key (join ", " (uniq $keys))) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{- define "payment-service.podName" -}}
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
{{- define "payment-service.podAnnotations" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- with .Values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Scheduling knobs shared by every pod of the chart. */}}
{{- define "payment-service.scheduling" -}}
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
{{- define "payment-service.topologySpread" -}}
topologySpreadConstraints:
{{- if .root.Values.topologySpreadConstraints }}
  {{- toYaml .root.Values.topologySpreadConstraints | nindent 2 }}
{{- else }}
  - maxSkew: 1
    topologyKey: kubernetes.io/hostname
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "payment-service.selectorLabels" . | nindent 8 }}
{{- end }}
{{- end }}

{{/* /tmp is the only writable path (read-only root fs): multi-worker metrics and temp files live there. */}}
{{- define "payment-service.tmpVolume" -}}
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

{{- define "payment-service.tmpMount" -}}
- name: tmp
  mountPath: /tmp
{{- if .Values.kafkaCaSecret }}
- name: kafka-ca
  mountPath: /etc/payments/kafka-ca
  readOnly: true
{{- end }}
{{- end }}

{{/* Fluent Bit's OpenSearch credentials, from the Secret named by logs.opensearch.existingSecret (if any). */}}
{{- define "payment-service.logsCredentials" -}}
{{- with .Values.logs.opensearch.existingSecret }}
env:
  - name: OPENSEARCH_USERNAME
    valueFrom:
      secretKeyRef: {name: {{ . }}, key: username}
  - name: OPENSEARCH_PASSWORD
    valueFrom:
      secretKeyRef: {name: {{ . }}, key: password}
{{- end }}
{{- end }}
