{{/* Names, labels and the image shared by every template. */}}

{{/*
fullname: the release name when it contains the chart name, else <release>-<chart>; at most 40 characters so that
<fullname>-webhook-profiles and the Service name stay within Kubernetes' 63-character limits.
*/}}
{{- define "burstflow.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Labels of the kustomize base's objects: its `app.kubernetes.io/part-of` plus Helm's usual ones. */}}
{{- define "burstflow.labels" -}}
app.kubernetes.io/part-of: burstflow
{{ include "burstflow.helmLabels" . }}
{{- end -}}

{{/* Helm's usual labels, alone on what the kustomize overlays add (the Secret, the cert-manager objects). */}}
{{- define "burstflow.helmLabels" -}}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/*
Selector labels of a service's pods: `app.kubernetes.io/name` as in the kustomize base (dashboards and PodMonitors
select on it), plus the release, so that two releases in one namespace never select each other's pods.
Call with (dict "root" $ "service" "webhook").
*/}}
{{- define "burstflow.selectorLabels" -}}
app.kubernetes.io/name: burstflow-{{ .service }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{- define "burstflow.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* The webhook Service's DNS names (what `burstflow certs` and the cert-manager overlay issue), plus extras. */}}
{{- define "burstflow.webhook.dnsNames" -}}
{{- $service := printf "%s-webhook" (include "burstflow.fullname" .) -}}
{{- $names := list $service (printf "%s.%s" $service .Release.Namespace) (printf "%s.%s.svc" $service .Release.Namespace) (printf "%s.%s.svc.cluster.local" $service .Release.Namespace) -}}
{{- concat $names .Values.webhook.tls.dnsNames | toJson -}}
{{- end -}}

{{/* A PodDisruptionBudget that would block every drain is a mistake: say so instead of rendering it. */}}
{{- define "burstflow.checkBudget" -}}
{{- $values := index .root.Values .service -}}
{{- if and $values.podDisruptionBudget.enabled (ge (int $values.podDisruptionBudget.minAvailable) (int $values.replicas)) -}}
{{- fail (printf "%s.podDisruptionBudget.minAvailable (%d) must be below %s.replicas (%d), or no node running a %s pod could ever be drained; lower it or set %s.podDisruptionBudget.enabled=false" .service (int $values.podDisruptionBudget.minAvailable) .service (int $values.replicas) .service .service) -}}
{{- end -}}
{{- end -}}

{{/*
A service's container env: the chart's own variables (`own`, a YAML list rendered by the caller), then the user's
<service>.env, appended in order (so a user's value may refer to the chart's as $(POD_NAME)). A name the chart sets,
or may set (`reserved`: the shard variables, set only when sharded), stops the render naming the entry and the value
to use instead: those variables carry the chart's structure (the shard a Deployment runs, the ports its probes and
Service use, the certificate mount, each replica's Lease identity), and a duplicate name in env is two entries whose
last wins in the container while Helm's and kubectl's patches merge env by name, dropping one on the next upgrade.
A name twice in <service>.env and an entry with both value and valueFrom (which the API server refuses) stop it too.
Call with (dict "root" $ "service" "cron" "own" (include ...) "reserved" (list ...)).
*/}}
{{- define "burstflow.env" -}}
{{- $service := .service -}}
{{- $prefix := printf "BURSTFLOW_%s_" (upper $service) -}}
{{- $advice := dict
  (printf "%sLOG_FORMAT" $prefix) (printf "use %s.logFormat" $service)
  "BURSTFLOW_CRON_SHARDS" "use cron.shards: every shard's Deployment is told the count and reads its own index from its pod label"
  "BURSTFLOW_CRON_SHARD" "use cron.shards: every shard's Deployment is told the count and reads its own index from its pod label"
  "BURSTFLOW_CRON_LEASE_NAME" "use fullnameOverride: the Lease is named after the release, so that two releases never share one"
  (printf "%sPORT" $prefix) "the container port its probes and Service use"
  (printf "%sMETRICS_PORT" $prefix) (printf "the container port its PodMonitor scrapes%s" (ternary " and its probes use" "" (eq $service "cron")))
  "BURSTFLOW_WEBHOOK_CERT_FILE" "where the webhook's TLS Secret is mounted"
  "BURSTFLOW_WEBHOOK_KEY_FILE" "where the webhook's TLS Secret is mounted"
  "POD_NAME" "each replica's Lease identity, from the downward API"
  "POD_NAMESPACE" "the namespace of the Lease, from the downward API"
-}}
{{- $chart := dict -}}
{{- range .reserved }}{{ $_ := set $chart . true }}{{ end -}}
{{- range fromYamlArray .own }}{{ $_ := set $chart .name true }}{{ end -}}
{{- $seen := dict -}}
{{- range $i, $var := (index .root.Values $service).env -}}
{{- $where := printf "%s.env[%d]" $service $i -}}
{{- if hasKey $chart $var.name -}}
{{- fail (printf "%s: %s is set by the chart; %s" $where $var.name (get $advice $var.name | default "it cannot be overridden")) -}}
{{- end -}}
{{- if hasKey $seen $var.name -}}
{{- fail (printf "%s: %s is already set by %s.env[%d]" $where $var.name $service (get $seen $var.name)) -}}
{{- end -}}
{{- if and (hasKey $var "value") (hasKey $var "valueFrom") -}}
{{- fail (printf "%s: %s has both value and valueFrom; set one" $where $var.name) -}}
{{- end -}}
{{- $_ := set $seen $var.name $i -}}
{{- end -}}
{{ .own }}
{{- with (index .root.Values $service).env }}
{{ toYaml . }}
{{- end }}
{{- end -}}
