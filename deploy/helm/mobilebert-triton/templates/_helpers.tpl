{{- define "mobilebert-triton.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mobilebert-triton.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "mobilebert-triton.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mobilebert-triton.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "mobilebert-triton.labels" -}}
{{ include "mobilebert-triton.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The image of the selected flavour; the tag defaults to the chart's appVersion (the project version). */}}
{{- define "mobilebert-triton.image" -}}
{{- $image := ternary .Values.gpu.image .Values.image .Values.gpu.enabled -}}
{{- printf "%s:%s" $image.repository (default .Chart.AppVersion $image.tag) -}}
{{- end -}}

{{- define "mobilebert-triton.adminSecret" -}}
{{- default (printf "%s-admin" (include "mobilebert-triton.fullname" .)) .Values.adminKey.existingSecret -}}
{{- end -}}

{{/* Paths inside the pod. */}}
{{- define "mobilebert-triton.adminKeyDir" -}}/var/run/secrets/mobilebert-triton{{- end -}}
{{- define "mobilebert-triton.tlsDir" -}}/var/run/secrets/mobilebert-triton-tls{{- end -}}

{{/*
Container args. CPU image: its entry point is `python -m deploy serve`, so only serve's options. GPU image: stock
tritonserver, with the admin key restricting the same endpoint groups deploy/server.py restricts.
*/}}
{{- define "mobilebert-triton.args" -}}
{{- $v := .Values -}}
{{- if $v.gpu.enabled }}
- --model-repository={{ $v.modelRepository.path }}
- --model-config-name={{ $v.gpu.modelConfigName }}
- --http-port={{ $v.ports.http }}
- --grpc-port={{ $v.ports.grpc }}
- --metrics-port={{ $v.ports.metrics }}
- --strict-readiness=true
- --exit-on-error=true
- --exit-timeout-secs=30
- --log-verbose={{ $v.server.logVerbose }}
- --grpc-restricted-protocol=model-repository,shared-memory,trace,logging:admin-key=$(ADMIN_KEY)
- --http-restricted-api=model-repository,shared-memory,trace,logging:admin-key=$(ADMIN_KEY)
{{- if $v.tls.enabled }}
- --grpc-use-ssl=true
- --grpc-server-cert={{ include "mobilebert-triton.tlsDir" . }}/tls.crt
- --grpc-server-key={{ include "mobilebert-triton.tlsDir" . }}/tls.key
{{- if $v.tls.mutual }}
- --grpc-use-ssl-mutual=true
- --grpc-root-cert={{ include "mobilebert-triton.tlsDir" . }}/ca.crt
{{- end }}
{{- end }}
{{- else }}
- --repository={{ $v.modelRepository.path }}
- --address=0.0.0.0
- --http-port={{ $v.ports.http }}
- --grpc-port={{ $v.ports.grpc }}
- --metrics-port={{ $v.ports.metrics }}
- --admin-key-file={{ include "mobilebert-triton.adminKeyDir" . }}/{{ $v.adminKey.secretKey }}
- --log-file=/tmp/logs/tritonserver.log
- --ready-timeout={{ $v.server.readyTimeoutSeconds }}
{{- with $v.server.modelConfigName }}
- --model-config-name={{ . }}
{{- end }}
{{- if $v.tls.enabled }}
- --tls-cert={{ include "mobilebert-triton.tlsDir" . }}/tls.crt
- --tls-key={{ include "mobilebert-triton.tlsDir" . }}/tls.key
{{- if $v.tls.mutual }}
- --tls-client-ca={{ include "mobilebert-triton.tlsDir" . }}/ca.crt
{{- end }}
{{- end }}
{{- end }}
{{- range $v.server.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end -}}

{{/*
Readiness: the server's /v2/health/ready and every model the repository's build.json lists READY. On Triton 2.51
strict readiness counts only loaded models, so a model unloaded by a failure or the model-control API leaves
/v2/health/ready at 200; a pod that cannot serve one of its tasks must leave the Service's endpoints. Python's
standard library only (both images have python3); a repository without build.json is checked by the server path.
*/}}
{{- define "mobilebert-triton.readinessCommand" -}}
- python3
- -c
- |
  import json, os, sys, urllib.request
  port, repository = sys.argv[1], sys.argv[2]
  record = os.path.join(repository, "build.json")
  models = json.load(open(record))["models"] if os.path.exists(record) else []
  for path in ["/v2/health/ready"] + ["/v2/models/%s/ready" % m for m in models]:
      try:
          urllib.request.urlopen("http://127.0.0.1:%s%s" % (port, path), timeout=2)
      except Exception as exc:
          sys.exit("not ready: %s: %s" % (path, exc))
- {{ .Values.ports.http | quote }}
- {{ .Values.modelRepository.path | quote }}
{{- end -}}
