{{/* Whether the embedded Redis runs: asked for, and no redis.url given. */}}
{{- define "prsm.redisEmbedded" -}}
{{- if and .Values.redis.embedded.enabled (not .Values.redis.url) -}}true{{- end -}}
{{- end -}}
