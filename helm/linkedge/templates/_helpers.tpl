{{/* Names and labels, the common Kubernetes recommended set. */}}
{{- define "linkedge.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "linkedge.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "linkedge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "linkedge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "linkedge.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "linkedge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "linkedge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "linkedge.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "linkedge.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* The Secret the store URLs are read from: the user's own, or the chart's. */}}
{{- define "linkedge.storesSecretName" -}}
{{- default (printf "%s-stores" (include "linkedge.fullname" .)) .Values.stores.existingSecret.name -}}
{{- end -}}

{{/* Store URLs as env entries; `secret` overrides the Secret name (the migrations hook's own). */}}
{{- define "linkedge.storeEnv" -}}
{{- $secret := default (include "linkedge.storesSecretName" .root) .secret -}}
{{- $keys := .root.Values.stores.existingSecret.keys -}}
{{- $own := not .root.Values.stores.existingSecret.name -}}
- name: REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ ternary "REDIS_URL" $keys.redisUrl $own }}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ ternary "DATABASE_URL" $keys.databaseUrl $own }}
- name: CLICKHOUSE_URL
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ ternary "CLICKHOUSE_URL" $keys.clickhouseUrl $own }}
{{- end -}}

{{/* VISITOR_SALT_SECRET for analytics, when there is one to give. */}}
{{- define "linkedge.visitorSaltEnv" -}}
{{- if .Values.stores.existingSecret.name }}
- name: VISITOR_SALT_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ .Values.stores.existingSecret.name }}
      key: {{ .Values.stores.existingSecret.keys.visitorSaltSecret }}
      optional: true
{{- else if .Values.analytics.visitorSaltSecret }}
- name: VISITOR_SALT_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ include "linkedge.storesSecretName" . }}
      key: VISITOR_SALT_SECRET
{{- end }}
{{- end -}}

{{/*
The analytics port's shared secret, for the chart's own Secret: analytics.token when set; else the
one already in the release's Secret (so an upgrade keeps it); else a random one, made once per
render (kept in .Values so the Secret and the checksums of one render agree). `helm template`
sees no cluster, so with GitOps set analytics.token or use stores.existingSecret.
*/}}
{{- define "linkedge.analyticsToken" -}}
{{- if not .Values.analytics.token -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "linkedge.storesSecretName" .) -}}
{{- $kept := "" -}}
{{- if $existing -}}
{{- $kept = index ($existing.data | default dict) "ANALYTICS_TOKEN" | default "" | b64dec -}}
{{- end -}}
{{- $_ := set .Values.analytics "token" ($kept | default (randAlphaNum 48)) -}}
{{- end -}}
{{- .Values.analytics.token -}}
{{- end -}}

{{/* ANALYTICS_TOKEN for the edge and analytics, from the same Secret key. */}}
{{- define "linkedge.analyticsTokenEnv" -}}
- name: ANALYTICS_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "linkedge.storesSecretName" . }}
      key: {{ ternary .Values.stores.existingSecret.keys.analyticsToken "ANALYTICS_TOKEN" (ne .Values.stores.existingSecret.name "") }}
{{- end -}}

{{/* Pod annotations shared by the Deployments: config checksum, scrape hints, the user's own. */}}
{{- define "linkedge.podAnnotations" -}}
{{- $root := .root -}}
checksum/config: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
checksum/secret: {{ include (print $root.Template.BasePath "/secret.yaml") $root | sha256sum }}
{{- if $root.Values.metrics.podAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- with $root.Values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "linkedge.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
{{- end -}}

{{/* Scheduling fields of a component's values. */}}
{{- define "linkedge.placement" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* HTTP probes on a named port: startup gates the other two, readiness checks the stores. */}}
{{- define "linkedge.probes" -}}
startupProbe:
  httpGet:
    path: /healthz
    port: {{ . }}
  periodSeconds: 2
  failureThreshold: 30
livenessProbe:
  httpGet:
    path: /healthz
    port: {{ . }}
  periodSeconds: 10
  timeoutSeconds: 2
  failureThreshold: 3
readinessProbe:
  httpGet:
    path: /readyz
    port: {{ . }}
  periodSeconds: 5
  timeoutSeconds: 2
  failureThreshold: 2
{{- end -}}
