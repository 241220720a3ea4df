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
