{{- define "shoal.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "shoal.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "shoal.name" .) | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "shoal.labels" -}}
app.kubernetes.io/name: {{ include "shoal.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* selector labels of one component: (dict "ctx" $ "component" "agent") */}}
{{- define "shoal.selector" -}}
app.kubernetes.io/name: {{ include "shoal.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "shoal.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "shoal.secretName" -}}
{{- .Values.secrets.existingSecret | default (printf "%s-secrets" (include "shoal.fullname" .)) -}}
{{- end -}}

{{- define "shoal.clusterSecretName" -}}
{{- .Values.cluster.existingSecret | default (printf "%s-secrets" (include "shoal.fullname" .)) -}}
{{- end -}}

{{- define "shoal.clusterSecretKey" -}}
{{- if .Values.cluster.existingSecret }}{{ .Values.cluster.existingSecretKey }}{{ else }}cluster-secret{{ end -}}
{{- end -}}

{{- define "shoal.svcHost" -}}
{{- printf "%s-%s.%s.svc.cluster.local" (include "shoal.fullname" .ctx) .component .ctx.Release.Namespace -}}
{{- end -}}

{{- define "shoal.registryURL" -}}
http://{{ include "shoal.svcHost" (dict "ctx" . "component" "registry") }}:{{ .Values.registry.service.port }}
{{- end -}}

{{- define "shoal.registryHost" -}}
{{- .Values.registry.host | default (printf "%s:%v" (include "shoal.svcHost" (dict "ctx" . "component" "registry")) .Values.registry.service.port) -}}
{{- end -}}

{{/* The tracker Service's base URL: preheat reads its swarm listing there. */}}
{{- define "shoal.trackerBaseURL" -}}
http://{{ include "shoal.svcHost" (dict "ctx" . "component" "tracker") }}:{{ .Values.tracker.service.port }}
{{- end -}}

{{- define "shoal.trackerURL" -}}
{{ include "shoal.trackerBaseURL" . }}/announce
{{- end -}}

{{- define "shoal.preheatURL" -}}
http://{{ include "shoal.svcHost" (dict "ctx" . "component" "preheat") }}:{{ .Values.preheat.service.port }}
{{- end -}}

{{/* Redis addresses the tracker and preheat use; empty list: in-memory. */}}
{{- define "shoal.redisAddrs" -}}
{{- if .Values.redis.addrs -}}
{{ toJson .Values.redis.addrs }}
{{- else if .Values.redis.bundled.enabled -}}
{{ list (printf "%s-redis:6379" (include "shoal.fullname" .)) | toJson }}
{{- else -}}
[]
{{- end -}}
{{- end -}}

{{- define "shoal.redisPasswordEnv" -}}
{{- if and .Values.redis.existingSecret .Values.redis.addrs }}
- name: SHOAL_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.existingSecret }}
      key: {{ .Values.redis.existingSecretKey }}
{{- end }}
{{- end -}}

{{/* env entry from the Shoal Secret: (dict "ctx" $ "name" "SHOAL_X" "key" "k") */}}
{{- define "shoal.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ include "shoal.secretName" .ctx }}
      key: {{ .key }}
{{- end -}}

{{/* The join secret (and the previous one while rotating), one Secret for
every component. */}}
{{- define "shoal.clusterSecretEnv" -}}
- name: SHOAL_CLUSTER_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ include "shoal.clusterSecretName" . }}
      key: {{ include "shoal.clusterSecretKey" . }}
{{- if .Values.cluster.rotating }}
- name: SHOAL_CLUSTER_SECRET_PREVIOUS
  valueFrom:
    secretKeyRef:
      name: {{ include "shoal.clusterSecretName" . }}
      key: {{ if .Values.cluster.existingSecret }}{{ .Values.cluster.existingSecretPreviousKey }}{{ else }}cluster-secret-previous{{ end }}
{{- end }}
{{- end -}}

