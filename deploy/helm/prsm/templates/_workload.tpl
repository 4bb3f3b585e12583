{{/*
The pod template of one PRSM process: (dict "root" $root "component" "api" "track" "stable").
The API's pods carry their track (stable, or canary for istio.canary) in prsm.dev/track, and
their model group (`api`, or the name of one of modelGroups, given as "group") in
prsm.dev/model-group.
*/}}
{{- define "prsm.podTemplate" -}}
{{- $root := .root -}}
{{- $component := .component -}}
{{- $values := index $root.Values $component -}}
{{- $context := dict "root" $root "component" $component "track" (default "stable" .track) -}}
{{- $fullname := include "prsm.fullname" $root -}}
metadata:
  labels:
    {{- include "prsm.workloadSelectorLabels" $context | nindent 4 }}
    {{- if eq $component "api" }}
    prsm.dev/model-group: {{ if .group }}{{ .group.name }}{{ else }}api{{ end }}
    {{- end }}
    {{- with $values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    checksum/settings: {{ include (print $root.Template.BasePath "/configmaps.yaml") $root | sha256sum }}
    {{- if not $root.Values.auth.existingSecret }}
    checksum/secret: {{ toJson (list $root.Values.auth $root.Values.redis.password) | sha256sum }}
    {{- end }}
    {{- with $values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "prsm.serviceAccountName" $root }}
  # Only the gateway talks to the Kubernetes API (EndpointSlice discovery).
  automountServiceAccountToken: {{ eq $component "gateway" }}
  terminationGracePeriodSeconds: {{ include "prsm.terminationGrace" $context }}
  securityContext:
    {{- toYaml $root.Values.podSecurityContext | nindent 4 }}
  {{- with $root.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if $values.topologySpread.enabled }}
  topologySpreadConstraints:
    - maxSkew: {{ $values.topologySpread.maxSkew }}
      topologyKey: kubernetes.io/hostname
      whenUnsatisfiable: {{ $values.topologySpread.whenUnsatisfiable }}
      labelSelector:
        matchLabels:
          {{- include "prsm.workloadSelectorLabels" $context | nindent 10 }}
  {{- end }}
  {{- with $values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: {{ $component }}
      image: {{ include "prsm.image" $context }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      {{- if eq $component "api" }}
      args: ["serve", "--workers", "{{ $values.workers }}"]
      {{- else if eq $component "gateway" }}
      args: ["gateway", "--config", "/etc/prsm/gateway.yaml"]
      {{- else }}
      args: ["worker"]
      {{- end }}
      env:
        - name: PRSM_CONFIG
          value: /etc/prsm/prsm.yaml
        - name: PRSM_BASE_URL
          value: {{ include "prsm.apiUrl" $root }}
        {{- with include "prsm.redisUrl" $root }}
        - name: PRSM_REDIS_URL
          value: {{ . | quote }}
        - name: PRSM_REDIS_PASSWORD
          valueFrom:
            secretKeyRef: {name: {{ include "prsm.secretName" $root }}, key: redis-password, optional: true}
        - name: PRSM_REDIS_SENTINEL_PASSWORD
          valueFrom:
            secretKeyRef: {name: {{ include "prsm.secretName" $root }}, key: redis-sentinel-password, optional: true}
        {{- end }}
        {{- if eq $component "api" }}
        - name: PRSM_API_KEYS
          valueFrom:
            secretKeyRef: {name: {{ include "prsm.secretName" $root }}, key: api-keys}
        # The workers' key: only it may show a job's token and act for the job's submitter.
        - name: PRSM_API_KEY
          valueFrom:
            secretKeyRef: {name: {{ include "prsm.secretName" $root }}, key: worker-api-key}
        - name: PRSM_ENGINE__OPENAI_API_KEY
          valueFrom:
            secretKeyRef: {name: {{ include "prsm.secretName" $root }}, key: openai-api-key, optional: true}
        {{- with .group }}
        # This group's models, instead of settings.models.
        - name: PRSM_MODELS
          value: {{ toJson .models | quote }}
        {{- end }}
        {{- if not (dig "engine" "threads" nil $root.Values.settings) }}
        - name: PRSM_ENGINE__THREADS
          value: {{ include "prsm.engineThreads" $root | quote }}
        {{- end }}
        {{- else if eq $component "worker" }}
        - name: PRSM_API_KEY
          valueFrom:
            secretKeyRef: {name: {{ include "prsm.secretName" $root }}, key: worker-api-key}
        - name: PRSM_JOBS__CALLBACK_SECRET
          valueFrom:
            secretKeyRef: {name: {{ include "prsm.secretName" $root }}, key: callback-secret}
        - name: PRSM_JOBS__METRICS_HOST
          value: 0.0.0.0
        {{- else if include "prsm.gatewayRoutesByModel" $root }}
        # Asks the pools' /v1/models for the routes by model (the workers' key: it may read).
        - name: PRSM_API_KEY
          valueFrom:
            secretKeyRef: {name: {{ include "prsm.secretName" $root }}, key: worker-api-key}
        {{- end }}
        {{- with $values.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      ports:
        {{- if eq $component "api" }}
        - {name: http, containerPort: 8000, protocol: TCP}
        {{- else if eq $component "gateway" }}
        - {name: http, containerPort: 3000, protocol: TCP}
        {{- else }}
        - {name: metrics, containerPort: 9101, protocol: TCP}
        {{- end }}
      {{- if eq $component "worker" }}
      # The worker's probes sit beside its metrics: ready while Redis answers and its queues
      # are consumed; alive while the process answers (a Redis outage restarts no worker).
      readinessProbe:
        httpGet: {path: /ready, port: metrics}
        periodSeconds: 10
        timeoutSeconds: 5
        failureThreshold: 3
      livenessProbe:
        httpGet: {path: /health, port: metrics}
        periodSeconds: 20
        timeoutSeconds: 5
        failureThreshold: 3
      {{- else }}
      {{- if eq $component "api" }}
      # Model loading: /started is 200 once the engine is loaded, whatever Redis does.
      startupProbe:
        httpGet: {path: /started, port: http}
        periodSeconds: {{ $values.startupProbe.periodSeconds }}
        failureThreshold: {{ $values.startupProbe.failureThreshold }}
        timeoutSeconds: 3
      {{- end }}
      readinessProbe:
        httpGet: {path: /ready, port: http}
        periodSeconds: 5
        timeoutSeconds: 3
        failureThreshold: 2
      livenessProbe:
        httpGet: {path: /health, port: http}
        periodSeconds: 10
        timeoutSeconds: 5
        failureThreshold: 3
      {{- end }}
      {{- if $values.preStopSeconds }}
      lifecycle:
        preStop:
          exec:
            command: ["sleep", "{{ $values.preStopSeconds }}"]
      {{- end }}
      resources:
        {{- toYaml (dig "resources" $values.resources (default dict .group)) | nindent 8 }}
      securityContext:
        {{- toYaml $root.Values.securityContext | nindent 8 }}
      volumeMounts:
        - {name: config, mountPath: /etc/prsm, readOnly: true}
        - {name: tmp, mountPath: /tmp}
  volumes:
    - name: config
      projected:
        sources:
          - configMap: {name: {{ $fullname }}-settings}
          {{- if eq $component "gateway" }}
          - configMap: {name: {{ $fullname }}-gateway}
          {{- end }}
    # The one writable path: run state and, with several server processes, their metrics.
    - name: tmp
      emptyDir: {sizeLimit: 64Mi}
{{- end -}}
