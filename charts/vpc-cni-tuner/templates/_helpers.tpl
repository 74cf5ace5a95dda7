{{/* The chart name. */}}
{{- define "vpc-cni-tuner.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The full name of the release's resources. */}}
{{- define "vpc-cni-tuner.fullname" -}}
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

{{- define "vpc-cni-tuner.selectorLabels" -}}
app.kubernetes.io/name: {{ include "vpc-cni-tuner.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "vpc-cni-tuner.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "vpc-cni-tuner.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "vpc-cni-tuner.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "vpc-cni-tuner.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Leader election is on with more than one replica, or when asked for. */}}
{{- define "vpc-cni-tuner.leaderElect" -}}
{{- if or .Values.leaderElection.enabled (gt (int .Values.replicaCount) 1) }}true{{- end }}
{{- end }}

{{- define "vpc-cni-tuner.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* A list of strings as CEL string literals: 'A', 'B'. */}}
{{- define "vpc-cni-tuner.quotedList" -}}
{{- $items := list -}}
{{- range . -}}{{- $items = append $items (printf "'%s'" .) -}}{{- end -}}
{{- join ", " $items -}}
{{- end -}}

{{- /*
metadata is kept whole: an ownerReference to a missing owner would have the garbage collector
delete the object (aws-node cluster-wide); a finalizer could block its deletion; labels and
annotations select and configure it. managedFields stays writable (server-side apply records its
own entry there), and the DaemonSet's `deprecated.daemonset.template.generation` annotation,
which the API server itself bumps on every template change.
*/ -}}
{{- define "vpc-cni-tuner.metadataUnchanged" }}
    - expression: "object.metadata.?ownerReferences == oldObject.metadata.?ownerReferences && object.metadata.?finalizers == oldObject.metadata.?finalizers"
      message: "vpc-cni-tuner may not change metadata.ownerReferences or metadata.finalizers"
    - expression: "object.metadata.?labels == oldObject.metadata.?labels"
      message: "vpc-cni-tuner may not change metadata.labels"
    - expression: "object.metadata.?annotations.orValue({}).all(k, k == 'deprecated.daemonset.template.generation' || (k in oldObject.metadata.?annotations.orValue({}) && object.metadata.annotations[k] == oldObject.metadata.annotations[k])) && oldObject.metadata.?annotations.orValue({}).all(k, k == 'deprecated.daemonset.template.generation' || k in object.metadata.?annotations.orValue({}))"
      message: "vpc-cni-tuner may not change metadata.annotations"
{{- end }}