{{/* Previous join secrets as a YAML flow list of placeholders. */}}
{{- define "shoal.clusterPrevious" -}}
{{- if .Values.cluster.rotating }}["${SHOAL_CLUSTER_SECRET_PREVIOUS}"]{{ else }}[]{{ end -}}
{{- end -}}

{{/* The config init container: (dict "ctx" $ "component" "tracker" "env" (list of env yaml string)
[ "runAsUser" N ]). The rendered file is 0600 (it holds secrets), so it is
written as the user the component runs as: runAsUser when that container
sets one (the agent's root, without capabilities, cannot read another
user's 0600 file), else the pod's. */}}
{{- define "shoal.renderInit" -}}
- name: config
  image: {{ include "shoal.image" .ctx }}
  imagePullPolicy: {{ .ctx.Values.image.pullPolicy }}
  args: [config-render, --in, /etc/shoal/template/{{ .component }}.yml, --out, /run/shoal/{{ .component }}.yml]
  env:
{{ .env | indent 4 }}
  securityContext:
    {{- if hasKey . "runAsUser" }}
    runAsUser: {{ .runAsUser }}
    {{- end }}
    allowPrivilegeEscalation: false
    readOnlyRootFilesystem: true
    capabilities:
      drop: [ALL]
  volumeMounts:
    - name: template
      mountPath: /etc/shoal/template
      readOnly: true
    - name: config
      mountPath: /run/shoal
{{- end -}}

{{- define "shoal.configVolumes" -}}
- name: template
  configMap:
    name: {{ include "shoal.fullname" .ctx }}-{{ .component }}
- name: config
  emptyDir:
    medium: Memory
    sizeLimit: 1Mi
{{- end -}}

{{- define "shoal.checks" -}}
{{- $redis := or .Values.redis.addrs .Values.redis.bundled.enabled -}}
{{- if and .Values.tracker.enabled (gt (int .Values.tracker.replicas) 1) (not $redis) -}}
{{- fail "tracker.replicas > 1 needs Redis: set redis.addrs or redis.bundled.enabled" -}}
{{- end -}}
{{- if and .Values.preheat.enabled (gt (int .Values.preheat.replicas) 1) (not $redis) -}}
{{- fail "preheat.replicas > 1 needs Redis: set redis.addrs or redis.bundled.enabled" -}}
{{- end -}}
{{- if and .Values.registry.enabled (eq .Values.registry.storage.type "filesystem") (gt (int .Values.registry.replicas) 1) -}}
{{- fail "registry.replicas > 1 needs registry.storage.type s3 (a filesystem volume is ReadWriteOnce)" -}}
{{- end -}}
{{- if not (has .Values.registry.storage.type (list "filesystem" "s3")) -}}
{{- fail "registry.storage.type must be filesystem or s3" -}}
{{- end -}}
{{- if and .Values.registry.enabled (eq .Values.registry.storage.type "s3") (not .Values.registry.storage.s3.bucket) -}}
{{- fail "registry.storage.s3.bucket is required with storage type s3" -}}
{{- end -}}
{{- if and .Values.agent.enabled (not .Values.registry.enabled) (not .Values.agent.registries) -}}
{{- fail "agent.registries must name at least one registry when registry.enabled is false" -}}
{{- end -}}
{{- end -}}

{{/* "true" when the agents serve metrics for Prometheus on the node IP. */}}
{{- define "shoal.agentMetrics" -}}
{{- if and .Values.agent.enabled (or .Values.agent.metrics.enabled .Values.serviceMonitor.enabled) }}true{{ end -}}
{{- end -}}

{{/* --registry flags of containerd-hosts and node-cleanup: every registry
whose pulls the agents serve (one list, so the uninstall hook takes back
exactly what the init container wrote). */}}
{{- define "shoal.agentRegistryArgs" -}}
{{- if .Values.registry.enabled }}
- --registry={{ include "shoal.registryHost" . }}
{{- end }}
{{- range .Values.agent.registries }}
- --registry={{ .host }}{{ if and .url (ne .host "_default") }}={{ .url }}{{ end }}
{{- end }}
{{- end -}}
