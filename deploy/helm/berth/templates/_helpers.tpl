{{/*
Names. The full name is the release name when it contains the chart name ("berth"), else
"<release>-berth"; each service's objects are "<fullname>-<service>".
*/}}
{{- define "berth.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "berth.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* "<fullname>-<service>"; call with (dict "root" $ "component" "watcher"). */}}
{{- define "berth.componentName" -}}
{{- printf "%s-%s" (include "berth.fullname" .root) .component }}
{{- end }}

{{- define "berth.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object; call with (dict "root" $ "component" "watcher"). */}}
{{- define "berth.labels" -}}
helm.sh/chart: {{ include "berth.chart" .root }}
{{ include "berth.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: berth
{{- with .root.Values.additionalLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "berth.selectorLabels" -}}
app.kubernetes.io/name: {{ include "berth.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- if .component }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- end }}

{{/* The ServiceAccount a service runs as. The actuator's is Karpenter's top-level
`serviceAccount` key (it is the one calling AWS). */}}
{{- define "berth.serviceAccountName" -}}
{{- $sa := ternary .root.Values.serviceAccount (index .root.Values .component).serviceAccount (eq .component "actuator") }}
{{- if $sa.create }}
{{- default (include "berth.componentName" .) $sa.name }}
{{- else }}
{{- required (printf "%s: serviceAccount.create is false, so its name must be given" .component) $sa.name }}
{{- end }}
{{- end }}

{{- define "berth.image" -}}
{{- $image := (index .root.Values .component).image }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository (default .root.Chart.AppVersion $image.tag) }}
{{- end }}
{{- end }}

{{/* A host:port to listen on. */}}
{{- define "berth.listen" -}}
{{- printf "%s:%d" .root.Values.listenHost (int .port) }}
{{- end }}

{{/* The in-cluster URL of a gRPC service (scheduler or actuator). */}}
{{- define "berth.grpcURL" -}}
{{- $scheme := ternary "https" "http" .root.Values.tls.enabled }}
{{- printf "%s://%s.%s.svc:%d" $scheme (include "berth.componentName" .) .root.Release.Namespace (int (index .root.Values .component).ports.grpc) }}
{{- end }}

{{/* The Secret holding the services' certificate (tls.crt, tls.key, ca.crt). */}}
{{- define "berth.tlsSecretName" -}}
{{- if .Values.tls.certManager.enabled }}
{{- printf "%s-tls" (include "berth.fullname" .) }}
{{- else }}
{{- required "tls.enabled: give tls.secretName (an existing Secret) or enable tls.certManager" .Values.tls.secretName }}
{{- end }}
{{- end }}

{{/* Karpenter's settings.featureGates as the scheduler's BERTH_FEATURE_GATES. */}}
{{- define "berth.featureGates" -}}
{{- $g := .Values.settings.featureGates }}
{{- $parts := list }}
{{- range $key := list "spotToSpotConsolidation" "nodeRepair" "reservedCapacity" "staticCapacity" "nodeOverlay" }}
{{- $parts = append $parts (printf "%s=%t" (title $key) (index $g $key | default false)) }}
{{- end }}
{{- join "," $parts }}
{{- end }}

{{/* The AWS region: actuator.region, else the region of an EKS endpoint
(https://XXXX.gr7.<region>.eks.amazonaws.com), else empty (the actuator's default). */}}
{{- define "berth.region" -}}
{{- if .Values.actuator.region }}
{{- .Values.actuator.region }}
{{- else }}
{{- $m := regexFind "\\.[a-z]{2}(-[a-z]+)+-[0-9]+\\.eks\\.amazonaws\\.com" .Values.settings.clusterEndpoint }}
{{- if $m }}
{{- $m | trimPrefix "." | trimSuffix ".eks.amazonaws.com" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Environment every service gets: logs, listen addresses, leader election, pod identity.
Call with (dict "root" $ "component" "watcher"). */}}
{{- define "berth.commonEnv" -}}
{{- $v := index .root.Values .component }}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: BERTH_LOG
  value: {{ .root.Values.logLevel | quote }}
- name: BERTH_LOG_FORMAT
  value: {{ .root.Values.logFormat | quote }}
- name: BERTH_ADMIN_ADDR
  value: {{ include "berth.listen" (dict "root" .root "port" $v.ports.admin) | quote }}
{{- if $v.ports.grpc }}
- name: BERTH_GRPC_ADDR
  value: {{ include "berth.listen" (dict "root" .root "port" $v.ports.grpc) | quote }}
{{- end }}
- name: BERTH_LEADER_ELECT
  value: {{ .root.Values.leaderElection.enabled | toString | quote }}
- name: BERTH_LEADER_ELECTION_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: BERTH_LEADER_ELECTION_LEASE
  value: {{ $v.leaderElection.lease | quote }}
{{- end }}

{{/* Pod-level fields every Deployment shares. */}}
{{- define "berth.podScheduling" -}}
{{- $v := index .root.Values .component }}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with $v.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.topologySpreadConstraints }}
{{- $constraints := list }}
{{- range . }}
{{- $tsc := deepCopy . }}
{{- if not $tsc.labelSelector }}
{{- $_ := set $tsc "labelSelector" (dict "matchLabels" (include "berth.selectorLabels" $ | fromYaml)) }}
{{- end }}
{{- $constraints = append $constraints $tsc }}
{{- end }}
topologySpreadConstraints:
  {{- toYaml $constraints | nindent 2 }}
{{- end }}
{{- with $v.podSecurityContext }}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end }}
terminationGracePeriodSeconds: {{ $v.terminationGracePeriodSeconds }}
{{- end }}

{{/* Liveness: /healthz on the admin port. */}}
{{- define "berth.livenessProbe" -}}
livenessProbe:
  httpGet:
    path: /healthz
    port: admin
  initialDelaySeconds: 5
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 3
{{- end }}

{{/* Readiness: /readyz on the admin port. A standby replica is ready (so rollouts and
PodDisruptionBudgets count it) but listens on no gRPC port until it leads (service/src/leader.rs):
a client's connection through the Service to a standby is refused, and the client reconnects
(a new connection, a new endpoint) until it reaches the leader. */}}
{{- define "berth.readinessProbe" -}}
readinessProbe:
  httpGet:
    path: /readyz
    port: admin
  periodSeconds: 2
  timeoutSeconds: 2
  failureThreshold: 2
  successThreshold: 1
{{- end }}

{{/* Container ports. */}}
{{- define "berth.containerPorts" -}}
{{- $v := index .root.Values .component }}
ports:
  {{- if $v.ports.grpc }}
  - name: grpc
    containerPort: {{ $v.ports.grpc }}
    protocol: TCP
  {{- end }}
  - name: admin
    containerPort: {{ $v.ports.admin }}
    protocol: TCP
{{- end }}

{{/* Volumes: a writable /tmp (the root filesystem is read-only) and the TLS Secret. */}}
{{- define "berth.volumes" -}}
volumes:
  - name: tmp
    emptyDir: {}
  {{- if .root.Values.tls.enabled }}
  - name: tls
    secret:
      secretName: {{ include "berth.tlsSecretName" .root }}
  {{- end }}
  {{- with .extra }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}

{{- define "berth.volumeMounts" -}}
volumeMounts:
  - name: tmp
    mountPath: /tmp
  {{- if .root.Values.tls.enabled }}
  - name: tls
    mountPath: /etc/berth/tls
    readOnly: true
  {{- end }}
  {{- with .extra }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}

{{/* TLS env of a gRPC server (scheduler, actuator). */}}
{{- define "berth.serverTlsEnv" -}}
{{- if .Values.tls.enabled }}
- name: BERTH_TLS_CERT
  value: /etc/berth/tls/tls.crt
- name: BERTH_TLS_KEY
  value: /etc/berth/tls/tls.key
{{- if .Values.tls.mutual }}
- name: BERTH_TLS_CLIENT_CA
  value: /etc/berth/tls/ca.crt
{{- end }}
{{- end }}
{{- end }}

{{/* TLS env of a gRPC client (watcher, scheduler). */}}
{{- define "berth.clientTlsEnv" -}}
{{- if .Values.tls.enabled }}
- name: BERTH_TLS_CA
  value: /etc/berth/tls/ca.crt
- name: BERTH_TLS_CLIENT_CERT
  value: /etc/berth/tls/tls.crt
- name: BERTH_TLS_CLIENT_KEY
  value: /etc/berth/tls/tls.key
{{- end }}
{{- end }}
