{{/* Chart name, truncated to the DNS label limit. */}}
{{- define "trimodal.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Fully qualified app name: the release name, or release-chart when they differ. */}}
{{- define "trimodal.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "trimodal.triton.fullname" -}}{{ include "trimodal.fullname" . | trunc 56 | trimSuffix "-" }}-triton{{- end -}}
{{- define "trimodal.envoy.fullname" -}}{{ include "trimodal.fullname" . | trunc 57 | trimSuffix "-" }}-envoy{{- end -}}
{{- define "trimodal.headless" -}}{{ include "trimodal.fullname" . | trunc 47 | trimSuffix "-" }}-triton-headless{{- end -}}

{{- define "trimodal.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "trimodal.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ include "trimodal.release" . | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: trimodal
{{- end -}}

{{- define "trimodal.selectorLabels" -}}
app.kubernetes.io/name: {{ include "trimodal.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "trimodal.triton.selectorLabels" -}}
{{ include "trimodal.selectorLabels" . }}
app.kubernetes.io/component: triton
{{- end -}}

{{- define "trimodal.envoy.selectorLabels" -}}
{{ include "trimodal.selectorLabels" . }}
app.kubernetes.io/component: envoy
{{- end -}}

{{/* The pinned NGC release (one variable, as TRITON_RELEASE in docker compose). */}}
{{- define "trimodal.release" -}}{{ .Values.release | default .Chart.AppVersion }}{{- end -}}

{{- define "trimodal.triton.image" -}}
{{- $tag := .Values.triton.image.tag | default (include "trimodal.release" .) -}}
{{- printf "%s:%s" .Values.triton.image.repository $tag -}}
{{- end -}}

{{- define "trimodal.engineBuild.image" -}}
{{- $tag := .Values.engineBuild.image.tag | default (include "trimodal.release" .) -}}
{{- printf "%s:%s" .Values.engineBuild.image.repository $tag -}}
{{- end -}}

{{/* Name of the Secret holding the restricted-API key. */}}
{{- define "trimodal.adminSecretName" -}}
{{- .Values.security.restrictedApis.existingSecret | default (printf "%s-admin-key" (include "trimodal.fullname" .)) -}}
{{- end -}}

{{/* Where Triton reads the model repository from. */}}
{{- define "trimodal.modelRepositoryPath" -}}
{{- if eq .Values.modelRepository.source "objectStore" -}}
{{- required "modelRepository.objectStore.url is required when modelRepository.source=objectStore" .Values.modelRepository.objectStore.url -}}
{{- else -}}
/models
{{- end -}}
{{- end -}}

{{/* The GPU resource request/limit for one pod. */}}
{{- define "trimodal.gpuResources" -}}
{{- $res := deepCopy .Values.triton.resources -}}
{{- $gpu := dict .Values.gpu.resourceName (.Values.gpu.perPod | toString) -}}
{{- $_ := set $res "limits" (merge (deepCopy (default dict $res.limits)) $gpu) -}}
{{- toYaml $res -}}
{{- end -}}

{{/* The metrics the autoscaler scales on, as a list of {key, name, target}; fails on unknown keys. */}}
{{- define "trimodal.scaleOn" -}}
{{- $out := list -}}
{{- range .Values.autoscaling.scaleOn -}}
{{- $rule := index $.Values.autoscaling.metrics . -}}
{{- if not $rule -}}{{- fail (printf "autoscaling.scaleOn: %s is not one of autoscaling.metrics" .) -}}{{- end -}}
{{- $out = append $out (dict "key" . "name" $rule.name "target" $rule.target) -}}
{{- end -}}
{{- if not $out -}}{{- fail "autoscaling.scaleOn must name at least one of autoscaling.metrics" -}}{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/* Sanity checks on values that would otherwise fail at run time. */}}
{{- define "trimodal.validate" -}}
{{- if not (has .Values.modelRepository.source (list "pvc" "objectStore")) -}}
{{- fail "modelRepository.source must be pvc or objectStore" -}}
{{- end -}}
{{- if not (has .Values.engineBuild.mode (list "initContainer" "job" "none")) -}}
{{- fail "engineBuild.mode must be initContainer, job or none" -}}
{{- end -}}
{{- if and (eq .Values.modelRepository.source "objectStore") (ne .Values.engineBuild.mode "none") -}}
{{- fail "modelRepository.source=objectStore serves plans already in the bucket: set engineBuild.mode=none (build them with `trimodal build --target gpu` per GPU architecture and upload)" -}}
{{- end -}}
{{- if not (has .Values.autoscaling.mode (list "hpa" "keda" "none")) -}}
{{- fail "autoscaling.mode must be hpa, keda or none" -}}
{{- end -}}
{{- $minGrace := add .Values.triton.exitTimeoutSeconds .Values.triton.preStopSleepSeconds 5 -}}
{{- if lt (int .Values.triton.terminationGracePeriodSeconds) (int $minGrace) -}}
{{- fail (printf "triton.terminationGracePeriodSeconds (%v) must be at least preStopSleepSeconds + exitTimeoutSeconds + 5 = %v, or Kubernetes kills Triton while it drains" .Values.triton.terminationGracePeriodSeconds $minGrace) -}}
{{- end -}}
{{- end -}}

{{/* "500m" -> "0.5", "16" -> "16": KEDA thresholds are decimals, HPA targets are quantities. */}}
{{- define "trimodal.quantityToDecimal" -}}
{{- $q := toString . -}}
{{- if hasSuffix "m" $q -}}
{{- divf (trimSuffix "m" $q | float64) 1000.0 -}}
{{- else -}}
{{- $q -}}
{{- end -}}
{{- end -}}
