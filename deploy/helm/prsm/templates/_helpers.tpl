{{/* Names and labels. */}}
{{- define "prsm.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "prsm.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "prsm.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "prsm.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "prsm.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "prsm.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "api"). */}}
{{- define "prsm.selectorLabels" -}}
app.kubernetes.io/name: {{ include "prsm.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* What a workload selects its pods by: the component's labels and, for the API, the pods'
track (stable, or canary: the Deployment istio.canary adds). */}}
{{- define "prsm.workloadSelectorLabels" -}}
{{ include "prsm.selectorLabels" . }}
{{- if eq .component "api" }}
prsm.dev/track: {{ .track }}
{{- end }}
{{- end -}}

{{- define "prsm.componentLabels" -}}
{{ include "prsm.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* The image; the canary's tag when istio.canary gives one: (dict "root" $ "track" "canary"). */}}
{{- define "prsm.image" -}}
{{- $root := default . .root -}}
{{- $tag := default $root.Chart.AppVersion $root.Values.image.tag -}}
{{- if and (eq (default "" .track) "canary") $root.Values.istio.canary.tag -}}
{{- $tag = $root.Values.istio.canary.tag -}}
{{- end -}}
{{- printf "%s:%s" $root.Values.image.repository $tag -}}
{{- end -}}

{{- define "prsm.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "prsm.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "prsm.secretName" -}}
{{- default (printf "%s-secrets" (include "prsm.fullname" .)) .Values.auth.existingSecret -}}
{{- end -}}

{{/* Redis: the URL without its password ("" when there is none). */}}
{{- define "prsm.redisUrl" -}}
{{- if include "prsm.redisEmbedded" . -}}
{{- printf "redis://%s-redis:6379/0" (include "prsm.fullname" .) -}}
{{- else -}}
{{- .Values.redis.url -}}
{{- end -}}
{{- end -}}

{{- define "prsm.apiUrl" -}}
{{- printf "http://%s-api:%v" (include "prsm.fullname" .) .Values.api.service.port -}}
{{- end -}}

{{/*
gateway.yaml as JSON: the given config, with the chart's defaults for what it leaves out.
The default routes are `prsm gateway`'s own default (a test compares them).
*/}}
{{- define "prsm.gatewayConfig" -}}
{{- $config := deepCopy .Values.gateway.config -}}
{{- if not (hasKey $config "pools") -}}
{{- $discovery := dict "kind" "kubernetes" "service" (printf "%s-api" (include "prsm.fullname" .)) -}}
{{- $engine := dig "engine" dict .Values.settings -}}
{{- $balancing := dict "balancer" .Values.gateway.balancer -}}
{{- if eq .Values.gateway.balancer "prefix_affinity" -}}
{{- $cells := mul (dig "max_batch" 8 $engine) (dig "context_size" 2048 $engine) -}}
{{- $_ := set $balancing "affinity" (dict "cache_tokens" $cells) -}}
{{- end -}}
{{- $pools := dict "api" (merge (dict "discovery" $discovery) $balancing) -}}
{{- range .Values.modelGroups -}}
{{- $group := dict "kind" "kubernetes" "service" (printf "%s-api-%s" (include "prsm.fullname" $) .name) -}}
{{- $_ := set $pools (printf "models-%s" .name) (merge (dict "discovery" $group) $balancing) -}}
{{- end -}}
{{- $_ := set $config "pools" $pools -}}
{{- end -}}
{{- if not (hasKey $config "routes") -}}
{{- $retries := dict "attempts" 3 "per_try_timeout" 120 -}}
{{- $limit := dict "limit" "1000/15 minutes" "key" "ip" "budget" "per-client" -}}
{{- $ai := dict "prefix" "/api/ai" "rewrite" "/api/v1" "pool" "api" "retries" $retries "timeout" 300 "rate_limit" $limit -}}
{{- $v1 := dict "prefix" "/api/v1" "pool" "api" "retries" $retries "timeout" 300 "rate_limit" $limit -}}
{{- $openai := dict "prefix" "/v1" "pool" "api" "retries" $retries "timeout" 300 "rate_limit" $limit -}}
{{- if .Values.modelGroups -}}
{{- $_ := set $openai "models" dict -}}
{{- end -}}
{{- $_ := set $config "routes" (list $ai $v1 $openai) -}}
{{- end -}}
{{- if and (not (hasKey $config "rate_limit_storage")) (include "prsm.redisUrl" .) -}}
{{- $_ := set $config "rate_limit_storage" "redis" -}}
{{- end -}}
{{- tpl (toYaml $config) . | fromYaml | toJson -}}
{{- end -}}

{{/* "true" when a gateway route routes by model and learns the pools' models (it needs a key). */}}
{{- define "prsm.gatewayRoutesByModel" -}}
{{- range (include "prsm.gatewayConfig" . | fromJson).routes -}}
{{- if and (hasKey . "models") (ne (toString (dig "learn" true .models)) "false") -}}true{{- end -}}
{{- end -}}
{{- end -}}

{{/*
terminationGracePeriodSeconds of one component, from the drain it does on SIGTERM: the preStop
sleep, the drain's own bound, and uvicorn's 10 s to close connections with a margin of 5.
*/}}
{{- define "prsm.terminationGrace" -}}
{{- $root := .root -}}
{{- $settings := $root.Values.settings -}}
{{- $preStop := int (index $root.Values .component).preStopSeconds -}}
{{- if eq .component "api" -}}
{{- $bound := dig "server" "drain_timeout_seconds" 150 $settings -}}
{{- add $preStop (ceil $bound) 15 -}}
{{- else if eq .component "gateway" -}}
{{- $longest := 0 -}}
{{- range (include "prsm.gatewayConfig" $root | fromJson).routes -}}
{{- $longest = max $longest (ceil (default 120 .timeout)) -}}
{{- end -}}
{{- $grace := dig "gateway" "drain_seconds" 5 $settings -}}
{{- add $preStop (ceil $grace) $longest 1 15 -}}
{{- else -}}
{{- $grace := dig "jobs" "shutdown_grace_seconds" 30 $settings -}}
{{- add $preStop (ceil $grace) 15 -}}
{{- end -}}
{{- end -}}

{{/* CPU threads per model: settings.engine.threads, else the API's CPU limit shared by its
server processes (at least 1), so that a pod never runs more threads than it has CPUs. */}}
{{- define "prsm.engineThreads" -}}
{{- $cpu := toString (dig "limits" "cpu" "1" .Values.api.resources) -}}
{{- $millicores := hasSuffix "m" $cpu | ternary (trimSuffix "m" $cpu | int) (mulf $cpu 1000 | int) -}}
{{- max 1 (div $millicores (mul 1000 .Values.api.workers)) -}}
{{- end -}}

{{/* PRSM's service name: the `service` label of its metrics. */}}
{{- define "prsm.serviceName" -}}
{{- default "prsm-api" .Values.settings.service_name -}}
{{- end -}}

{{/* The analysis queries, on the series of the pods under analysis (its two args). */}}
{{- define "prsm.analysis.selector" -}}
service="{{ "{{" }}args.service{{ "}}" }}", rollouts_pod_template_hash="{{ "{{" }}args.pod-template-hash{{ "}}" }}"
{{- end -}}

{{- define "prsm.analysis.success-rate" -}}
{{- $selector := include "prsm.analysis.selector" . -}}
sum(rate(prsm_queries_total{ {{- $selector }}, status!~"5.."}[{{ .Values.rollout.analysis.window }}])) / sum(rate(prsm_queries_total{ {{- $selector -}} }[{{ .Values.rollout.analysis.window }}]))
{{- end -}}

{{- define "prsm.analysis.latency" -}}
histogram_quantile(0.99, sum by (le) (rate(prsm_query_duration_seconds_bucket{ {{- include "prsm.analysis.selector" . -}} }[{{ .Values.rollout.analysis.window }}])))
{{- end -}}
