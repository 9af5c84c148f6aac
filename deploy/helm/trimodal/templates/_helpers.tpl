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

{{/* The models image (modelRepository.source=image). */}}
{{- define "trimodal.models.image" -}}
{{- $i := .Values.modelRepository.image -}}
{{- printf "%s:%s" (required "modelRepository.image.repository is required with modelRepository.source=image" $i.repository) (required "modelRepository.image.tag is required with modelRepository.source=image" ($i.tag | toString)) -}}
{{- end -}}

{{/* The service account pods run as. */}}
{{- define "trimodal.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- .Values.serviceAccount.name | default (include "trimodal.fullname" .) -}}
{{- else -}}
{{- .Values.serviceAccount.name | default "default" -}}
{{- end -}}
{{- end -}}

{{/*
Where the Triton pod's /models comes from: "copy" = a pod-local emptyDir filled by init containers (source image,
or a claim copied so that plans can be built per pod); "claim" = the claim itself, read-only; "none" = object store.
*/}}
{{- define "trimodal.modelsVolume" -}}
{{- $src := .Values.modelRepository.source -}}
{{- if eq $src "image" -}}copy
{{- else if and (eq $src "pvc") (eq .Values.engineBuild.mode "initContainer") -}}copy
{{- else if eq $src "pvc" -}}claim
{{- else -}}none
{{- end -}}
{{- end -}}

{{/* Sanity checks on values that would otherwise fail at run time. */}}
{{- define "trimodal.validate" -}}
{{- $src := .Values.modelRepository.source -}}
{{- $mode := .Values.engineBuild.mode -}}
{{- $pvc := .Values.modelRepository.pvc -}}
{{- if not (has $src (list "image" "pvc" "objectStore")) -}}
{{- fail "modelRepository.source must be image, pvc or objectStore" -}}
{{- end -}}
{{- if not (has $mode (list "initContainer" "job" "none")) -}}
{{- fail "engineBuild.mode must be initContainer, job or none" -}}
{{- end -}}
{{- if and (eq $src "objectStore") (ne $mode "none") -}}
{{- fail "modelRepository.source=objectStore serves plans already in the bucket: set engineBuild.mode=none (build them with `trimodal build-engines` per GPU architecture and upload)" -}}
{{- end -}}
{{- if eq $src "pvc" -}}
{{- if not $pvc.existingClaim -}}
{{- fail "modelRepository.pvc.existingClaim is required with modelRepository.source=pvc: the chart never creates an empty claim (a new claim holds no repository to serve or build from). Fill one first (deploy/KUBERNETES.md, section Fill the model repository) or use modelRepository.source=image" -}}
{{- end -}}
{{- if not (or (has "ReadOnlyMany" $pvc.accessModes) (has "ReadWriteMany" $pvc.accessModes)) -}}
{{- fail (printf "modelRepository.pvc.accessModes %v: Triton pods on several nodes (replicas, autoscaling, the rollout's surge pod) cannot share a single-node volume; a ReadWriteOnce block volume attaches to one node and every other pod fails with a Multi-Attach error. Use a ReadOnlyMany or ReadWriteMany claim, or modelRepository.source=image" $pvc.accessModes) -}}
{{- end -}}
{{- end -}}
{{- if eq $mode "job" -}}
{{- if ne $src "pvc" -}}
{{- fail "engineBuild.mode=job builds into a shared claim: it needs modelRepository.source=pvc (with source=image, use engineBuild.mode=initContainer)" -}}
{{- end -}}
{{- if not (has "ReadWriteMany" $pvc.accessModes) -}}
{{- fail "engineBuild.mode=job writes plans into the claim while Triton pods on other nodes read it: modelRepository.pvc.accessModes must include ReadWriteMany" -}}
{{- end -}}
{{- end -}}
{{- if not (has .Values.autoscaling.mode (list "hpa" "keda" "none")) -}}
{{- fail "autoscaling.mode must be hpa, keda or none" -}}
{{- end -}}
{{- if .Values.envoy.enabled -}}
{{- if ge (int .Values.envoy.drainSeconds) (int .Values.triton.preStopSleepSeconds) -}}
{{- fail (printf "envoy.drainSeconds (%v) must be shorter than triton.preStopSleepSeconds (%v): when both go at once, Envoy must finish draining before Triton stops taking requests" .Values.envoy.drainSeconds .Values.triton.preStopSleepSeconds) -}}
{{- end -}}
{{- if gt (int .Values.envoy.drainMinSeconds) (int .Values.envoy.drainSeconds) -}}
{{- fail "envoy.drainMinSeconds must not exceed envoy.drainSeconds" -}}
{{- end -}}
{{- if lt (int .Values.envoy.terminationGracePeriodSeconds) (int (add .Values.envoy.drainSeconds 5)) -}}
{{- fail (printf "envoy.terminationGracePeriodSeconds (%v) must be at least envoy.drainSeconds + 5 = %v, or Kubernetes kills Envoy while it drains" .Values.envoy.terminationGracePeriodSeconds (add .Values.envoy.drainSeconds 5)) -}}
{{- end -}}
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
